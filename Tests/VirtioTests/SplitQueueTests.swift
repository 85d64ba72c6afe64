import Glibc
import Testing
import TestSupport
import VhostSystem
@testable import Virtio

/// A driver ring and the device queue over the same memory.
final class RingPair {
    let memory: DriverMemory
    let guest: GuestMemory
    let driver: DriverQueue
    let device: Virtqueue
    let segments = SegmentList(capacity: Virtqueue.maxSegmentsPerChain)

    init(size: Int = 16, indirect: Bool = true, eventIndex: Bool = false) throws {
        memory = try DriverMemory(size: 4 << 20)
        guest = try GuestMemory(specs: [memory.regionSpec], descriptors: [memory.descriptor])
        driver = DriverQueue(size: size, memory: memory)
        device = Virtqueue(index: 1)
        device.indirectAllowed = indirect
        device.eventIndex = eventIndex
        try device.attach(size: UInt32(size), addresses: driver.addresses, memory: guest)
    }


    func take(writable: Bool = false) -> ChainResult? {
        guard let n = device.availableCount(), n > 0 else { return nil }
        return device.nextChain(writable: writable, into: segments)
    }
}

@Suite struct RingSetup {
    @Test func refusesBadLayouts() throws {
        let memory = try DriverMemory(size: 1 << 20)
        let guest = try GuestMemory(specs: [memory.regionSpec], descriptors: [memory.descriptor])
        let q = Virtqueue(index: 0)
        let base = UInt64(UInt(bitPattern: memory.mapping.base))
        let good = RingAddresses(descriptorTable: FrontEndAddress(base), availRing: FrontEndAddress(base + 4096), usedRing: FrontEndAddress(base + 8192))
        try q.attach(size: 256, addresses: good, memory: guest)
        for size: UInt32 in [0, 3, 100, 65536, .max] {
            #expect(throws: RingSetupError.badSize(size)) { try q.attach(size: size, addresses: good, memory: guest) }
        }
        var a = good
        a.descriptorTable.value += 8
        #expect(throws: RingSetupError.misaligned("descriptor table")) { try q.attach(size: 256, addresses: a, memory: guest) }
        a = good
        a.availRing.value += 1
        #expect(throws: RingSetupError.misaligned("avail ring")) { try q.attach(size: 256, addresses: a, memory: guest) }
        a = good
        a.usedRing.value += 2
        #expect(throws: RingSetupError.misaligned("used ring")) { try q.attach(size: 256, addresses: a, memory: guest) }
        a = good
        a.usedRing = FrontEndAddress(base + UInt64(memory.size) - 16) // used ring runs off the end
        #expect(throws: RingSetupError.notInGuestMemory("used ring")) { try q.attach(size: 256, addresses: a, memory: guest) }
        a = good
        a.descriptorTable = 0x10 // a guest-physical address is not a front-end address
        #expect(throws: RingSetupError.notInGuestMemory("descriptor table")) { try q.attach(size: 256, addresses: a, memory: guest) }
    }
}

@Suite struct RingTraffic {
    @Test func producerConsumerWrapsAround() throws {
        let r = try RingPair(size: 8)
        let buffer = r.memory.allocate(4096)
        var seen = 0
        // 5 rounds of 7 chains on an 8-entry ring: indices wrap several times.
        for round in 0..<5 {
            for k in 0..<7 {
                _ = r.driver.add([.readable(buffer + UInt64(k * 64), length: 60)])
            }
            r.driver.publish()
            #expect(r.device.availableCount() == 7)
            while let c = r.take() {
                guard case .chain(let head, let length) = c else { Issue.record("bad chain \(c)"); return }
                #expect(length == 60)
                #expect(r.segments.count == 1)
                #expect(r.segments.storage[0].base == r.guest.translate(guestPhysical: GuestPhysicalAddress(buffer + UInt64((seen % 7) * 64)), length: 60))
                r.device.addUsed(head: head, length: UInt32(round))
                seen += 1
            }
            r.device.publishUsed()
            let used = r.driver.reapUsed()
            #expect(used.count == 7)
            #expect(used.allSatisfy { $0.length == UInt32(round) })
        }
        #expect(seen == 35)
        #expect(r.driver.freeCount == 8)
    }

    @Test func indirectTableIsWalked() throws {
        let r = try RingPair(size: 8)
        let table = r.memory.allocate(3 * 16, alignment: 16)
        let data = r.memory.allocate(300)
        for k in 0..<3 {
            let d = r.memory.host(table) + 16 * k
            d.storeBytes(of: data + UInt64(k * 100), as: UInt64.self)
            d.storeBytes(of: UInt32(100), toByteOffset: 8, as: UInt32.self)
            d.storeBytes(of: UInt16(k < 2 ? 1 : 0), toByteOffset: 12, as: UInt16.self)
            d.storeBytes(of: UInt16(k + 1), toByteOffset: 14, as: UInt16.self)
        }
        r.driver.writeDescriptor(0, address: table, length: 48, flags: 4, next: 0)
        r.driver.pushAvail(head: 0)
        r.driver.publish()
        #expect(r.take() == .chain(head: 0, length: 300))
        #expect(r.segments.count == 3)
    }

    @Test func bufferSpanningTwoRegionsIsSplit() throws {
        // One memfd presented as two adjacent guest-physical regions.
        let memory = try DriverMemory(size: 1 << 20)
        let base = UInt64(UInt(bitPattern: memory.mapping.base))
        let guest = try GuestMemory(specs: [
            GuestRegionSpec(guestPhysicalAddress: 0, size: 1 << 19, userAddress: FrontEndAddress(base), mmapOffset: 0),
            GuestRegionSpec(guestPhysicalAddress: GuestPhysicalAddress(1 << 19), size: 1 << 19, userAddress: FrontEndAddress(base + (1 << 19)), mmapOffset: 1 << 19),
        ], descriptors: [memory.descriptor, memory.descriptor])
        let driver = DriverQueue(size: 8, memory: memory)
        let q = Virtqueue(index: 1)
        try q.attach(size: 8, addresses: driver.addresses, memory: guest)
        _ = driver.add([.readable((1 << 19) - 100, length: 300)])
        driver.publish()
        let segments = SegmentList(capacity: 8)
        #expect(q.availableCount() == 1)
        #expect(q.nextChain(writable: false, into: segments) == .chain(head: 0, length: 300))
        #expect(segments.count == 2)
        #expect(segments.storage[0].length == 100 && segments.storage[1].length == 200)
    }

    @Test func eventIndexInterruptsFollowUsedEvent() throws {
        let r = try RingPair(size: 16, eventIndex: true)
        let buffer = r.memory.allocate(64)
        func complete(_ n: Int) {
            for _ in 0..<n { _ = r.driver.add([.writable(buffer, length: 64)]) }
            r.driver.publish()
            while case .chain(let head, _)? = r.take(writable: true) { r.device.addUsed(head: head, length: 64) }
            r.device.publishUsed()
            _ = r.driver.reapUsed()
        }
        complete(1)
        #expect(r.device.needsInterrupt()) // first one always signals
        r.driver.setUsedEvent(5) // "interrupt me when used idx passes 5"
        complete(2) // used idx 3
        #expect(!r.device.needsInterrupt())
        complete(3) // used idx 6: crossed 5
        #expect(r.device.needsInterrupt())
        complete(1) // 7: event still 5, already signalled past it
        #expect(!r.device.needsInterrupt())
        // Kick suppression: avail_event follows what we consumed when we ask for kicks.
        r.device.enableKicks()
        #expect(r.driver.availEvent == r.device.lastAvailIndex)
    }

    @Test func noInterruptFlagWithoutEventIndex() throws {
        let r = try RingPair(size: 8)
        #expect(r.device.needsInterrupt())
        (r.memory.host(r.driver.availRing)).storeBytes(of: UInt16(1), as: UInt16.self)
        #expect(!r.device.needsInterrupt())
        r.device.disableKicks()
        #expect(r.driver.deviceSuppressesKicks)
        r.device.enableKicks()
        #expect(!r.driver.deviceSuppressesKicks)
    }
}

@Suite struct HostileChains {
    func single(_ r: RingPair, _ head: Int, _ addr: UInt64, _ len: UInt32, _ flags: UInt16, _ next: UInt16 = 0) {
        r.driver.writeDescriptor(head, address: addr, length: len, flags: flags, next: next)
        r.driver.pushAvail(head: UInt16(head))
        r.driver.publish()
    }

    @Test func handMadeChainsAreRefused() throws {
        let r = try RingPair(size: 8)
        let buf = r.memory.allocate(4096)
        let size = UInt64(r.memory.size)
        // Loop: 0 -> 1 -> 0.
        r.driver.writeDescriptor(0, address: buf, length: 10, flags: 1, next: 1)
        r.driver.writeDescriptor(1, address: buf, length: 10, flags: 1, next: 0)
        r.driver.pushAvail(head: 0); r.driver.publish()
        #expect(r.take() == .bad(head: 0, .tooLong))
        // Next out of range.
        single(r, 2, buf, 10, 1, 8)
        #expect(r.take() == .bad(head: 2, .nextOutOfRange))
        // Address outside guest memory, at the end, and overflowing.
        single(r, 3, size, 1, 0)
        #expect(r.take() == .bad(head: 3, .outOfMemory))
        single(r, 3, size - 10, 11, 0)
        #expect(r.take() == .bad(head: 3, .outOfMemory))
        single(r, 3, .max - 4, 100, 0)
        #expect(r.take() == .bad(head: 3, .outOfMemory))
        // Huge length.
        single(r, 4, buf, .max, 0)
        #expect(r.take() == .bad(head: 4, .packetTooLarge))
        // Writable descriptor on a transmit queue, and the reverse.
        single(r, 5, buf, 64, 2)
        #expect(r.take(writable: false) == .bad(head: 5, .wrongDirection))
        single(r, 5, buf, 64, 0)
        #expect(r.take(writable: true) == .bad(head: 5, .wrongDirection))
        // Indirect: bad lengths, next flag, out of memory, nested.
        single(r, 6, buf, 0, 4)
        #expect(r.take() == .bad(head: 6, .badIndirectLength))
        single(r, 6, buf, 17, 4)
        #expect(r.take() == .bad(head: 6, .badIndirectLength))
        single(r, 6, buf, 16 * 9, 4) // longer than the queue
        #expect(r.take() == .bad(head: 6, .badIndirectLength))
        single(r, 6, buf, 16, 5, 1)
        #expect(r.take() == .bad(head: 6, .indirectWithNext))
        single(r, 6, size - 8, 16, 4)
        #expect(r.take() == .bad(head: 6, .indirectOutOfMemory))
        let table = r.memory.allocate(32, alignment: 16)
        (r.memory.host(table)).storeBytes(of: table, as: UInt64.self)
        (r.memory.host(table) + 8).storeBytes(of: UInt32(16), as: UInt32.self)
        (r.memory.host(table) + 12).storeBytes(of: UInt16(4), as: UInt16.self)
        single(r, 7, table, 16, 4)
        #expect(r.take() == .bad(head: 7, .nestedIndirect))
        // The walker never left the ring in a bad state: a good chain still works.
        _ = r.driver.reapUsed()
        single(r, 0, buf, 64, 0)
        #expect(r.take() == .chain(head: 0, length: 64))
    }

    @Test func indirectWithoutNegotiationIsRefused() throws {
        let r = try RingPair(size: 8, indirect: false)
        let table = r.memory.allocate(16, alignment: 16)
        single(r, 0, table, 16, 4)
        #expect(r.take() == .bad(head: 0, .indirectNotNegotiated))
    }

    @Test func brokenRingStopsService() throws {
        let r = try RingPair(size: 8)
        // Head out of range: the ring cannot even be completed, so it is marked broken.
        r.driver.pushAvail(head: 9); r.driver.publish()
        #expect(r.device.availableCount() == 1)
        #expect(r.device.nextChain(writable: false, into: r.segments) == nil)
        #expect(r.device.broken)
        #expect(r.device.availableCount() == nil)
        // Avail index far ahead of what we consumed.
        let r2 = try RingPair(size: 8)
        r2.driver.forceAvailIndex(9)
        #expect(r2.device.availableCount() == nil)
        #expect(r2.device.broken)
        #expect(r2.device.brokenReason != nil)
    }

    @Test func tooManySegmentsIsRefused() throws {
        let r = try RingPair(size: 512)
        let buf = r.memory.allocate(4096)
        for k in 0..<300 { r.driver.writeDescriptor(k, address: buf, length: 1, flags: 1, next: UInt16(k + 1)) }
        r.driver.writeDescriptor(300, address: buf, length: 1, flags: 0, next: 0)
        r.driver.pushAvail(head: 0); r.driver.publish()
        #expect(r.take() == .bad(head: 0, .tooManySegments))
    }

    /// Seeded random descriptor tables (thousands of chains): the walker either returns a chain
    /// whose every segment lies inside guest memory, or refuses it. It never traps or spins.
    @Test(arguments: [11, 22, 33, 44] as [UInt64])
    func randomisedChains(seed: UInt64) throws {
        var rng = SeededRandom(seed: seed)
        let r = try RingPair(size: 64)
        // The device maps the memfd on its own: check against its mapping.
        let lo = UInt(bitPattern: r.guest.regions[0].host)
        let hi = lo + UInt(r.memory.size)
        var good = 0
        var bad = 0
        for _ in 0..<4000 {
            for i in 0..<64 {
                let addr: UInt64 = switch UInt8.random(in: 0...9, using: &rng) {
                case 0: .random(in: 0...UInt64.max, using: &rng)
                case 1: UInt64(r.memory.size) - .random(in: 0...64, using: &rng)
                default: .random(in: 0..<UInt64(r.memory.size), using: &rng)
                }
                let len: UInt32 = Bool.random(using: &rng) ? .random(in: 0...2048, using: &rng) : .random(in: 0...UInt32.max, using: &rng)
                let flags = UInt16.random(in: 0...7, using: &rng)
                let next = UInt16.random(in: 0...70, using: &rng)
                r.driver.writeDescriptor(i, address: addr, length: len, flags: flags, next: next)
            }
            r.driver.pushAvail(head: UInt16.random(in: 0..<64, using: &rng))
            r.driver.publish()
            switch r.take(writable: Bool.random(using: &rng)) {
            case .chain(let head, _)?:
                good += 1
                for k in 0..<r.segments.count {
                    let s = r.segments.storage[k]
                    let start = UInt(bitPattern: s.base)
                    #expect(start >= lo && start + UInt(s.length) <= hi)
                }
                r.device.addUsed(head: head, length: 0)
            case .bad(let head, _)?:
                bad += 1
                r.device.addUsed(head: head, length: 0)
            case nil:
                Issue.record("ring broke on a valid head"); return
            }
            r.device.publishUsed()
        }
        #expect(good + bad == 4000)
        #expect(bad > 0)
        #expect(!r.device.broken)
    }
}
