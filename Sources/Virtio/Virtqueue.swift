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

/// Outcome of taking one descriptor chain from the avail ring.
public enum ChainResult: Equatable {
    /// A well-formed chain: its head and total byte length; segments are in the list.
    case chain(head: UInt16, length: Int)
    /// A malformed chain with a valid head: complete it with length 0.
    case bad(head: UInt16, ChainError)
}

/// Which layout a virtqueue has: split (virtio 1.x §2.7) or packed (§2.8, VIRTIO_F_RING_PACKED).
public enum RingFormat: Sendable {
    case split
    case packed
}

/// The device side of a virtqueue over guest memory: split (this file) or packed
/// (Virtqueue+Packed.swift), the same operations for both, chosen by `format` at each call
/// (a branch that always goes the same way for a ring).
///
/// Everything the guest controls is read once and checked before use: ring indices, heads, next
/// links, lengths, flags and addresses. The ring is used by one thread at a time (the switch
/// worker, under the switch lock); configuration happens under the same lock.
public final class Virtqueue: @unchecked Sendable {
    public static let maxSize = 32768
    /// At most this many segments per chain (after splitting at region boundaries).
    public static let maxSegmentsPerChain = 256
    /// A frame larger than this (virtio header included) is refused: 64 KiB GSO + headers.
    public static let maxPacketLength = 65_562 + 12

    public let index: Int
    public internal(set) var format = RingFormat.split
    public internal(set) var size = 0
    var mask = 0
    /// Split: descriptor table, avail ring, used ring. Packed: descriptor ring, driver event
    /// suppression area, device event suppression area.
    var descriptors: UnsafeMutableRawPointer?
    var avail: UnsafeMutableRawPointer?
    var used: UnsafeMutableRawPointer?
    public private(set) var memory: GuestMemory? {
        didSet { regions = memory?.regions ?? UnsafeMutableBufferPointer(start: nil, count: 0) }
    }
    /// `memory`'s region table, used by the data path without touching the object's reference count.
    var regions = UnsafeMutableBufferPointer<MappedRegion>(start: nil, count: 0)

    /// Next avail entry to take. Split: free-running 16-bit. Packed: the slot, with the avail
    /// wrap counter in bit 15 (as SET/GET_VRING_BASE carry it). Moved by the data path as it
    /// takes chains, and by `resume(at:)` when the control plane places the ring.
    public internal(set) var lastAvailIndex: UInt16 = 0 {
        didSet { if format == .split && RingIndex(lastAvailIndex).isAtOrAfter(RingIndex(cachedAvailIndex)) { cachedAvailIndex = lastAvailIndex } }
    }
    /// The guest's avail->idx as last read. Reading it costs a cache miss (the guest writes that
    /// line all the time), so it is re-read only when what it promised has been consumed.
    var cachedAvailIndex: UInt16 = 0
    /// Avail entries up to here have had their descriptors (buffers) prefetched.
    private var descriptorsPrefetched: UInt16 = 0
    private var buffersPrefetched: UInt16 = 0
    /// Split: our copy of used->idx (we are its only writer). Packed: the next slot to write a
    /// used descriptor in, with the used wrap counter in bit 15.
    public internal(set) var usedIndex: UInt16 = 0
    var signalledUsedIndex: UInt16 = 0
    var signalledValid = false
    /// Packed rings' own state (Virtqueue+Packed.swift).
    var packed = PackedState()

    public var eventIndex = false
    public var indirectAllowed = false
    /// Live migration: while set, every write to guest memory marks its pages in this log. The
    /// data path tests `isLogging` (a plain flag) so that no log costs nothing.
    public internal(set) var dirtyLog: DirtyLog?
    public private(set) var isLogging = false
    /// Where the used ring's writes are logged (SET_VRING_ADDR's log address with
    /// VHOST_VRING_F_LOG); nil: the front-end does not want them logged.
    public var usedRingLogAddress: GuestPhysicalAddress?
    /// Set when used elements were added outside a delivery (a refused chain) and need publishing.
    public var usedIndexDirty = false
    /// INFLIGHT_SHMFD: this ring's region (and what keeps it mapped), the fetch counter and the
    /// heads used since the last publish.
    var inflight: InflightQueue?
    var inflightRegion: InflightRegion?
    var inflightCounter: UInt64 = 0
    var inflightBatch = 0
    /// IN_ORDER: transmit chains used whose single used element is still to be written.
    var folded = InOrderBatch()
    /// Set when the guest broke the ring (bad avail index or head): nothing more is done with it.
    public private(set) var broken = false
    public private(set) var brokenReason: String?
    /// Set once the owner has reported the breakage (log line, error eventfd), so it is reported once.
    public var brokenReported = false

    public init(index: Int) {
        self.index = index
    }

    deinit { packed.release() }

    public var isAttached: Bool { descriptors != nil }

    /// Validates and translates the ring layout. The used index is read back from guest memory.
    ///
    /// Invariant established here, relied on by every raw access below: `descriptors`, `avail`
    /// and `used` point at the full extent of their part (`SplitRingLayout`'s byte counts,
    /// used_event and avail_event included) inside one mapped region of `memory`, which this
    /// queue keeps alive until `detach`.
    public func attach(size: UInt32, addresses a: RingAddresses, memory: GuestMemory, format: RingFormat = .split) throws(RingSetupError) {
        if format == .packed {
            try attachPacked(size: size, addresses: a, memory: memory)
            return
        }
        try SplitRingLayout.check(size: size, addresses: a)
        let n = Int(size)
        guard let d = memory.translate(userAddress: a.descriptorTable, length: UInt64(SplitRingLayout.descriptorTableBytes(n))) else {
            throw .notInGuestMemory("descriptor table")
        }
        guard let av = memory.translate(userAddress: a.availRing, length: UInt64(SplitRingLayout.availBytes(n))) else { throw .notInGuestMemory("avail ring") }
        guard let u = memory.translate(userAddress: a.usedRing, length: UInt64(SplitRingLayout.usedBytes(n))) else { throw .notInGuestMemory("used ring") }
        self.format = .split
        self.size = Int(size)
        mask = Int(size) - 1
        descriptors = d
        avail = av
        used = u
        self.memory = memory
        packed.release()
        usedIndex = Self.load16(u + SplitRingLayout.usedIndexOffset)
        cachedAvailIndex = lastAvailIndex
        signalledValid = false
        clearBroken()
    }

    /// Places the ring at `index` (SET_VRING_BASE, or a resynchronisation to the used index):
    /// what was read or prefetched ahead of the old position is forgotten, so nothing between
    /// the two positions is taken for available.
    public func resume(at index: UInt16) {
        if format == .packed {
            resumePacked(at: index)
            return
        }
        lastAvailIndex = index
        cachedAvailIndex = index
        descriptorsPrefetched = index
        buffersPrefetched = index
    }

    /// Starts (a log) or stops (nil) logging this ring's writes to guest memory.
    public func setDirtyLog(_ log: DirtyLog?) {
        dirtyLog = log
        isLogging = log != nil
    }

    /// Marks the pages of the used ring (elements, index, flags and avail_event alike: a few
    /// pages at most, marked whole rather than tracked write by write).
    @inline(never)
    func logUsedRing() {
        guard let log = dirtyLog, let address = usedRingLogAddress else { return }
        log.mark(address, length: UInt64(SplitRingLayout.usedBytes(size)))
    }

    /// Marks the pages of the first `length` bytes of the chain in `segments` (a receive chain
    /// the device just wrote).
    @inline(__always)
    public func logWritten(_ segments: SegmentList, length: Int) {
        if isLogging { logWrittenSlow(segments, length: length) }
    }

    /// Marks the page under `length` bytes written at `host` (a field patched after its chain was logged).
    @inline(__always)
    public func logWritten(at host: UnsafeMutableRawPointer, length: Int) {
        if isLogging, let log = dirtyLog { log.mark(host: host, length: length, in: regions) }
    }

    @inline(never)
    private func logWrittenSlow(_ segments: SegmentList, length: Int) {
        guard let log = dirtyLog else { return }
        var remaining = length
        for k in 0..<segments.count where remaining > 0 {
            let s = segments.storage[k]
            let n = min(s.length, remaining)
            log.mark(host: s.base, length: n, in: regions)
            remaining -= n
        }
    }

    /// Forgets the layout and memory (ring stopped, or the device reset).
    public func detach() {
        packed.release()
        descriptors = nil
        avail = nil
        used = nil
        memory = nil
        size = 0
        inflight = nil
        inflightRegion = nil
        folded = InOrderBatch()
        clearBroken()
    }

    func setMemory(_ memory: GuestMemory) { self.memory = memory }

    public func markBroken(_ reason: String) {
        broken = true
        brokenReason = reason
    }

    /// A new layout or none: whatever broke the old one is forgotten.
    func clearBroken() {
        broken = false
        brokenReason = nil
        brokenReported = false
    }

    @inline(__always) public static func load16(_ p: UnsafeMutableRawPointer) -> UInt16 {
        UInt16(littleEndian: p.load(as: UInt16.self))
    }

    /// An acquire load of a ring word the other side writes (and, in ThreadSanitizer builds, an
    /// acquire of the guest's ordering: `cvh_tsan_guest_acquire`).
    @inline(__always) public static func loadAcquire16(_ p: UnsafeMutableRawPointer) -> UInt16 {
        let v = UInt16(littleEndian: p.assumingMemoryBound(to: Atomic<UInt16>.self).pointee.load(ordering: .acquiring))
        #if VHOST_NETMAP_TSAN
        cvh_tsan_guest_acquire()
        #endif
        return v
    }

    @inline(__always) public static func storeRelease16(_ p: UnsafeMutableRawPointer, _ v: UInt16) {
        #if VHOST_NETMAP_TSAN
        cvh_tsan_guest_release()
        #endif
        UnsafePointer(p.assumingMemoryBound(to: Atomic<UInt16>.self)).pointee.store(v.littleEndian, ordering: .releasing)
    }

    /// Number of chains the guest has made available, or nil if the ring is broken
    /// (an avail index more than `size` ahead is a guest bug or attack).
    @inline(__always)
    public func availableCount() -> Int? {
        guard !broken else { return nil }
        if format == .packed { return packedAvailableCount() }
        let cached = Int(cachedAvailIndex &- lastAvailIndex)
        if cached > 0 { return cached }
        return refreshAvailable()
    }

    /// Re-reads avail->idx (acquire) and validates it.
    @inline(never)
    public func refreshAvailable() -> Int? {
        if format == .packed { return packedRefreshAvailable() }
        guard let avail, !broken else { return nil }
        let idx = Self.loadAcquire16(avail + SplitRingLayout.availIndexOffset)
        let n = RingIndex(idx).distance(from: RingIndex(lastAvailIndex))
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
        assert(isAttached && !broken, "nextChain on a ring that is not running")
        if format == .packed { return packedNextChain(writable: writable, into: segments) }
        let slot = RingIndex(lastAvailIndex).slot(mask)
        let head = availEntry(slot)
        lastAvailIndex &+= 1
        guard Int(head) < size else {
            markBroken("avail ring entry \(slot) names head \(head) on a ring of \(size)")
            return nil
        }
        inflightTake(head: head)
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
        if format == .packed { return packedPrefetch(upTo: count) }
        guard avail != nil, let descriptors else { return }
        let last = RingIndex(lastAvailIndex)
        let available = RingIndex(cachedAvailIndex).distance(from: last)
        // Heads are masked to the ring (not checked: only a hint), so every address stays in the table.
        @inline(__always) func descriptor(_ i: RingIndex) -> UnsafeMutableRawPointer {
            descriptors + SplitRingLayout.descriptorSize * (Int(availEntry(i.slot(mask))) & mask)
        }
        let descriptorEnd = last.advanced(by: min(count, available))
        var i = RingIndex(descriptorsPrefetched).isAtOrAfter(last) ? RingIndex(descriptorsPrefetched) : last
        while descriptorEnd.isAtOrAfter(i) && i != descriptorEnd {
            cvh_prefetch_read(descriptor(i))
            i = i.advanced(by: 1)
        }
        descriptorsPrefetched = descriptorEnd.value
        let regions = self.regions
        let bufferEnd = last.advanced(by: min(count / 2, available))
        i = RingIndex(buffersPrefetched).isAtOrAfter(last) ? RingIndex(buffersPrefetched) : last
        while bufferEnd.isAtOrAfter(i) && i != bufferEnd {
            let addr = Descriptor(at: descriptor(i)).address
            if let host = GuestMemory.translate(regions, guestPhysical: addr, length: 1) {
                if writable { cvh_prefetch_write(host) } else { cvh_prefetch_read(host) }
            }
            i = i.advanced(by: 1)
        }
        buffersPrefetched = bufferEnd.value
    }

    /// The head the avail ring lists at `slot` (split ring; read once, untrusted).
    @inline(__always)
    func availEntry(_ slot: Int) -> UInt16 {
        Self.load16(avail! + SplitRingLayout.availRingOffset + 2 * slot)
    }

    /// Gives back the last `count` chains taken (used when a receiver runs out of room midway).
    public func rewind(_ count: Int) {
        if format == .packed { return packedRewind(count) }
        lastAvailIndex &-= UInt16(truncatingIfNeeded: count)
        inflightUntake(count)
    }

    /// Writes one used element; it becomes visible to the guest at `publishUsed()`.
    @inline(__always)
    public func addUsed(head: UInt16, length: UInt32) {
        if format == .packed { return packedAddUsed(id: head, length: length) }
        assert(isAttached && Int(head) < size, "used element for head \(head) on a ring of \(size)")
        let e = used! + SplitRingLayout.usedRingOffset + SplitRingLayout.usedElementSize * RingIndex(usedIndex).slot(mask)
        e.storeBytes(of: UInt32(head).littleEndian, as: UInt32.self)
        e.storeBytes(of: length.littleEndian, toByteOffset: 4, as: UInt32.self)
        usedIndex &+= 1
        inflightUsed(head: head)
    }

    /// Makes the used elements written so far visible (store-release of used->idx).
    @inline(__always)
    public func publishUsed() {
        if folded.count != 0 { writeFoldedBatch() }
        if format == .packed { return publishPackedUsed() }
        Self.storeRelease16(used! + SplitRingLayout.usedIndexOffset, usedIndex)
        inflightCommit()
        if isLogging { logUsedRing() }
    }

    /// Whether the guest wants an interrupt for what was published since the last call
    /// (EVENT_IDX: vring_need_event on used_event; otherwise VRING_AVAIL_F_NO_INTERRUPT).
    @inline(__always)
    public func needsInterrupt() -> Bool {
        if format == .packed { return packedNeedsInterrupt() }
        guard let avail else { return false }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if eventIndex {
            let event = Self.load16(avail + SplitRingLayout.usedEventOffset(size))
            let new = usedIndex
            let old = signalledUsedIndex
            let valid = signalledValid
            signalledUsedIndex = new
            signalledValid = true
            if !valid { return true }
            return UInt16(truncatingIfNeeded: new &- event &- 1) < UInt16(truncatingIfNeeded: new &- old)
        }
        return Self.load16(avail + SplitRingLayout.availFlagsOffset) & SplitRingLayout.availNoInterrupt == 0
    }

    /// Asks the guest not to kick (no-op with EVENT_IDX: a stale avail_event already suppresses kicks).
    @inline(__always)
    public func disableKicks() {
        if format == .packed { return packedSetKicks(enabled: false) }
        guard let used, !eventIndex else { return }
        (used + SplitRingLayout.usedFlagsOffset).storeBytes(of: SplitRingLayout.usedNoNotify.littleEndian, as: UInt16.self)
        if isLogging { logUsedRing() }
    }

    /// Asks the guest to kick on its next post. The caller must re-check `availableCount()`
    /// afterwards: the guest may have posted just before seeing this.
    @inline(__always)
    public func enableKicks() {
        if format == .packed { return packedSetKicks(enabled: true) }
        guard let used else { return }
        if eventIndex {
            (used + SplitRingLayout.availEventOffset(size)).storeBytes(of: lastAvailIndex.littleEndian, as: UInt16.self)
        } else {
            (used + SplitRingLayout.usedFlagsOffset).storeBytes(of: UInt16(0).littleEndian, as: UInt16.self)
        }
        if isLogging { logUsedRing() }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }
}
