import Synchronization

// Inflight tracking (INFLIGHT_SHMFD): what the ring writes to its region as it takes and uses
// chains, and what a restarted back-end reads back from it when the ring starts again.

extension InflightQueue {
    // MARK: Split rings (the spec's algorithm: per-head state, last batch, used index)

    @inline(__always) func splitTake(head: Int, counter: UInt64) {
        let e = splitEntry(head)
        e.storeBytes(of: counter, toByteOffset: 8, as: UInt64.self)
        e.storeBytes(of: 1 as UInt8, as: UInt8.self)
    }

    @inline(__always) func splitUntake(head: Int) {
        splitEntry(head).storeBytes(of: 0 as UInt8, as: UInt8.self)
    }

    /// A used head joins the last batch (a list through `next`, newest first).
    @inline(__always) func splitUsed(head: Int) {
        splitEntry(head).storeBytes(of: u16(Self.lastBatchHeadOffset), toByteOffset: 6, as: UInt16.self)
        setU16(Self.lastBatchHeadOffset, UInt16(truncatingIfNeeded: head))
    }

    /// Clears the in-flight mark of the newest `count` heads of the last batch. False when the
    /// list leaves the ring (a region someone else wrote).
    func clearLastBatch(_ count: Int) -> Bool {
        var head = Int(u16(Self.lastBatchHeadOffset))
        for _ in 0..<count {
            guard head < ringSize else { return false }
            let e = splitEntry(head)
            e.storeBytes(of: 0 as UInt8, as: UInt8.self)
            head = Int(e.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        }
        return true
    }

    /// After used->idx was published: the batch is no longer in flight and the region's used
    /// index follows. A back-end dying between the two is what recovery's batch walk repairs.
    @inline(__always) func splitCommit(batch: Int, usedIndex: UInt16) {
        _ = clearLastBatch(batch)
        setU16(Self.splitUsedIndexOffset, usedIndex)
    }

    // MARK: Packed rings (used position, committed in two steps)

    @inline(__always) func packedBeginUse(_ next: PackedPosition) {
        setU16(Self.packedUsedIndexOffset, UInt16(next.slot))
        base.storeBytes(of: next.wrap ? 1 : 0 as UInt8, toByteOffset: Self.packedUsedWrapOffset, as: UInt8.self)
    }

    @inline(__always) func packedCommitUse(_ next: PackedPosition) {
        setU16(Self.packedOldUsedIndexOffset, UInt16(next.slot))
        base.storeBytes(of: next.wrap ? 1 : 0 as UInt8, toByteOffset: Self.packedOldUsedWrapOffset, as: UInt8.self)
    }

    func packedPositions() -> (used: (slot: Int, wrap: UInt8), old: (slot: Int, wrap: UInt8)) {
        ((Int(u16(Self.packedUsedIndexOffset)), base.load(fromByteOffset: Self.packedUsedWrapOffset, as: UInt8.self)),
         (Int(u16(Self.packedOldUsedIndexOffset)), base.load(fromByteOffset: Self.packedOldUsedWrapOffset, as: UInt8.self)))
    }
}

/// What a ring learned from its inflight region when it started.
public enum InflightRecovery: Equatable, Sendable, CustomStringConvertible {
    /// A new region (version 0): stamped for this ring; the front-end's base stands.
    case fresh
    /// A region that cannot be this ring's (another size, a version or indices out of range):
    /// reset for this ring; the front-end's base stands.
    case reinitialised(String)
    /// Split: resumed at the used index with `inFlight` chains to take again, which the avail
    /// ring lists in the region's order (`agrees`) or not.
    case splitResumed(usedIndex: UInt16, inFlight: Int, agrees: Bool, lastBatchRepaired: Int)
    /// Packed: resumed at the region's used position; `rolledForward` when the back-end before
    /// died between writing a used descriptor and committing it.
    case packedResumed(PackedPosition, rolledForward: Bool, rolledBack: Bool)

    public var description: String {
        switch self {
        case .fresh: "new inflight region"
        case .reinitialised(let why): "inflight region reset (\(why))"
        case .splitResumed(let u, let n, let agrees, let repaired):
            "inflight region: resumes at used index \(u), \(n) chain(s) in flight\(agrees ? "" : " (not in the avail ring's order: taken again from the avail ring)")\(repaired > 0 ? ", last batch of \(repaired) repaired" : "")"
        case .packedResumed(let p, let forward, let back):
            "inflight region: resumes at used position \(p)\(forward ? " (an unfinished use completed)" : back ? " (an unfinished use rolled back)" : "")"
        }
    }
}

extension Virtqueue {
    /// Starts tracking chains in `region` (kept alive by the ring) and positions the ring from
    /// what it holds. Called once the ring is attached and placed at the front-end's base.
    public func startInflightTracking(_ queue: InflightQueue, region: InflightRegion) -> InflightRecovery {
        inflightRegion = region
        inflight = queue
        inflightCounter = 0
        inflightBatch = 0
        let recovery: InflightRecovery
        if queue.version == 0 {
            recovery = .fresh
        } else if queue.version != InflightQueue.version {
            recovery = .reinitialised("version \(queue.version)")
        } else if Int(queue.descriptorCount) != size {
            recovery = .reinitialised("kept for a ring of \(queue.descriptorCount), this one has \(size)")
        } else {
            recovery = format == .packed ? recoverPacked(queue) : recoverSplit(queue)
        }
        switch recovery {
        case .fresh, .reinitialised:
            queue.initialise()
            if format == .packed {
                queue.packedBeginUse(PackedPosition(usedIndex))
                queue.packedCommitUse(PackedPosition(usedIndex))
            } else {
                queue.setU16(InflightQueue.splitUsedIndexOffset, usedIndex)
            }
        case .splitResumed, .packedResumed:
            break
        }
        return recovery
    }

    /// The spec's reconnect steps for a split ring. An in-order device's chains in flight are
    /// the avail ring's entries from the used index on, so the ring resumes there; the region
    /// says how many there are and whether the avail ring agrees.
    private func recoverSplit(_ q: InflightQueue) -> InflightRecovery {
        let guestUsed = usedIndex
        let recorded = q.u16(InflightQueue.splitUsedIndexOffset)
        var repaired = 0
        if recorded != guestUsed {
            repaired = Int(guestUsed &- recorded)
            guard repaired <= size, q.clearLastBatch(repaired) else {
                return .reinitialised("used index \(recorded) is \(repaired) behind the ring's \(guestUsed)")
            }
            q.setU16(InflightQueue.splitUsedIndexOffset, guestUsed)
        }
        var inFlight: [(counter: UInt64, head: Int)] = []
        for head in 0..<size {
            let e = q.splitEntry(head)
            if e.load(as: UInt8.self) != 0 {
                inFlight.append((e.loadUnaligned(fromByteOffset: 8, as: UInt64.self), head))
                q.splitUntake(head: head)  // marked again when taken again
            }
        }
        inFlight.sort { $0.counter < $1.counter }
        var agrees = true
        for (j, entry) in inFlight.enumerated() {
            let slot = RingIndex(guestUsed &+ UInt16(truncatingIfNeeded: j)).slot(mask)
            if Int(availEntry(slot)) != entry.head { agrees = false; break }
        }
        resume(at: guestUsed)
        return .splitResumed(usedIndex: guestUsed, inFlight: inFlight.count, agrees: agrees, lastBatchRepaired: repaired)
    }

    /// The spec's reconnect steps for a packed ring: an unfinished use is completed if its used
    /// descriptor reached the ring, rolled back if not; the ring resumes at the committed
    /// position, from which the chains in flight are taken again.
    private func recoverPacked(_ q: InflightQueue) -> InflightRecovery {
        let (current, old) = q.packedPositions()
        guard current.slot < size, old.slot < size, current.wrap <= 1, old.wrap <= 1 else {
            return .reinitialised("used position out of range")
        }
        func position(_ p: (slot: Int, wrap: UInt8)) -> PackedPosition {
            PackedPosition(UInt16(p.slot) | (p.wrap == 1 ? PackedRingLayout.wrapBit : 0))
        }
        var resumeAt = position(old)
        var forward = false
        var back = false
        if current.slot != old.slot || current.wrap != old.wrap {
            let flags = Self.load16(descriptors! + PackedRingLayout.descriptorSize * old.slot + PackedRingLayout.flagsOffset)
            if PackedRingLayout.isUsed(flags, wrap: old.wrap == 1) {
                resumeAt = position(current)
                forward = true
            } else {
                back = true
            }
            q.packedBeginUse(resumeAt)
            q.packedCommitUse(resumeAt)
        }
        clearBroken()  // a stale base from the front-end is what the region corrects
        resume(at: resumeAt.encoded)
        return .packedResumed(resumeAt, rolledForward: forward, rolledBack: back)
    }

    public var tracksInflight: Bool { inflight != nil }

    @inline(__always) func inflightTake(head: UInt16) {
        guard let q = inflight else { return }
        q.splitTake(head: Int(head), counter: inflightCounter)
        inflightCounter &+= 1
    }

    /// Split rewind: the heads given back are no longer in flight.
    func inflightUntake(_ count: Int) {
        guard let q = inflight, format == .split else { return }
        for k in 0..<min(count, size) {
            let slot = RingIndex(lastAvailIndex &+ UInt16(truncatingIfNeeded: k)).slot(mask)
            let head = Int(availEntry(slot))
            if head < size { q.splitUntake(head: head) }
        }
    }

    @inline(__always) func inflightUsed(head: UInt16) {
        guard let q = inflight else { return }
        q.splitUsed(head: Int(head))
        inflightBatch &+= 1
    }

    /// After used->idx is published. The fence keeps the region's stores after it (a release
    /// store orders only what comes before it).
    @inline(__always) func inflightCommit() {
        guard let q = inflight else { return }
        atomicMemoryFence(ordering: .releasing)
        q.splitCommit(batch: inflightBatch, usedIndex: usedIndex)
        inflightBatch = 0
    }
}
