/// The packed virtqueue's vocabulary (virtio 1.1 §2.8): one ring of descriptors the driver makes
/// available and the device marks used in place, and two event suppression areas.

public enum PackedRingLayout {
    /// struct pvirtq_desc: addr u64, len u32, id u16, flags u16.
    public static let descriptorSize = 16
    public static let lengthOffset = 8
    public static let idOffset = 12
    public static let flagsOffset = 14
    /// VIRTQ_DESC_F_AVAIL and VIRTQ_DESC_F_USED.
    public static let availFlag: UInt16 = 1 << 7
    public static let usedFlag: UInt16 = 1 << 15
    /// struct pvirtq_event_suppress: desc_event_off_wrap u16, desc_event_flags u16.
    public static let eventAreaBytes = 4
    public static let eventOffWrapOffset = 0
    public static let eventFlagsOffset = 2
    /// RING_EVENT_FLAGS_ENABLE, _DISABLE, _DESC.
    public static let eventEnable: UInt16 = 0
    public static let eventDisable: UInt16 = 1
    public static let eventDescriptor: UInt16 = 2
    /// A position (slot and wrap counter) as SET/GET_VRING_BASE and the event areas carry it.
    public static let wrapBit: UInt16 = 1 << 15
    public static let slotMask: UInt16 = 0x7fff

    public static func ringBytes(_ size: Int) -> Int { descriptorSize * size }

    /// Any size in 1...32768 (packed rings need no power of two); the descriptor ring 16-byte
    /// aligned, the event areas 4-byte aligned (§2.8.10.1).
    public static func check(size: UInt32, addresses a: RingAddresses) throws(RingSetupError) {
        guard size >= 1, size <= UInt32(Virtqueue.maxSize) else { throw .badPackedSize(size) }
        guard a.descriptorTable.value % 16 == 0 else { throw .misaligned("descriptor ring") }
        guard a.availRing.value % 4 == 0 else { throw .misaligned("driver event area") }
        guard a.usedRing.value % 4 == 0 else { throw .misaligned("device event area") }
    }

    /// Whether a descriptor with `flags` was used by the device in the lap `wrap` names: AVAIL and
    /// USED both equal to the wrap counter (§2.8.1).
    @inline(__always)
    public static func isUsed(_ flags: UInt16, wrap: Bool) -> Bool {
        (flags & availFlag != 0) == wrap && (flags & usedFlag != 0) == wrap
    }

    /// Whether a descriptor with `flags` is available to the device in the lap `wrap` names:
    /// AVAIL equal to the wrap counter and USED not (§2.8.1).
    @inline(__always)
    public static func isAvailable(_ flags: UInt16, wrap: Bool) -> Bool {
        (flags & availFlag != 0) == wrap && (flags & usedFlag != 0) != wrap
    }
}

/// One packed descriptor, read once (the guest may rewrite it while we look).
public struct PackedDescriptor: BufferDescriptor, Sendable {
    public let address: GuestPhysicalAddress
    public let length: UInt32
    public let id: UInt16
    public let flags: DescriptorFlags

    /// Invariant: `p` points at 16 bytes inside a mapped region.
    @inline(__always)
    public init(at p: UnsafeRawPointer) {
        address = GuestPhysicalAddress(UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)))
        length = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        id = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
        flags = DescriptorFlags(rawValue: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt16.self)))
    }
}

/// A position in a packed ring: slot 0..<size and the wrap counter, kept as the wire encodes it
/// (slot | wrap << 15) and moved with the ring's size (not a power of two in general).
public struct PackedPosition: Equatable, Sendable, CustomStringConvertible {
    public var encoded: UInt16
    @inline(__always) public init(_ encoded: UInt16) { self.encoded = encoded }

    public var slot: Int { @inline(__always) get { Int(encoded & PackedRingLayout.slotMask) } }
    public var wrap: Bool { @inline(__always) get { encoded & PackedRingLayout.wrapBit != 0 } }

    /// `n` descriptors on (0...size), the wrap counter flipping as the slot passes the end.
    @inline(__always)
    public func advanced(by n: Int, size: Int) -> PackedPosition {
        var slot = self.slot &+ n
        var wrapBit = encoded & PackedRingLayout.wrapBit
        if slot >= size {
            slot &-= size
            wrapBit ^= PackedRingLayout.wrapBit
        }
        return PackedPosition(UInt16(truncatingIfNeeded: slot) | wrapBit)
    }

    /// `n` descriptors back (0...size).
    @inline(__always)
    public func retreated(by n: Int, size: Int) -> PackedPosition {
        var slot = self.slot &- n
        var wrapBit = encoded & PackedRingLayout.wrapBit
        if slot < 0 {
            slot &+= size
            wrapBit ^= PackedRingLayout.wrapBit
        }
        return PackedPosition(UInt16(truncatingIfNeeded: slot) | wrapBit)
    }

    public var description: String { "\(slot)\(wrap ? "+" : "-")" }
}
