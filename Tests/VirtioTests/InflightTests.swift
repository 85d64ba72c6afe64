import Glibc
import Testing
import TestSupport
import VhostSystem
@testable import Virtio

/// A ring's device side over driver memory, with an inflight buffer that outlives it: `restart`
/// makes a new device queue (a restarted back-end) on the same rings and buffer.
final class InflightPair {
    let memory: DriverMemory
    let guest: GuestMemory
    let split: DriverQueue?
    let packed: PackedDriverQueue?
    let region: InflightRegion
    let regionDescriptor: OwnedDescriptor
    var device: Virtqueue
    let segments = SegmentList(capacity: Virtqueue.maxSegmentsPerChain)
    let size: Int

    init(packed isPacked: Bool, size: Int = 8) throws {
        self.size = size
        memory = try DriverMemory(size: 4 << 20)
        guest = try GuestMemory(specs: [memory.regionSpec], descriptors: [memory.descriptor])
        split = isPacked ? nil : DriverQueue(size: size, memory: memory)
        packed = isPacked ? PackedDriverQueue(size: size, memory: memory) : nil
        (region, regionDescriptor, _) = try InflightRegion.allocate(queueCount: 2, queueSize: size, maxQueues: 2)
        device = Virtqueue(index: 1)
        _ = try start(base: isPacked ? PackedRingLayout.wrapBit : 0)
    }

    var addresses: RingAddresses { split?.addresses ?? packed!.addresses }
    var format: RingFormat { packed == nil ? .split : .packed }

    /// Attaches the device queue at the front-end's `base` and starts tracking.
    func start(base: UInt16) throws -> InflightRecovery {
        try device.attach(size: UInt32(size), addresses: addresses, memory: guest, format: format)
        device.resume(at: base)
        return device.startInflightTracking(region.queue(1, ringSize: size)!, region: region)
    }

    /// A back-end killed and started again: nothing of the old queue survives but the buffer.
    func restart(base: UInt16) throws -> InflightRecovery {
        device = Virtqueue(index: 1)
        return try start(base: base)
    }

    func add(seed: UInt8) -> UInt16? {
        let gpa = memory.allocate(64)
        memory.host(gpa).storeBytes(of: seed, as: UInt8.self)
        if let split {
            guard let id = split.add([.readable(gpa, length: 64)]) else { return nil }
            split.publish()
            return id
        }
        return packed!.add([.readable(gpa, length: 64)])
    }

    func take() -> UInt16? {
        guard let n = device.availableCount(), n > 0 else { return nil }
        guard case .chain(let head, _) = device.nextChain(writable: false, into: segments) else { return nil }
        return head
    }

    func use(_ head: UInt16) {
        device.addUsed(head: head, length: 0)
        device.publishUsed()
    }

    func reap() -> [UInt16] {
        split?.reapUsed().map(\.head) ?? packed!.reapUsed().map(\.id)
    }
}

@Suite struct Inflight {
    @Test(arguments: [false, true]) func aRestartedBackEndTakesExactlyTheChainsInFlight(packed: Bool) throws {
        let p = try InflightPair(packed: packed)
        var posted: [UInt16] = []
        var completed: [UInt16] = []
        // Three rounds: chains taken, some used, the back-end killed with the rest in flight.
        for round in 0..<3 {
            for k in 0..<4 { if let id = p.add(seed: UInt8(round * 10 + k)) { posted.append(id) } }
            let taken = (0..<4).compactMap { _ in p.take() }
            #expect(taken.count == 4, "round \(round)")
            for head in taken.prefix(2) { p.use(head) }
            completed += p.reap()
            // The front-end sends what QEMU does after a back-end died: the used index for a
            // split ring, and for a packed ring the initial position it kept.
            let base = packed ? PackedRingLayout.wrapBit : p.split!.deviceUsedIndex
            let recovery = try p.restart(base: base)
            if packed {
                guard case .packedResumed = recovery else { Issue.record("round \(round): \(recovery)"); return }
            } else {
                #expect(recovery == .splitResumed(usedIndex: p.split!.deviceUsedIndex, inFlight: 2, agrees: true, lastBatchRepaired: 0))
            }
            #expect(!p.device.broken, "round \(round): \(p.device.brokenReason ?? "")")
            // The two in flight come again, first, in order: used once each.
            let again = (0..<2).compactMap { _ in p.take() }
            #expect(again == taken.suffix(2).map { $0 }, "round \(round)")
            for head in again { p.use(head) }
            completed += p.reap()
        }
        #expect(completed.sorted() == posted.sorted(), "every chain used exactly once")
        #expect(p.take() == nil)
    }

    @Test func aSplitBatchPublishedButNotCommittedIsRepaired() throws {
        let p = try InflightPair(packed: false)
        for k in 0..<3 { _ = p.add(seed: UInt8(k)) }
        let taken = (0..<3).compactMap { _ in p.take() }
        // Killed between used->idx and the region's commit: two heads used in the ring, still
        // marked in flight in the region, whose used index is behind.
        let q = p.region.queue(1, ringSize: p.size)!
        let before = q.u16(InflightQueue.splitUsedIndexOffset)
        p.device.addUsed(head: taken[0], length: 0)
        p.device.addUsed(head: taken[1], length: 0)
        p.device.publishUsed()
        for h in taken.prefix(2) { q.splitTake(head: Int(h), counter: UInt64(h)) }
        q.setU16(InflightQueue.splitUsedIndexOffset, before)
        let recovery = try p.restart(base: 0)
        #expect(recovery == .splitResumed(usedIndex: 2, inFlight: 1, agrees: true, lastBatchRepaired: 2))
        #expect(p.take() == taken[2])
    }

    @Test(arguments: [true, false]) func aPackedUseCutShortIsCompletedOrRolledBack(reachedTheRing: Bool) throws {
        let p = try InflightPair(packed: true)
        for k in 0..<3 { _ = p.add(seed: UInt8(k)) }
        let taken = (0..<3).compactMap { _ in p.take() }
        p.use(taken[0])
        let q = p.region.queue(1, ringSize: p.size)!
        let committed = q.packedPositions().old
        if reachedTheRing {
            // The used descriptor was written; the commit was not.
            p.use(taken[1])
            q.packedCommitUse(PackedPosition(UInt16(committed.slot) | (committed.wrap == 1 ? PackedRingLayout.wrapBit : 0)))
        } else {
            // Begun, but the descriptor never reached the ring.
            q.packedBeginUse(PackedPosition(UInt16(committed.slot + 1) | PackedRingLayout.wrapBit))
        }
        let recovery = try p.restart(base: PackedRingLayout.wrapBit)
        guard case .packedResumed(_, let forward, let back) = recovery else { Issue.record("\(recovery)"); return }
        #expect(forward == reachedTheRing && back == !reachedTheRing)
        #expect(p.take() == (reachedTheRing ? taken[2] : taken[1]))
    }

    @Test(arguments: [false, true]) func hostileRegionsAreResetNeverTrusted(packed: Bool) throws {
        let p = try InflightPair(packed: packed)
        let q = p.region.queue(1, ringSize: p.size)!
        var rng = SeededRandom(seed: 0x1f1f)
        let base = packed ? PackedRingLayout.wrapBit : 0
        // Hand-made: another version, another ring size, a used index far behind, a batch list
        // leaving the ring, positions out of range.
        let cases: [(String, () -> Void)] = [
            ("version", { q.setU16(InflightQueue.versionOffset, 9) }),
            ("size", { q.setU16(InflightQueue.descriptorCountOffset, 4096) }),
            ("used index", { q.setU16(packed ? InflightQueue.packedUsedIndexOffset : InflightQueue.splitUsedIndexOffset, 40000) }),
            ("batch list", {
                q.setU16(InflightQueue.splitUsedIndexOffset, 0xfffe)
                q.setU16(InflightQueue.lastBatchHeadOffset, 7000)
            }),
        ]
        for (name, spoil) in cases {
            _ = try p.restart(base: base)
            spoil()
            let recovery = try p.restart(base: base)
            switch recovery {
            case .reinitialised, .splitResumed, .packedResumed: break
            case .fresh: Issue.record("\(name): a spoiled region read as new")
            }
            #expect(!p.device.broken || p.device.brokenReason?.contains("base") == true, "\(name): \(p.device.brokenReason ?? "")")
        }
        // Random bytes over the whole region, many times: recovery never faults, and the ring
        // then either works or is broken with a reason (its position is bounded by the ring).
        for round in 0..<300 {
            let bytes = 32 + InflightRegion.entryBytes * p.size
            for k in 0..<bytes { (q.base + k).storeBytes(of: UInt8.random(in: 0...255, using: &rng), as: UInt8.self) }
            if round % 3 == 0 { q.setU16(InflightQueue.versionOffset, 1) }
            if round % 3 != 2 { q.setU16(InflightQueue.descriptorCountOffset, UInt16(p.size)) }
            _ = try p.restart(base: base)
            if !p.device.broken, let id = p.add(seed: 1) {
                if let head = p.take() { p.use(head) }
                _ = p.reap()
                _ = id
            }
        }
    }

    @Test func buffersThatCannotBeMappedSafelyAreRefused() throws {
        let (_, fd, size) = try InflightRegion.allocate(queueCount: 2, queueSize: 256, maxQueues: 4)
        #expect(size == 2 * UInt64(InflightRegion.stride(queueSize: 256)))
        // Sealed: the holder of the descriptor cannot shrink it under a mapping.
        #expect(ftruncate(fd.rawValue, 0) != 0)
        struct Description { var mmapSize: UInt64, mmapOffset: UInt64 = 0, queueCount = 2, queueSize = 256 }
        let d = Description(mmapSize: size)
        func refused(_ e: InflightRegion.SetupError, _ change: (inout Description) -> Void, fd f: CInt? = nil) {
            var x = d
            change(&x)
            #expect(throws: e) {
                try InflightRegion(descriptor: f ?? fd.rawValue, mmapSize: x.mmapSize, mmapOffset: x.mmapOffset, queueCount: x.queueCount,
                                   queueSize: x.queueSize, maxQueues: 4)
            }
        }
        refused(.queueCount(0, max: 4)) { $0.queueCount = 0 }
        refused(.queueCount(9, max: 4)) { $0.queueCount = 9 }
        refused(.queueSize(0)) { $0.queueSize = 0 }
        refused(.sizeMismatch(1, expected: d.mmapSize)) { $0.mmapSize = 1 }
        refused(.misalignedOffset(8)) { $0.mmapOffset = 8 }
        refused(.beyondFileEnd(needed: d.mmapSize + 4096, fileSize: d.mmapSize)) { $0.mmapOffset = 4096 }
        refused(.addressOverflow) { $0.mmapOffset = UInt64.max - 63 }
        let short = try MemFD.make(name: "short", size: 4096)
        refused(.beyondFileEnd(needed: d.mmapSize, fileSize: 4096), { _ in }, fd: short.rawValue)
        let e = try EventFD.make()
        refused(.notAFile, { _ in }, fd: e.rawValue)
        // The right description maps, and each queue's region is where the stride says.
        let r = try InflightRegion(descriptor: fd.rawValue, mmapSize: size, mmapOffset: 0, queueCount: 2, queueSize: 256, maxQueues: 4)
        #expect(r.queue(2, ringSize: 256) == nil && r.queue(1, ringSize: 512) == nil && r.queue(1, ringSize: 256) != nil)
    }
}
