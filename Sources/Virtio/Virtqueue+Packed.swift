import CVhostShim
import Synchronization

/// What a packed ring keeps besides the positions in `Virtqueue`: the chains taken and not yet
/// used (each one's descriptor count, to know where its used descriptor goes and how far a
/// rewind goes back), and what a scan of the ring found available ahead of the next chain.
struct PackedState {
    private var counts: UnsafeMutablePointer<UInt16>?
    private var capacity = 0
    private var first = 0
    private(set) var takenCount = 0
    /// Descriptors of the chains taken and not yet used.
    var inFlightDescriptors = 0
    /// Chains (and their descriptors) found available beyond `lastAvailIndex`, up to `scanPosition`.
    var chainsAhead = 0
    var descriptorsAhead = 0
    var scanPosition: UInt16 = 0
    /// The slot of the first used descriptor written since the last publish whose flags are
    /// still to be written (-1: none), and those flags (Virtqueue+PackedUsed.swift).
    var unpublishedHead = -1
    var unpublishedHeadFlags: UInt16 = 0

    mutating func allocate(size: Int) {
        if capacity != size {
            counts?.deallocate()
            counts = .allocate(capacity: size)
            capacity = size
        }
        reset(at: 0)
    }

    mutating func release() {
        counts?.deallocate()
        counts = nil
        capacity = 0
        reset(at: 0)
    }

    mutating func reset(at position: UInt16) {
        first = 0
        takenCount = 0
        inFlightDescriptors = 0
        chainsAhead = 0
        descriptorsAhead = 0
        scanPosition = position
        unpublishedHead = -1
    }

    /// Invariant (kept by the ring): at most `capacity` chains are in flight, as each takes a slot.
    @inline(__always)
    mutating func pushTaken(_ n: Int) {
        var end = first &+ takenCount
        if end >= capacity { end &-= capacity }
        counts![end] = UInt16(truncatingIfNeeded: n)
        takenCount &+= 1
        inFlightDescriptors &+= n
    }

    @inline(__always)
    mutating func popOldest() -> Int {
        let n = Int(counts![first])
        first &+= 1
        if first == capacity { first = 0 }
        takenCount &-= 1
        inFlightDescriptors &-= n
        return n
    }

    @inline(__always)
    mutating func popNewest() -> Int {
        var last = first &+ takenCount &- 1
        if last >= capacity { last &-= capacity }
        takenCount &-= 1
        let n = Int(counts![last])
        inFlightDescriptors &-= n
        return n
    }
}

// The packed ring (virtio 1.1 §2.8), device side. The driver makes a chain available by writing
// its head's flags last (AVAIL = its wrap counter, USED = not); the device writes one used
// descriptor per chain at the used position (id, length, then flags with AVAIL = USED = its wrap
// counter) and moves that position by the chain's descriptor count. Chains are used in the order
// they were taken, as the data path does; the buffer id is echoed, never used as an index.
extension Virtqueue {
    /// At most this many descriptors are scanned per look at the ring.
    static let packedScanLimit = 256

    func attachPacked(size: UInt32, addresses a: RingAddresses, memory: GuestMemory) throws(RingSetupError) {
        try PackedRingLayout.check(size: size, addresses: a)
        let n = Int(size)
        guard let d = memory.translate(userAddress: a.descriptorTable, length: UInt64(PackedRingLayout.ringBytes(n))) else {
            throw .notInGuestMemory("descriptor ring")
        }
        let area = UInt64(PackedRingLayout.eventAreaBytes)
        guard let driverArea = memory.translate(userAddress: a.availRing, length: area) else { throw .notInGuestMemory("driver event area") }
        guard let deviceArea = memory.translate(userAddress: a.usedRing, length: area) else { throw .notInGuestMemory("device event area") }
        format = .packed
        self.size = n
        mask = 0
        descriptors = d
        avail = driverArea
        used = deviceArea
        setMemory(memory)
        packed.allocate(size: n)
        packed.scanPosition = lastAvailIndex
        signalledValid = false
        clearBroken()
    }

    /// SET_VRING_BASE's position: the avail slot and wrap counter. Every chain before it is
    /// used (the ring was stopped or is new), so the used position is the same (as DPDK has it).
    func resumePacked(at index: UInt16) {
        lastAvailIndex = index
        usedIndex = index
        packed.reset(at: index)
        signalledValid = false
        let position = PackedPosition(index)
        if size > 0 && position.slot >= size {
            markBroken("base slot \(position.slot) is beyond the ring of \(size)")
            return
        }
        // The descriptor at a right base was never used in this lap: it is available, or left
        // from the lap before. One used in this lap means the base is stale: QEMU keeps no
        // position for packed rings when a back-end dies (there is no used index in memory to
        // read back, as there is for split rings), and sends the initial one. Nothing says where
        // the ring really is, so it stays stopped rather than replay or overwrite buffers.
        if let descriptors, size > 0 {
            let flags = Self.load16(descriptors + PackedRingLayout.descriptorSize * position.slot + PackedRingLayout.flagsOffset)
            if PackedRingLayout.isUsed(flags, wrap: position.wrap) {
                markBroken("base \(position) names a descriptor already used in that lap: the front-end's position is stale (after a back-end restart, QEMU cannot give one for a packed ring); the guest must reset the device")
            }
        }
    }

    @inline(__always)
    func packedAvailableCount() -> Int? {
        packed.chainsAhead > 0 ? packed.chainsAhead : packedRefreshAvailable()
    }

    /// Scans on from where the last scan stopped, counting the chains the driver has made
    /// available (each head's flags read with acquire; the rest of a chain was written before
    /// its head). Never more descriptors than the ring can hold besides those in flight.
    @inline(never)
    func packedRefreshAvailable() -> Int? {
        guard let descriptors, !broken else { return nil }
        var position = PackedPosition(packed.scanPosition)
        var chains = packed.chainsAhead
        var ahead = packed.descriptorsAhead
        let room = size &- packed.inFlightDescriptors &- ahead
        let limit = min(room, Self.packedScanLimit)
        var scanned = 0
        scan: while scanned < limit {
            let head = descriptors + PackedRingLayout.descriptorSize * position.slot
            let flags = Self.loadAcquire16(head + PackedRingLayout.flagsOffset)
            guard PackedRingLayout.isAvailable(flags, wrap: position.wrap) else { break }
            guard let (n, _) = packedChainExtent(at: position.slot, headFlags: flags, limit: room &- scanned) else {
                if chains == 0 {
                    markBroken("the chain at slot \(position.slot) is longer than the \(room) descriptors the ring has free")
                    return nil
                }
                break scan
            }
            position = position.advanced(by: n, size: size)
            chains &+= 1
            ahead &+= n
            scanned &+= n
        }
        packed.scanPosition = position.encoded
        packed.chainsAhead = chains
        packed.descriptorsAhead = ahead
        return chains
    }

    /// Takes the chain at the avail position: its extent in the ring (descriptors up to the first
    /// without NEXT), its buffer id (the last descriptor's), then its buffers. A chain whose head
    /// is not available, or that runs over descriptors still in flight, breaks the ring: its end
    /// cannot be trusted. Any other fault completes it with length 0.
    @inline(__always)
    func packedNextChain(writable: Bool, into segments: SegmentList) -> ChainResult? {
        let start = PackedPosition(lastAvailIndex)
        let head = descriptors! + PackedRingLayout.descriptorSize * start.slot
        let flags = Self.loadAcquire16(head + PackedRingLayout.flagsOffset)
        guard PackedRingLayout.isAvailable(flags, wrap: start.wrap) else {
            markBroken("slot \(start.slot) was taken for available and is not")
            return nil
        }
        guard let (count, last) = packedChainExtent(at: start.slot, headFlags: flags, limit: size) else {
            markBroken("the chain at slot \(start.slot) runs around the whole ring")
            return nil
        }
        guard count &+ packed.inFlightDescriptors <= size else {
            markBroken("the chain at slot \(start.slot) overlaps descriptors still in flight")
            return nil
        }
        let id = Self.load16(last + PackedRingLayout.idOffset)
        lastAvailIndex = start.advanced(by: count, size: size).encoded
        packed.pushTaken(count)
        packed.chainsAhead &-= 1
        packed.descriptorsAhead &-= count
        if packed.chainsAhead <= 0 || packed.descriptorsAhead <= 0 {
            // Used up, or the driver rewrote a chain after the scan: scan again from here.
            packed.chainsAhead = 0
            packed.descriptorsAhead = 0
            packed.scanPosition = lastAvailIndex
        }
        segments.count = 0
        switch packedWalk(start: start.slot, count: count, writable: writable, into: segments) {
        case .success(let length): return .chain(head: id, length: length)
        case .failure(let e): segments.count = 0; return .bad(head: id, e)
        }
    }

    /// How many ring descriptors the chain whose head (with `headFlags`) is at slot `start` spans:
    /// up to the first without NEXT, and where that last one is. Nil when it does not end within
    /// `limit` descriptors. Only flags are read (the head's, acquired, came with it).
    @inline(__always)
    private func packedChainExtent(at start: Int, headFlags: UInt16, limit: Int) -> (count: Int, last: UnsafeMutableRawPointer)? {
        let ring = descriptors!
        var flags = headFlags
        var count = 1
        var last = ring + PackedRingLayout.descriptorSize * start
        while flags & DescriptorFlags.next.rawValue != 0 {
            guard count < limit else { return nil }
            var slot = start &+ count
            if slot >= size { slot &-= size }
            last = ring + PackedRingLayout.descriptorSize * slot
            flags = Self.load16(last + PackedRingLayout.flagsOffset)
            count &+= 1
        }
        return (count, last)
    }

    private func packedWalk(start: Int, count: Int, writable: Bool, into segments: SegmentList) -> Result<Int, ChainError> {
        let regions = self.regions
        guard regions.count > 0 else { return .failure(.outOfMemory) }
        var cursor = ChainCursor(regions: regions, segments: segments, writable: writable)
        defer { segments.count = cursor.count }
        var slot = start
        for _ in 0..<count {
            let d = PackedDescriptor(at: descriptors! + PackedRingLayout.descriptorSize * slot)
            slot &+= 1
            if slot == size { slot = 0 }
            if d.isIndirect {
                guard indirectAllowed else { return .failure(.indirectNotNegotiated) }
                guard count == 1 else { return .failure(.indirectWithNext) }
                let entries = Int(d.length) / PackedRingLayout.descriptorSize
                guard d.length > 0, Int(d.length) % PackedRingLayout.descriptorSize == 0, entries <= size else { return .failure(.badIndirectLength) }
                guard let table = GuestMemory.translate(regions, guestPhysical: d.address, length: UInt64(d.length)) else {
                    return .failure(.indirectOutOfMemory)
                }
                // An indirect table is read in order; only WRITE means anything in it (§2.8.7).
                for k in 0..<entries {
                    let e = PackedDescriptor(at: table + PackedRingLayout.descriptorSize * k)
                    guard !e.isIndirect else { return .failure(.nestedIndirect) }
                    if let error = cursor.append(address: e.address, length: e.length, writeOnly: e.isWriteOnly) { return .failure(error) }
                }
                return .success(cursor.total)
            }
            if let error = cursor.append(address: d.address, length: d.length, writeOnly: d.isWriteOnly) { return .failure(error) }
        }
        return .success(cursor.total)
    }

    /// Gives back the newest `count` chains taken, unused.
    func packedRewind(_ count: Int) {
        for _ in 0..<count where packed.takenCount > 0 {
            let n = packed.popNewest()
            lastAvailIndex = PackedPosition(lastAvailIndex).retreated(by: n, size: size).encoded
            packed.chainsAhead &+= 1
            packed.descriptorsAhead &+= n
        }
    }

    /// The driver's event suppression: ENABLE, DISABLE, or (with EVENT_IDX) DESC with the used
    /// position after which it wants an interrupt (vring_need_event over slots, as DPDK does).
    @inline(__always)
    func packedNeedsInterrupt() -> Bool {
        guard let driverArea = avail else { return false }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let flags = Self.load16(driverArea + PackedRingLayout.eventFlagsOffset)
        let new = PackedPosition(usedIndex)
        let old = PackedPosition(signalledUsedIndex)
        let valid = signalledValid
        signalledUsedIndex = usedIndex
        signalledValid = true
        guard flags == PackedRingLayout.eventDescriptor && eventIndex else { return flags != PackedRingLayout.eventDisable }
        guard valid else { return true }
        let offWrap = Self.load16(driverArea + PackedRingLayout.eventOffWrapOffset)
        let newSlot = UInt16(new.slot)
        var oldSlot = UInt16(old.slot)
        var event = offWrap & PackedRingLayout.slotMask
        if newSlot <= oldSlot { oldSlot &-= UInt16(size) }
        if new.wrap != (offWrap & PackedRingLayout.wrapBit != 0) { event &-= UInt16(size) }
        return newSlot &- event &- 1 < newSlot &- oldSlot
    }

    /// The device's event suppression: kicks on (ENABLE) or off (DISABLE). Turning them on is
    /// followed by a full fence; the caller then looks at the ring again.
    @inline(__always)
    func packedSetKicks(enabled: Bool) {
        guard let deviceArea = used else { return }
        let flags = enabled ? PackedRingLayout.eventEnable : PackedRingLayout.eventDisable
        (deviceArea + PackedRingLayout.eventFlagsOffset).storeBytes(of: flags.littleEndian, as: UInt16.self)
        if isLogging { logWritten(at: deviceArea, length: PackedRingLayout.eventAreaBytes) }
        if enabled { atomicMemoryFence(ordering: .sequentiallyConsistent) }
    }

    /// Prefetches the descriptor lines the next chains will be read from (four descriptors a line).
    /// The first half (the batch about to be taken) is prefetched for writing: its descriptors are
    /// written back as used, and taking the line once, exclusive, saves upgrading it after the
    /// read. Lines further on may still be written by the driver: only read.
    @inline(__always)
    func packedPrefetch(upTo count: Int) {
        guard let ring = descriptors, size > 0 else { return }
        var slot = PackedPosition(lastAvailIndex).slot
        var k = 0
        let n = min(count, size)
        let owned = n / 2
        while k < n {
            if k < owned {
                cvh_prefetch_write(ring + PackedRingLayout.descriptorSize * slot)
            } else {
                cvh_prefetch_read(ring + PackedRingLayout.descriptorSize * slot)
            }
            slot &+= 4
            if slot >= size { slot &-= size }
            k &+= 4
        }
    }
}

/// Buffers of a chain being walked, split at region boundaries into `segments`: the rules both
/// ring formats apply to each descriptor (direction, total length, segment count, memory).
struct ChainCursor {
    let regions: UnsafeMutableBufferPointer<MappedRegion>
    let storage: UnsafeMutablePointer<Segment>
    let capacity: Int
    let writable: Bool
    var count = 0
    var total = 0

    @inline(__always)
    init(regions: UnsafeMutableBufferPointer<MappedRegion>, segments: SegmentList, writable: Bool) {
        self.regions = regions
        storage = segments.storage
        capacity = segments.capacity
        self.writable = writable
    }

    @inline(__always)
    mutating func append(address: GuestPhysicalAddress, length: UInt32, writeOnly: Bool) -> ChainError? {
        guard writeOnly == writable else { return .wrongDirection }
        total &+= Int(length)
        guard total <= Virtqueue.maxPacketLength || writable else { return .packetTooLarge }
        var gpa = address
        var remaining = UInt64(length)
        while remaining > 0 {
            guard let (host, n) = GuestMemory.translatePrefix(regions, guestPhysical: gpa, length: remaining) else {
                return .outOfMemory
            }
            guard count < capacity else { return .tooManySegments }
            storage[count] = Segment(base: host, length: Int(n))
            count &+= 1
            gpa.value &+= n
            remaining &-= n
        }
        return nil
    }
}
