import CVhostShim
import Synchronization

/// Why a descriptor chain was refused. Each is counted; none is fatal to the daemon.
public enum ChainError: Error, Equatable, Sendable {
    case nextOutOfRange
    case tooLong
    case indirectNotNegotiated
    case nestedIndirect
    case indirectWithNext
    case badIndirectLength
    case indirectOutOfMemory
    case wrongDirection
    case outOfMemory
    case tooManySegments
    case packetTooLarge
}

/// Ring addresses as the front-end gives them (its own virtual addresses).
public struct RingAddresses: Equatable, Sendable {
    public var descriptorTable: UInt64
    public var availRing: UInt64
    public var usedRing: UInt64
    public init(descriptorTable: UInt64, availRing: UInt64, usedRing: UInt64) {
        self.descriptorTable = descriptorTable
        self.availRing = availRing
        self.usedRing = usedRing
    }
}

public enum RingSetupError: Error, Equatable, CustomStringConvertible {
    case badSize(UInt32)
    case misaligned(String)
    case notInGuestMemory(String)

    public var description: String {
        switch self {
        case .badSize(let n): "queue size \(n) is not a power of two in 1...32768"
        case .misaligned(let what): "\(what) is misaligned"
        case .notInGuestMemory(let what): "\(what) is not inside guest memory"
        }
    }
}

/// Outcome of taking one descriptor chain from the avail ring.
public enum ChainResult: Equatable {
    /// A well-formed chain: its head and total byte length; segments are in the list.
    case chain(head: UInt16, length: Int)
    /// A malformed chain with a valid head: complete it with length 0.
    case bad(head: UInt16, ChainError)
}

/// The device side of a split virtqueue (virtio 1.x §2.7) over guest memory.
///
/// Everything the guest controls is read once and checked before use: ring indices, heads, next
/// links, lengths, flags and addresses. The ring is used by one thread at a time (the switch
/// worker, under the switch lock); configuration happens under the same lock.
public final class SplitQueue: @unchecked Sendable {
    public static let maxSize = 32768
    /// At most this many segments per chain (after splitting at region boundaries).
    public static let maxSegmentsPerChain = 256
    /// A frame larger than this (virtio header included) is refused: 64 KiB GSO + headers.
    public static let maxPacketLength = 65_562 + 12

    public let index: Int
    public private(set) var size = 0
    private var mask = 0
    private var descriptors: UnsafeMutableRawPointer?
    private var avail: UnsafeMutableRawPointer?
    private var used: UnsafeMutableRawPointer?
    public private(set) var memory: GuestMemory? {
        didSet { regions = memory?.regions ?? UnsafeMutableBufferPointer(start: nil, count: 0) }
    }
    /// `memory`'s region table, used by the data path without touching the object's reference count.
    private var regions = UnsafeMutableBufferPointer<MappedRegion>(start: nil, count: 0)

    /// Next avail entry to take (free-running 16-bit).
    public var lastAvailIndex: UInt16 = 0 {
        didSet { if lastAvailIndex &- cachedAvailIndex < 0x8000 { cachedAvailIndex = lastAvailIndex } }
    }
    /// The guest's avail->idx as last read. Reading it costs a cache miss (the guest writes that
    /// line all the time), so it is re-read only when what it promised has been consumed.
    private var cachedAvailIndex: UInt16 = 0
    /// Avail entries up to here have had their descriptors (buffers) prefetched.
    private var descriptorsPrefetched: UInt16 = 0
    private var buffersPrefetched: UInt16 = 0
    /// Our copy of used->idx (we are its only writer).
    public private(set) var usedIndex: UInt16 = 0
    private var signalledUsedIndex: UInt16 = 0
    private var signalledValid = false

    public var eventIndex = false
    public var indirectAllowed = false
    /// Set when used elements were added outside a delivery (a refused chain) and need publishing.
    public var usedIndexDirty = false
    /// Set when the guest broke the ring (bad avail index or head): nothing more is done with it.
    public private(set) var broken = false
    public private(set) var brokenReason: String?
    /// Set once the owner has reported the breakage (log line, error eventfd), so it is reported once.
    public var brokenReported = false

    public init(index: Int) {
        self.index = index
    }

    public var isAttached: Bool { descriptors != nil }

    /// Validates and translates the ring layout. The used index is read back from guest memory.
    public func attach(size: UInt32, addresses a: RingAddresses, memory: GuestMemory) throws(RingSetupError) {
        guard size >= 1, size <= UInt32(SplitQueue.maxSize), size & (size - 1) == 0 else { throw .badSize(size) }
        let n = UInt64(size)
        guard a.descriptorTable % 16 == 0 else { throw .misaligned("descriptor table") }
        guard a.availRing % 2 == 0 else { throw .misaligned("avail ring") }
        guard a.usedRing % 4 == 0 else { throw .misaligned("used ring") }
        // Sizes include used_event/avail_event (EVENT_IDX) so those accesses are always in bounds.
        guard let d = memory.translate(userAddress: a.descriptorTable, length: 16 * n) else { throw .notInGuestMemory("descriptor table") }
        guard let av = memory.translate(userAddress: a.availRing, length: 6 + 2 * n) else { throw .notInGuestMemory("avail ring") }
        guard let u = memory.translate(userAddress: a.usedRing, length: 6 + 8 * n) else { throw .notInGuestMemory("used ring") }
        self.size = Int(size)
        mask = Int(size) - 1
        descriptors = d
        avail = av
        used = u
        self.memory = memory
        usedIndex = Self.load16(u + 2)
        cachedAvailIndex = lastAvailIndex
        signalledValid = false
        broken = false
        brokenReason = nil
        brokenReported = false
    }

    /// Forgets the layout and memory (ring stopped, or the device reset).
    public func detach() {
        descriptors = nil
        avail = nil
        used = nil
        memory = nil
        size = 0
        broken = false
        brokenReason = nil
        brokenReported = false
    }

    public func markBroken(_ reason: String) {
        broken = true
        brokenReason = reason
    }

    @inline(__always) public static func load16(_ p: UnsafeMutableRawPointer) -> UInt16 {
        UInt16(littleEndian: p.load(as: UInt16.self))
    }

    @inline(__always) public static func loadAcquire16(_ p: UnsafeMutableRawPointer) -> UInt16 {
        UInt16(littleEndian: p.assumingMemoryBound(to: Atomic<UInt16>.self).pointee.load(ordering: .acquiring))
    }

    @inline(__always) public static func storeRelease16(_ p: UnsafeMutableRawPointer, _ v: UInt16) {
        UnsafePointer(p.assumingMemoryBound(to: Atomic<UInt16>.self)).pointee.store(v.littleEndian, ordering: .releasing)
    }

    /// Number of chains the guest has made available, or nil if the ring is broken
    /// (an avail index more than `size` ahead is a guest bug or attack).
    @inline(__always)
    public func availableCount() -> Int? {
        guard !broken else { return nil }
        let cached = Int(cachedAvailIndex &- lastAvailIndex)
        if cached > 0 { return cached }
        return refreshAvailable()
    }

    /// Re-reads avail->idx (acquire) and validates it.
    @inline(never)
    public func refreshAvailable() -> Int? {
        guard let avail, !broken else { return nil }
        let idx = Self.loadAcquire16(avail + 2)
        let n = Int(idx &- lastAvailIndex)
        if n > size {
            markBroken("avail index \(idx) is \(n) entries ahead of \(lastAvailIndex) on a ring of \(size)")
            return nil
        }
        cachedAvailIndex = idx
        return n
    }

    /// Takes the next available chain and fills `segments` with its buffers.
    /// `writable` selects the direction: true for receive queues (device writes), false for transmit.
    /// Returns nil when the head itself is out of range: the ring is then marked broken.
    /// The caller has checked `availableCount() > 0`.
    @inline(__always)
    public func nextChain(writable: Bool, into segments: SegmentList) -> ChainResult? {
        let slot = Int(lastAvailIndex) & mask
        let head = Self.load16(avail! + 4 + 2 * slot)
        lastAvailIndex &+= 1
        guard Int(head) < size else {
            markBroken("avail ring entry \(slot) names head \(head) on a ring of \(size)")
            return nil
        }
        segments.count = 0
        switch walk(head: head, writable: writable, into: segments) {
        case .success(let length): return .chain(head: head, length: length)
        case .failure(let e): segments.count = 0; return .bad(head: head, e)
        }
    }

    /// Starts loading the descriptors and first buffer lines of the next available chains, so
    /// that the misses on lines the guest just wrote overlap instead of stalling one by one.
    /// Descriptors are prefetched up to `count` entries ahead; buffers (whose address needs the
    /// descriptor) only half as far, so a descriptor is read after its prefetch had time to land.
    /// Nothing read here is trusted: addresses are only prefetch hints.
    @inline(__always)
    public func prefetch(upTo count: Int, writable: Bool) {
        guard let avail, let descriptors else { return }
        let available = Int(cachedAvailIndex &- lastAvailIndex)
        let descriptorEnd = lastAvailIndex &+ UInt16(truncatingIfNeeded: min(count, available))
        var i = Int(descriptorsPrefetched &- lastAvailIndex) < 0x8000 ? descriptorsPrefetched : lastAvailIndex
        while Int(descriptorEnd &- i) & 0xffff < 0x8000 && i != descriptorEnd {
            cvh_prefetch_read(descriptors + 16 * (Int(Self.load16(avail + 4 + 2 * (Int(i) & mask))) & mask))
            i &+= 1
        }
        descriptorsPrefetched = descriptorEnd
        let regions = self.regions
        let bufferEnd = lastAvailIndex &+ UInt16(truncatingIfNeeded: min(count / 2, available))
        i = Int(buffersPrefetched &- lastAvailIndex) < 0x8000 ? buffersPrefetched : lastAvailIndex
        while Int(bufferEnd &- i) & 0xffff < 0x8000 && i != bufferEnd {
            let d = descriptors + 16 * (Int(Self.load16(avail + 4 + 2 * (Int(i) & mask))) & mask)
            let addr = UInt64(littleEndian: d.loadUnaligned(as: UInt64.self))
            if let host = GuestMemory.translate(regions, guestPhysical: addr, length: 1) {
                if writable { cvh_prefetch_write(host) } else { cvh_prefetch_read(host) }
            }
            i &+= 1
        }
        buffersPrefetched = bufferEnd
    }

    /// Gives back the last `count` chains taken (used when a receiver runs out of room midway).
    public func rewind(_ count: Int) {
        lastAvailIndex &-= UInt16(truncatingIfNeeded: count)
    }

    private func walk(head: UInt16, writable: Bool, into segments: SegmentList) -> Result<Int, ChainError> {
        let regions = self.regions
        guard regions.count > 0 else { return .failure(.outOfMemory) }
        var table = descriptors!
        var tableSize = size
        var index = Int(head)
        var visited = 0
        var inIndirect = false
        var total = 0
        let storage = segments.storage
        let capacity = segments.capacity
        var count = 0
        defer { segments.count = count }
        while true {
            let d = table + 16 * index
            // Each field is read once: the guest may rewrite the descriptor while we look at it.
            // Unaligned loads: an indirect table may sit at any guest address.
            let addr = UInt64(littleEndian: d.loadUnaligned(as: UInt64.self))
            let len = UInt32(littleEndian: d.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            let flags = UInt16(littleEndian: d.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
            let next = UInt16(littleEndian: d.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
            visited &+= 1

            if flags & 4 != 0 { // VIRTQ_DESC_F_INDIRECT
                guard indirectAllowed else { return .failure(.indirectNotNegotiated) }
                guard !inIndirect else { return .failure(.nestedIndirect) }
                guard flags & 1 == 0, visited == 1 else { return .failure(.indirectWithNext) }
                guard len > 0, len % 16 == 0, Int(len / 16) <= size else { return .failure(.badIndirectLength) }
                guard let t = GuestMemory.translate(regions, guestPhysical: addr, length: UInt64(len)) else {
                    return .failure(.indirectOutOfMemory)
                }
                table = t
                tableSize = Int(len / 16)
                index = 0
                visited = 0
                inIndirect = true
                continue
            }
            guard (flags & 2 != 0) == writable else { return .failure(.wrongDirection) } // VIRTQ_DESC_F_WRITE
            total &+= Int(len)
            guard total <= SplitQueue.maxPacketLength || writable else { return .failure(.packetTooLarge) }
            var gpa = addr
            var remaining = UInt64(len)
            while remaining > 0 {
                guard let (host, n) = GuestMemory.translatePrefix(regions, guestPhysical: gpa, length: remaining) else {
                    return .failure(.outOfMemory)
                }
                guard count < capacity else { return .failure(.tooManySegments) }
                storage[count] = Segment(base: host, length: Int(n))
                count &+= 1
                gpa &+= n
                remaining &-= n
            }
            if flags & 1 == 0 { return .success(total) } // no VIRTQ_DESC_F_NEXT
            guard visited < tableSize else { return .failure(.tooLong) }
            guard Int(next) < tableSize else { return .failure(.nextOutOfRange) }
            index = Int(next)
        }
    }

    /// Writes one used element; it becomes visible to the guest at `publishUsed()`.
    @inline(__always)
    public func addUsed(head: UInt16, length: UInt32) {
        let e = used! + 4 + 8 * (Int(usedIndex) & mask)
        e.storeBytes(of: UInt32(head).littleEndian, as: UInt32.self)
        e.storeBytes(of: length.littleEndian, toByteOffset: 4, as: UInt32.self)
        usedIndex &+= 1
    }

    /// Makes the used elements written so far visible (store-release of used->idx).
    @inline(__always)
    public func publishUsed() {
        Self.storeRelease16(used! + 2, usedIndex)
    }

    /// Whether the guest wants an interrupt for what was published since the last call
    /// (EVENT_IDX: vring_need_event on used_event; otherwise VRING_AVAIL_F_NO_INTERRUPT).
    @inline(__always)
    public func needsInterrupt() -> Bool {
        guard let avail else { return false }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if eventIndex {
            let event = Self.load16(avail + 4 + 2 * size)
            let new = usedIndex
            let old = signalledUsedIndex
            let valid = signalledValid
            signalledUsedIndex = new
            signalledValid = true
            if !valid { return true }
            return UInt16(truncatingIfNeeded: new &- event &- 1) < UInt16(truncatingIfNeeded: new &- old)
        }
        return Self.load16(avail) & 1 == 0
    }

    /// Asks the guest not to kick (no-op with EVENT_IDX: a stale avail_event already suppresses kicks).
    @inline(__always)
    public func disableKicks() {
        guard let used, !eventIndex else { return }
        used.storeBytes(of: UInt16(1).littleEndian, as: UInt16.self) // VRING_USED_F_NO_NOTIFY
    }

    /// Asks the guest to kick on its next post. The caller must re-check `availableCount()`
    /// afterwards: the guest may have posted just before seeing this.
    @inline(__always)
    public func enableKicks() {
        guard let used else { return }
        if eventIndex {
            (used + 4 + 8 * size).storeBytes(of: lastAvailIndex.littleEndian, as: UInt16.self)
        } else {
            used.storeBytes(of: UInt16(0).littleEndian, as: UInt16.self)
        }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }
}
