import Glibc
import Testing
import TestSupport
import VhostSystem
@testable import Virtio

/// A packed driver ring and the device queue over the same memory.
final class PackedPair {
    let memory: DriverMemory
    let guest: GuestMemory
    let driver: PackedDriverQueue
    let device: Virtqueue
    let segments = SegmentList(capacity: Virtqueue.maxSegmentsPerChain)

    init(size: Int = 10, indirect: Bool = true, eventIndex: Bool = false) throws {
        memory = try DriverMemory(size: 4 << 20)
        guest = try GuestMemory(specs: [memory.regionSpec], descriptors: [memory.descriptor])
        driver = PackedDriverQueue(size: size, memory: memory)
        device = Virtqueue(index: 1)
        device.indirectAllowed = indirect
        device.eventIndex = eventIndex
        try device.attach(size: UInt32(size), addresses: driver.addresses, memory: guest, format: .packed)
        device.resume(at: driver.availPosition.encoded)
    }

    func take(writable: Bool = false) -> ChainResult? {
        guard let n = device.availableCount(), n > 0 else { return nil }
        return device.nextChain(writable: writable, into: segments)
    }

    /// A buffer of `length` bytes filled with `seed`, seed+1, ...
    func buffer(_ length: Int, seed: UInt8, writable: Bool = false) -> DriverQueue.Buffer {
        let gpa = memory.allocate(length)
        for k in 0..<length { memory.host(gpa).storeBytes(of: seed &+ UInt8(truncatingIfNeeded: k), toByteOffset: k, as: UInt8.self) }
        return writable ? .writable(gpa, length: UInt32(length)) : .readable(gpa, length: UInt32(length))
    }

    var segmentBytes: [UInt8] {
        (0..<segments.count).flatMap { k in
            let s = segments.storage[k]
            return Array(UnsafeRawBufferPointer(start: s.base, count: s.length))
        }
    }
}

@Suite struct PackedRings {
    @Test func chainsGoRoundTheRingManyTimes() throws {
        // Size 10 (no power of two), chains of 1-4 descriptors: every lap flips both wrap counters.
        let p = try PackedPair(size: 10)
        var expectedIDs: [UInt16] = []
        for round in 0..<60 {
            let parts = 1 + round % 4
            let buffers = (0..<parts).map { p.buffer(7 + $0, seed: UInt8(round)) }
            guard let id = p.driver.add(buffers) else { Issue.record("driver ring full at round \(round)"); return }
            expectedIDs.append(id)
            guard case .chain(let head, let length) = p.take() else { Issue.record("no chain at round \(round)"); return }
            #expect(head == id)
            #expect(length == buffers.reduce(0) { $0 + Int($1.length) })
            let want = buffers.flatMap { b in (0..<Int(b.length)).map { UInt8(round) &+ UInt8($0) } }
            #expect(p.segmentBytes == want, "round \(round)")
            p.device.addUsed(head: head, length: UInt32(round))
            p.device.publishUsed()
            let used = p.driver.reapUsed()
            #expect(used.count == 1 && used.first?.id == id && used.first?.length == UInt32(round))
        }
        #expect(p.driver.freeDescriptors == 10)
        #expect(p.device.availableCount() == 0)
        #expect(PackedPosition(p.device.lastAvailIndex) == p.driver.availPosition)
        #expect(PackedPosition(p.device.usedIndex) == p.driver.usedPosition)
    }

    @Test func aBatchIsCountedTakenRewoundAndUsedInOrder() throws {
        let p = try PackedPair(size: 8)
        let ids = (0..<3).map { k in p.driver.add([p.buffer(100, seed: 0, writable: true), p.buffer(50, seed: 0, writable: true)])! }
        #expect(p.device.availableCount() == 3)
        guard case .chain(let first, 150) = p.take(writable: true), case .chain(let second, 150) = p.take(writable: true) else {
            Issue.record("chains not taken"); return
        }
        #expect([first, second] == Array(ids.prefix(2)))
        p.device.rewind(1)   // the second goes back, unused
        #expect(p.device.availableCount() == 2)
        p.device.addUsed(head: first, length: 60)
        guard case .chain(let again, _) = p.take(writable: true), case .chain(let third, _) = p.take(writable: true) else {
            Issue.record("chains not taken again"); return
        }
        #expect(again == ids[1] && third == ids[2])
        p.device.addUsed(head: again, length: 61)
        p.device.addUsed(head: third, length: 62)
        // The batch's first used descriptor gets its flags at the publish: before it the driver
        // sees none of the three, after it all of them.
        #expect(p.driver.reapUsed().isEmpty)
        p.device.publishUsed()
        #expect(p.driver.reapUsed().map(\.length) == [60, 61, 62])
        #expect(p.driver.freeDescriptors == 8)
    }

    @Test func indirectTablesAreReadInOrder() throws {
        let p = try PackedPair(size: 5)
        let buffers = (0..<5).map { p.buffer(10, seed: UInt8($0 * 10)) }
        let id = p.driver.addIndirect(buffers)!
        let taken = p.take()
        guard case .chain(id, 50) = taken else { Issue.record("indirect chain: \(String(describing: taken))"); return }
        #expect(p.segmentBytes == (0..<5).flatMap { k in (0..<10).map { UInt8(k * 10 + $0) } })
        p.device.addUsed(head: id, length: 0)
        // A table longer than the ring is refused (§2.8.5: a list is at most the queue size).
        let long = p.driver.addIndirect((0..<6).map { _ in p.buffer(1, seed: 0) })!
        #expect(p.take() == .bad(head: long, .badIndirectLength))
        let off = try PackedPair(size: 4, indirect: false)
        let id2 = off.driver.addIndirect([off.buffer(10, seed: 0)])!
        #expect(off.take() == .bad(head: id2, .indirectNotNegotiated))
    }

    @Test func faultyChainsAreCompletedEmpty() throws {
        let p = try PackedPair(size: 16)
        // Wrong direction.
        let a = p.driver.add([p.buffer(10, seed: 0, writable: true)])!
        #expect(p.take(writable: false) == .bad(head: a, .wrongDirection))
        // Outside guest memory.
        let b = p.driver.add([.readable(UInt64(p.memory.size) + 4096, length: 64)])!
        #expect(p.take() == .bad(head: b, .outOfMemory))
        // Indirect inside a chain, and an indirect table of a bad length.
        let at = p.driver.availPosition
        let table = p.memory.allocate(64, alignment: 16)
        p.driver.writeDescriptor(at.advanced(by: 1, size: 16).slot, address: table, length: 32, id: 9,
                                 flags: DescriptorFlags.indirect.rawValue | PackedDriverQueue.availableFlags(at.advanced(by: 1, size: 16)))
        p.driver.writeDescriptor(at.slot, address: p.buffer(8, seed: 0).address, length: 8, id: 0,
                                 flags: DescriptorFlags.next.rawValue | PackedDriverQueue.availableFlags(at))
        p.driver.skip(2, id: 9)
        #expect(p.take() == .bad(head: 9, .indirectWithNext))
        let c = p.driver.availPosition
        p.driver.writeDescriptor(c.slot, address: table, length: 20, id: 11, flags: DescriptorFlags.indirect.rawValue | PackedDriverQueue.availableFlags(c))
        p.driver.skip(1, id: 11)
        #expect(p.take() == .bad(head: 11, .badIndirectLength))
        // The ring goes on: each bad chain can be used, and a good one follows.
        for id: UInt16 in [a, b, 9, 11] { p.device.addUsed(head: id, length: 0) }
        p.device.publishUsed()
        #expect(p.driver.reapUsed().map(\.id) == [a, b, 9, 11])
        let d = p.driver.add([p.buffer(30, seed: 3)])!
        #expect(p.take() == .chain(head: d, length: 30))
        #expect(!p.device.broken)
    }

    @Test func chainsThatCannotEndBreakTheRing() throws {
        // Every descriptor says NEXT: the chain runs round the ring.
        let p = try PackedPair(size: 6)
        for k in 0..<6 {
            let pos = p.driver.availPosition.advanced(by: k, size: 6)
            p.driver.writeDescriptor(pos.slot, address: p.buffer(4, seed: 0).address, length: 4, id: 1,
                                     flags: DescriptorFlags.next.rawValue | PackedDriverQueue.availableFlags(p.driver.availPosition))
        }
        #expect(p.device.availableCount() == nil && p.device.broken)

        // A chain over descriptors still in flight.
        let q = try PackedPair(size: 4)
        let first = q.driver.add([q.buffer(4, seed: 0), q.buffer(4, seed: 0), q.buffer(4, seed: 0)])!
        guard case .chain(first, 12) = q.take() else { Issue.record("first chain"); return }
        // The driver (hostile) reuses slots 0-2, still in flight, for a 3-descriptor chain after slot 3.
        let at = q.driver.availPosition
        for k in 0..<3 {
            let pos = at.advanced(by: k, size: 4)
            q.driver.writeDescriptor(pos.slot, address: q.buffer(4, seed: 0).address, length: 4, id: 2,
                                     flags: (k < 2 ? DescriptorFlags.next.rawValue : 0) | PackedDriverQueue.availableFlags(pos))
        }
        #expect(q.take() == nil)
        #expect(q.device.broken, "\(q.device.brokenReason ?? "")")

        // A base beyond the ring.
        let r = try PackedPair(size: 4)
        r.device.resume(at: 7)
        #expect(r.device.broken)

        // A ring that ran, restarted at the initial base (QEMU after a back-end restart): the
        // descriptor there was used in that lap, so the base is refused, not followed.
        let s = try PackedPair(size: 4)
        let id = s.driver.add([s.buffer(4, seed: 0)])!
        _ = s.take()
        s.device.addUsed(head: id, length: 0)
        s.device.publishUsed()
        s.device.resume(at: PackedRingLayout.wrapBit)
        #expect(s.device.broken && s.device.brokenReason?.contains("stale") == true)
        // The right base (after the used chain) is taken.
        try s.device.attach(size: 4, addresses: s.driver.addresses, memory: s.guest, format: .packed)
        s.device.resume(at: s.driver.availPosition.encoded)
        #expect(!s.device.broken)
    }

    @Test func interruptsFollowTheDriversEventSuppression() throws {
        let p = try PackedPair(size: 8, eventIndex: true)
        func round() -> Bool {
            let id = p.driver.add([p.buffer(4, seed: 0)])!
            _ = p.take()
            p.device.addUsed(head: id, length: 0)
            _ = p.driver.reapUsed()
            return p.device.needsInterrupt()
        }
        p.driver.setInterrupts(flags: PackedRingLayout.eventEnable)
        #expect(round())
        p.driver.setInterrupts(flags: PackedRingLayout.eventDisable)
        #expect(!round())
        // DESC: interrupt once the used position passes slot 5 of this lap (now at 2).
        p.driver.setInterrupts(flags: PackedRingLayout.eventDescriptor, at: PackedPosition(5 | PackedRingLayout.wrapBit))
        #expect(!round() && !round() && !round())  // used at 3, 4, 5
        #expect(round())                           // used at 6: passed 5
        #expect(!round())
        // Kicks: the device turns them off and on in its own area.
        p.device.disableKicks()
        #expect(p.driver.deviceSuppressesKicks)
        p.device.enableKicks()
        #expect(!p.driver.deviceSuppressesKicks)
    }

    @Test func layoutsAreChecked() throws {
        let memory = try DriverMemory(size: 1 << 20)
        let guest = try GuestMemory(specs: [memory.regionSpec], descriptors: [memory.descriptor])
        let q = Virtqueue(index: 0)
        let base = UInt64(UInt(bitPattern: memory.mapping.base))
        let good = RingAddresses(descriptorTable: FrontEndAddress(base), availRing: FrontEndAddress(base + 4096), usedRing: FrontEndAddress(base + 8192))
        try q.attach(size: 100, addresses: good, memory: guest, format: .packed)
        #expect(q.format == .packed)
        for size: UInt32 in [0, 32769, .max] {
            #expect(throws: RingSetupError.badPackedSize(size)) { try q.attach(size: size, addresses: good, memory: guest, format: .packed) }
        }
        var a = good
        a.descriptorTable.value += 8
        #expect(throws: RingSetupError.misaligned("descriptor ring")) { try q.attach(size: 100, addresses: a, memory: guest, format: .packed) }
        a = good
        a.usedRing.value += 2
        #expect(throws: RingSetupError.misaligned("device event area")) { try q.attach(size: 100, addresses: a, memory: guest, format: .packed) }
        a = good
        a.descriptorTable = FrontEndAddress(base + UInt64(memory.size) - 64)
        #expect(throws: RingSetupError.notInGuestMemory("descriptor ring")) { try q.attach(size: 100, addresses: a, memory: guest, format: .packed) }
        // The same queue goes back to split.
        try q.attach(size: 256, addresses: good, memory: guest)
        #expect(q.format == .split)
    }
}

@Suite struct HostilePackedRings {
    /// Seeded random descriptor rings (random addresses, lengths, ids and all flag bits, AVAIL
    /// and USED included): every chain the device takes has every segment inside guest memory,
    /// or is refused; a ring that breaks is broken on purpose (a chain without an end, or over
    /// descriptors in flight) and placed again. Used positions always catch up with avail ones.
    @Test(arguments: [5, 6, 7, 8] as [UInt64])
    func randomisedRings(seed: UInt64) throws {
        var rng = SeededRandom(seed: seed)
        let size = Int.random(in: 3...40, using: &rng)
        let p = try PackedPair(size: size)
        let lo = UInt(bitPattern: p.guest.regions[0].host)
        let hi = lo + UInt(p.memory.size)
        var outcomes = (good: 0, bad: 0, broken: 0)
        for _ in 0..<3000 {
            for slot in 0..<size where Int.random(in: 0...2, using: &rng) == 0 {
                let addr: UInt64 = switch UInt8.random(in: 0...9, using: &rng) {
                case 0: .random(in: 0...UInt64.max, using: &rng)
                case 1: UInt64(p.memory.size) - .random(in: 0...64, using: &rng)
                default: .random(in: 0..<UInt64(p.memory.size), using: &rng)
                }
                let len: UInt32 = Bool.random(using: &rng) ? .random(in: 0...2048, using: &rng) : .random(in: 0...UInt32.max, using: &rng)
                // Mostly plausible flags (NEXT/WRITE/INDIRECT with the lap's AVAIL/USED), sometimes anything.
                let lap = PackedDriverQueue.availableFlags(Bool.random(using: &rng) ? p.driver.availPosition : PackedPosition(0))
                let flags = Int.random(in: 0...4, using: &rng) == 0 ? UInt16.random(in: 0...UInt16.max, using: &rng)
                                                                   : UInt16.random(in: 0...7, using: &rng) | lap
                p.driver.writeDescriptor(slot, address: addr, length: len, id: .random(in: 0...UInt16.max, using: &rng), flags: flags)
            }
            var taken: [UInt16] = []
            let writable = Bool.random(using: &rng)
            while let n = p.device.availableCount(), n > 0, taken.count < size {
                switch p.device.nextChain(writable: writable, into: p.segments) {
                case .chain(let id, _)?:
                    outcomes.good += 1
                    for k in 0..<p.segments.count {
                        let s = p.segments.storage[k]
                        let start = UInt(bitPattern: s.base)
                        #expect(start >= lo && start + UInt(s.length) <= hi)
                    }
                    taken.append(id)
                case .bad(let id, _)?:
                    outcomes.bad += 1
                    taken.append(id)
                case nil:
                    break
                }
                if p.device.broken { break }
            }
            if Bool.random(using: &rng) && taken.count > 1 {
                p.device.rewind(1)
                taken.removeLast()
            }
            for id in taken { p.device.addUsed(head: id, length: 0) }
            if p.device.broken {
                outcomes.broken += 1
                p.device.resume(at: PackedPosition(UInt16.random(in: 0..<UInt16(size), using: &rng) | PackedRingLayout.wrapBit).encoded)
                try p.device.attach(size: UInt32(size), addresses: p.driver.addresses, memory: p.guest, format: .packed)
                p.device.resume(at: p.device.lastAvailIndex)
            }
            #expect(p.device.usedIndex == p.device.lastAvailIndex, "every chain taken was used")
        }
        #expect(outcomes.good > 0 && outcomes.bad > 0 && outcomes.broken > 0, "\(outcomes)")
    }
}
