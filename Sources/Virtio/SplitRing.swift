/// The split virtqueue's vocabulary (virtio 1.x §2.7): its memory layout, its descriptors and its
/// free-running 16-bit indices, as types that compile to the same loads and stores as raw
/// offsets would (everything here is `@inline(__always)` over integers).

/// Byte layout of a split ring of `size` entries.
public enum SplitRingLayout {
    /// struct virtq_desc: addr u64, len u32, flags u16, next u16.
    public static let descriptorSize = 16
    /// struct virtq_avail: flags u16, idx u16, ring[size] u16, used_event u16.
    public static let availFlagsOffset = 0
    public static let availIndexOffset = 2
    public static let availRingOffset = 4
    /// struct virtq_used: flags u16, idx u16, ring[size] {id u32, len u32}, avail_event u16.
    public static let usedFlagsOffset = 0
    public static let usedIndexOffset = 2
    public static let usedRingOffset = 4
    public static let usedElementSize = 8
    /// Required alignments of the three parts (virtio 1.x §2.7).
    public static let descriptorTableAlignment: UInt64 = 16
    public static let availAlignment: UInt64 = 2
    public static let usedAlignment: UInt64 = 4
    /// VRING_AVAIL_F_NO_INTERRUPT and VRING_USED_F_NO_NOTIFY.
    public static let availNoInterrupt: UInt16 = 1
    public static let usedNoNotify: UInt16 = 1

    public static func descriptorTableBytes(_ size: Int) -> Int { descriptorSize * size }
    /// Including used_event, so EVENT_IDX accesses are always in bounds.
    public static func availBytes(_ size: Int) -> Int { availRingOffset + 2 * size + 2 }
    /// Including avail_event.
    public static func usedBytes(_ size: Int) -> Int { usedRingOffset + usedElementSize * size + 2 }
    /// Offset of used_event (after the avail ring) and avail_event (after the used ring).
    public static func usedEventOffset(_ size: Int) -> Int { availRingOffset + 2 * size }
    public static func availEventOffset(_ size: Int) -> Int { usedRingOffset + usedElementSize * size }

    /// The checks that need no memory: a power-of-two size within the maximum, and each part's
    /// alignment. `Virtqueue.attach` then checks that each part lies inside guest memory.
    public static func check(size: UInt32, addresses a: RingAddresses) throws(RingSetupError) {
        guard size >= 1, size <= UInt32(Virtqueue.maxSize), size & (size - 1) == 0 else { throw .badSize(size) }
        guard a.descriptorTable.value % descriptorTableAlignment == 0 else { throw .misaligned("descriptor table") }
        guard a.availRing.value % availAlignment == 0 else { throw .misaligned("avail ring") }
        guard a.usedRing.value % usedAlignment == 0 else { throw .misaligned("used ring") }
    }
}

/// VIRTQ_DESC_F_*.
public struct DescriptorFlags: OptionSet, Sendable {
    public let rawValue: UInt16
    @inline(__always) public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let next = DescriptorFlags(rawValue: 1)
    public static let write = DescriptorFlags(rawValue: 2)
    public static let indirect = DescriptorFlags(rawValue: 4)
}

/// What both ring layouts' descriptors say about a buffer, once read.
public protocol BufferDescriptor {
    var address: GuestPhysicalAddress { get }
    var length: UInt32 { get }
    var flags: DescriptorFlags { get }
}

extension BufferDescriptor {
    public var hasNext: Bool { @inline(__always) get { flags.contains(.next) } }
    public var isWriteOnly: Bool { @inline(__always) get { flags.contains(.write) } }
    public var isIndirect: Bool { @inline(__always) get { flags.contains(.indirect) } }
}

/// One descriptor, read once from guest memory: the guest may rewrite it while we look, so every
/// decision is made on this copy.
public struct Descriptor: BufferDescriptor, Sendable {
    public let address: GuestPhysicalAddress
    public let length: UInt32
    public let flags: DescriptorFlags
    public let next: UInt16

    /// Reads the descriptor at `p`. Unaligned loads: an indirect table may sit at any guest
    /// address. Invariant: `p` points at `SplitRingLayout.descriptorSize` bytes inside a mapped
    /// region (a table translated with its full length).
    @inline(__always)
    public init(at p: UnsafeRawPointer) {
        address = GuestPhysicalAddress(UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)))
        length = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        flags = DescriptorFlags(rawValue: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt16.self)))
        next = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
    }
}

/// A free-running 16-bit ring index (avail and used indices wrap at 65536, not at the ring size).
public struct RingIndex: Equatable, Sendable, CustomStringConvertible {
    public var value: UInt16
    @inline(__always) public init(_ value: UInt16) { self.value = value }

    /// How many entries `self` is ahead of `earlier` (0...65535, modulo 2^16).
    @inline(__always)
    public func distance(from earlier: RingIndex) -> Int { Int(value &- earlier.value) }

    /// True when `self` is at or after `other` in the window of half the index space; ring
    /// indices never run more than a ring (≤ 32768) apart, so this orders them.
    @inline(__always)
    public func isAtOrAfter(_ other: RingIndex) -> Bool { value &- other.value < 0x8000 }

    @inline(__always)
    public func advanced(by n: Int) -> RingIndex { RingIndex(value &+ UInt16(truncatingIfNeeded: n)) }

    /// The ring slot this index names, for a ring whose size is `mask + 1` (a power of two).
    @inline(__always)
    public func slot(_ mask: Int) -> Int { Int(value) & mask }

    public var description: String { "\(value)" }
}

/// Ring addresses as the front-end gives them (its own virtual addresses).
public struct RingAddresses: Equatable, Sendable {
    public var descriptorTable: FrontEndAddress
    public var availRing: FrontEndAddress
    public var usedRing: FrontEndAddress
    public init(descriptorTable: FrontEndAddress, availRing: FrontEndAddress, usedRing: FrontEndAddress) {
        self.descriptorTable = descriptorTable
        self.availRing = availRing
        self.usedRing = usedRing
    }
}

public enum RingSetupError: Error, Equatable, CustomStringConvertible {
    case badSize(UInt32)
    case badPackedSize(UInt32)
    case misaligned(String)
    case notInGuestMemory(String)

    public var description: String {
        switch self {
        case .badSize(let n): "queue size \(n) is not a power of two in 1...32768"
        case .badPackedSize(let n): "packed queue size \(n) is not in 1...32768"
        case .misaligned(let what): "\(what) is misaligned"
        case .notInGuestMemory(let what): "\(what) is not inside guest memory"
        }
    }
}
