import Glibc
import Testing
import TestSupport
import VALESwitch
@testable import VhostNetmapBackend
import VhostSystem
import VhostUser
import Virtio

/// Messages a broken or hostile front-end might send, one device at a time. Each must be
/// refused with a ProtocolError, and the device beside it on the switch keeps working.
@Suite struct HostileMessages {
    let vale = VALESwitch(name: "vale0")
    let victim: TestGuest
    let bystanderA: TestGuest
    let bystanderB: TestGuest

    init() throws {
        victim = try TestGuest("v", on: vale, mac: 9)
        bystanderA = try TestGuest("a", on: vale, mac: 1)
        bystanderB = try TestGuest("b", on: vale, mac: 2)
        try bystanderA.start()
        try bystanderB.start()
    }

    /// The other two ports still exchange traffic, byte for byte. Besides it, B may only have
    /// received broadcasts (the victim may legitimately announce itself with SEND_RARP).
    func bystandersStillWork(_ tag: UInt8 = 0) {
        bystanderB.postReceiveBuffers(8)
        let f = ethernet(to: bystanderB.mac, from: bystanderA.mac, payload: 80, seed: tag)
        bystanderA.send(f)
        pump(vale)
        let got = bystanderB.receive().map(\.frame)
        let broadcast: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        #expect(got.filter { Array($0.prefix(6)) != broadcast } == [f])
    }

    func refused(_ m: VhostUserMessage, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(throws: ProtocolError.self, sourceLocation: sourceLocation) { try victim.handle(m) }
    }

    /// Refused by exactly this rule.
    func refused(_ m: VhostUserMessage, by rule: ProtocolError, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(throws: rule, sourceLocation: sourceLocation) { try victim.handle(m) }
    }

    /// RESET_DEVICE and SET/GET_STATUS only once their protocol features are negotiated; a status
    /// must fit its byte; a payload where none belongs is a framing error.
    @Test func resetAndStatusNeedTheirProtocolFeatures() throws {
        refused(message(.resetDevice), by: .refused(.resetDevice, .notNegotiated(.resetDevice)))
        refused(message(.getStatus), by: .refused(.getStatus, .notNegotiated(.status)))
        refused(message(.setStatus, u64(1)), by: .refused(.setStatus, .notNegotiated(.status)))
        try victim.handle(message(.setProtocolFeatures, u64(ProtocolFeatures([.status, .resetDevice]).rawValue)))
        refused(message(.setStatus, u64(0x100)), by: .refused(.setStatus, .statusNotAByte(0x100)))
        refused(message(.setStatus, [1, 2, 3, 4]))
        refused(message(.resetDevice, u64(0)))
        refused(message(.getStatus, u64(0)))
        try victim.handle(message(.resetDevice))
        bystandersStillWork()
    }

    @Test func outOfOrderMessagesAreRefused() throws {
        let q = DriverQueue(size: 64, memory: victim.memory)
        let a = q.addresses
        let addr = VringAddress(index: 0, flags: 0, descriptorTable: a.descriptorTable.value, usedRing: a.usedRing.value, availRing: a.availRing.value, log: 0)
        // Ring address before any memory table.
        try victim.handle(message(.setVringNum, VringState(index: 0, num: 64).encoded()))
        refused(message(.setVringAddr, addr.encoded()), by: .refused(.setVringAddr, .noMemoryTable))
        // Kick before the ring is set up.
        refused(message(.setVringKick, u64(0), fds: [try EventFD.make()]), by: .refused(.setVringKick, .ringNotSetUp(0)))
        // Enable before PROTOCOL_FEATURES is accepted (DPDK's order after a reconnect); only a
        // non-boolean is refused.
        try victim.handle(message(.setVringEnable, VringState(index: 0, num: 1).encoded()))
        refused(message(.setVringEnable, VringState(index: 0, num: 2).encoded()), by: .refused(.setVringEnable, .enableNotBoolean(2)))
        // RARP / MTU without their protocol features.
        refused(message(.sendRARP, u64(1)), by: .refused(.sendRARP, .notNegotiated(.rarp)))
        refused(message(.netSetMTU, u64(1500)), by: .refused(.netSetMTU, .notNegotiated(.mtu)))
        // Address before the ring size.
        try victim.handle(message(.setMemTable, MemoryTable(regions: [victim.region]).encoded(), fds: [victim.memory.descriptor]))
        var addr1 = addr
        addr1.index = 1
        refused(message(.setVringAddr, addr1.encoded()), by: .refused(.setVringAddr, .ringHasNoSize(1)))
        bystandersStillWork()
    }

    @Test func badIndicesSizesAndFlagsAreRefused() throws {
        try victim.start()
        refused(message(.setVringNum, VringState(index: 2, num: 64).encoded()), by: .refused(.setVringNum, .ringIndexOutOfRange(2, rings: 2)))
        refused(message(.setVringNum, VringState(index: .max, num: 64).encoded()), by: .refused(.setVringNum, .ringIndexOutOfRange(.max, rings: 2)))
        refused(message(.setVringCall, u64(7), fds: [try EventFD.make()]), by: .refused(.setVringCall, .ringIndexOutOfRange(7, rings: 2)))
        refused(message(.getVringBase, VringState(index: 255, num: 0).encoded()), by: .refused(.getVringBase, .ringIndexOutOfRange(255, rings: 2)))
        refused(message(.setVringEnable, VringState(index: 0, num: 2).encoded()), by: .refused(.setVringEnable, .enableNotBoolean(2)))
        // Running rings cannot be resized or rebased.
        refused(message(.setVringNum, VringState(index: 0, num: 128).encoded()), by: .refused(.setVringNum, .ringRunning(0)))
        refused(message(.setVringBase, VringState(index: 1, num: 5).encoded()), by: .refused(.setVringBase, .ringRunning(1)))
        // Features not offered; protocol features not offered.
        refused(message(.setFeatures, u64(1 << 63)), by: .refused(.setFeatures, .featuresNotOffered(1 << 63)))
        refused(message(.setProtocolFeatures, u64(1 << 20)), by: .refused(.setProtocolFeatures, .protocolFeaturesNotOffered(1 << 20)))
        refused(message(.netSetMTU, u64(40)), by: .refused(.netSetMTU, .mtuOutOfRange(40)))
        refused(message(.netSetMTU, u64(1 << 20)), by: .refused(.netSetMTU, .mtuOutOfRange(1 << 20)))
        // Unimplemented requests.
        refused(message(.getConfig, [UInt8](repeating: 0, count: 12)), by: .unsupported(.getConfig))
        refused(message(.iotlbMessage, [UInt8](repeating: 0, count: 64)), by: .unsupported(.iotlbMessage))
        bystandersStillWork()
    }

    @Test func ringLayoutsOutsideMemoryAreRefused() throws {
        try victim.start()
        try victim.handle(message(.getVringBase, VringState(index: 0, num: 0).encoded()))
        try victim.handle(message(.setVringNum, VringState(index: 0, num: 256).encoded()))
        let base = victim.memory.userAddress(0).value
        let end = base + UInt64(victim.memory.size)
        for (d, av, u) in [(end - 16, base, base), (base, end, base), (base, base, end - 8), (0, base, base),
                           (UInt64.max - 15, base, base), (base + 8, base, base), (base, base + 1, base), (base, base, base + 2)] {
            refused(message(.setVringAddr, VringAddress(index: 0, flags: 0, descriptorTable: d, usedRing: u, availRing: av, log: 0).encoded()))
        }
        refused(message(.setVringAddr, VringAddress(index: 0, flags: 6, descriptorTable: base, usedRing: base + 8192, availRing: base + 4096, log: 0).encoded()),
                by: .refused(.setVringAddr, .unknownAddressFlags(6)))
        bystandersStillWork()
    }

    @Test func badMemoryTablesAreRefusedAndTheOldOneStays() throws {
        try victim.start()
        victim.postReceiveBuffers(4)
        let small = try MemFD.make(name: "small", size: 4096)
        let r = victim.region
        for bad in [
            MemoryRegionDescription(guestPhysicalAddress: 0, size: 1 << 20, userAddress: 0x1000, mmapOffset: 0), // beyond file end
            MemoryRegionDescription(guestPhysicalAddress: .max - 100, size: 4096, userAddress: 0x1000, mmapOffset: 0),
            MemoryRegionDescription(guestPhysicalAddress: 0, size: 0, userAddress: 0x1000, mmapOffset: 0),
            MemoryRegionDescription(guestPhysicalAddress: 0, size: 4096, userAddress: 0x1000, mmapOffset: 4096),
        ] {
            refused(message(.setMemTable, MemoryTable(regions: [bad]).encoded(), fds: [small]))
        }
        // A valid table that no longer holds the running rings is refused too.
        refused(message(.setMemTable, MemoryTable(regions: [MemoryRegionDescription(guestPhysicalAddress: 0, size: 4096, userAddress: 0x1000, mmapOffset: 0)]).encoded(), fds: [small]))
        // Two overlapping regions.
        refused(message(.setMemTable, MemoryTable(regions: [r, r]).encoded(), fds: [victim.memory.descriptor, victim.memory.descriptor]))
        // The victim still works with its old table.
        bystanderA.send(ethernet(to: victim.mac, from: bystanderA.mac, payload: 50))
        pump(vale)
        #expect(victim.receive().count == 1)
        // A new valid table (same memory) is accepted while rings run.
        try victim.handle(message(.setMemTable, MemoryTable(regions: [r]).encoded(), fds: [victim.memory.descriptor]))
        bystanderA.send(ethernet(to: victim.mac, from: bystanderA.mac, payload: 50))
        pump(vale)
        #expect(victim.receive().count == 1)
        bystandersStillWork()
    }

    @Test func nonEventDescriptorsAreRefused() throws {
        try victim.start()
        let (s1, _) = try UnixSocket.pair()
        let file = try MemFD.make(name: "notanevent", size: 8)
        for fd in [s1, file] {
            refused(message(.setVringKick, u64(1), fds: [fd]))
            refused(message(.setVringCall, u64(0), fds: [fd]))
            refused(message(.setVringErr, u64(0), fds: [fd]))
        }
        bystandersStillWork()
    }

    /// Seeded random message streams: well-formed headers with random requests, payloads and
    /// descriptors, thousands of them. Each is handled or refused; the bystanders keep working,
    /// and once the device is reset no descriptor it was given is still open.
    @Test(arguments: [5, 6, 7] as [UInt64])
    func randomisedMessageStreams(seed: UInt64) throws {
        var rng = SeededRandom(seed: seed)
        final class Weak { weak var descriptor: OwnedDescriptor?; init(_ d: OwnedDescriptor) { descriptor = d } }
        var handedOver: [Weak] = []
        /// A new descriptor (dup) for each message, so each one's lifetime can be followed.
        func fresh(_ d: OwnedDescriptor) -> OwnedDescriptor {
            let copy = OwnedDescriptor(adopting: dup(d.rawValue))
            handedOver.append(Weak(copy))
            return copy
        }
        do {
            let eventfd = try EventFD.make()
            let requests: [VhostUserRequest] = [.getFeatures, .setFeatures, .setOwner, .resetOwner, .setMemTable, .setVringNum,
                                                .setVringAddr, .setVringBase, .getVringBase, .setVringKick, .setVringCall, .setVringErr,
                                                .getProtocolFeatures, .setProtocolFeatures, .getQueueNum, .setVringEnable, .sendRARP,
                                                .netSetMTU, .setLogBase, .getConfig, .setStatus, .getStatus, .resetDevice, .setLogFD,
                                                .getMaxMemSlots, .addMemReg, .remMemReg, .getInflightFD, .setInflightFD]
            let base = victim.memory.userAddress(0).value
            var handled = 0
            for _ in 0..<3000 {
                let r = requests.randomElement(using: &rng)!
                var payload: [UInt8]
                var fds: [OwnedDescriptor] = []
                switch UInt8.random(in: 0...3, using: &rng) {
                case 0: // plausible payloads
                    switch r {
                    case .setVringAddr:
                        payload = VringAddress(index: .random(in: 0...2, using: &rng), flags: 0,
                                               descriptorTable: base + .random(in: 0...0x100000, using: &rng) & ~15,
                                               usedRing: base + .random(in: 0...0x100000, using: &rng) & ~3,
                                               availRing: base + .random(in: 0...0x100000, using: &rng) & ~1, log: 0).encoded()
                    case .setMemTable:
                        payload = MemoryTable(regions: [victim.region]).encoded()
                        fds = [fresh(victim.memory.descriptor)]
                    case .setVringKick, .setVringCall, .setVringErr:
                        payload = u64(.random(in: 0...2, using: &rng))
                        fds = [fresh(eventfd)]
                    case .setFeatures:
                        payload = u64(VhostNetDevice.offeredFeatures.rawValue & .random(in: 0...UInt64.max, using: &rng))
                    case .setLogBase: // the victim's own memory file as its log, any size and offset
                        payload = LogRegion(size: .random(in: 0...(1 << 21), using: &rng), offset: .random(in: 0...(1 << 20), using: &rng) & ~4095).encoded()
                        fds = [fresh(victim.memory.descriptor)]
                    case .setProtocolFeatures:
                        payload = u64(VhostNetDevice.offeredProtocolFeatures.rawValue & .random(in: 0...UInt64.max, using: &rng))
                    case .addMemReg, .remMemReg: // slices of the victim's memory file, anywhere
                        let size = UInt64.random(in: 0...4, using: &rng) << 20
                        let offset = UInt64.random(in: 0...16, using: &rng) << 20
                        payload = SingleMemoryRegion(MemoryRegionDescription(
                            guestPhysicalAddress: .random(in: 0...32, using: &rng) << 20, size: size,
                            userAddress: base + (.random(in: 0...16, using: &rng) << 20), mmapOffset: offset)).encoded()
                        fds = r == .addMemReg || Bool.random(using: &rng) ? [fresh(victim.memory.descriptor)] : []
                    case .getInflightFD, .setInflightFD: // the victim's memory file as the buffer: rings over it track into guest memory
                        let queues = UInt16.random(in: 0...3, using: &rng), size = UInt16(1) << UInt16.random(in: 0...9, using: &rng)
                        let exact = InflightRegion.byteCount(queueCount: Int(queues), queueSize: Int(size))
                        payload = InflightBufferDescription(mmapSize: Bool.random(using: &rng) ? exact : .random(in: 0...(1 << 21), using: &rng),
                                                            mmapOffset: UInt64.random(in: 0...64, using: &rng) << 12, queueCount: queues, queueSize: size).encoded()
                        fds = r == .setInflightFD ? [fresh(victim.memory.descriptor)] : []
                    default:
                        payload = VringState(index: .random(in: 0...2, using: &rng), num: 1 << UInt32.random(in: 0...16, using: &rng)).encoded()
                    }
                default: // noise
                    payload = (0..<Int.random(in: 0...48, using: &rng)).map { _ in .random(in: 0...255, using: &rng) }
                    if Bool.random(using: &rng) { fds = [fresh(eventfd)] }
                }
                if (try? victim.handle(message(r, payload, fds: fds))) != nil { handled += 1 }
                if Int.random(in: 0..<200, using: &rng) == 0 { bystandersStillWork(UInt8(handled & 0xff)) }
                // If the victim got rings running, give it some junk traffic too.
                pump(vale, passes: 2)
            }
            #expect(handled > 0)
            bystandersStillWork()
            victim.device.reset(reason: "end of test")
        }
        #expect(handedOver.count > 100)
        let stillOpen = handedOver.filter { $0.descriptor != nil }.count
        #expect(stillOpen == 0, "\(stillOpen) descriptors handed to the device are still open after its reset")
    }
}

/// A guest that corrupts its own rings: only its own rings stop.
@Suite struct HostileGuest {
    @Test func brokenRingIsIsolated() throws {
        let (vale, evil, a, b) = try bystandersAndSubject("evil", mac: 6)
        try evil.start()
        let errorFD = try EventFD.make()
        try evil.handle(message(.setVringErr, u64(1), fds: [errorFD]))
        // Avail index 1000 entries ahead on a 256-entry ring.
        evil.tx[0].forceAvailIndex(1000)
        b.postReceiveBuffers(8)
        a.send(ethernet(to: b.mac, from: a.mac, payload: 64))
        pump(vale)
        #expect(b.receive().count == 1)
        #expect(EventFD.drain(errorFD.rawValue) == 1) // the front-end was told
        #expect(evil.device.port.queues[1].broken)
        // A broken RX ring on the destination only drops what is for it.
        evil.rx[0].pushAvail(head: 4000)
        evil.rx[0].publish()
        a.send(ethernet(to: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], from: a.mac, payload: 64))
        pump(vale)
        #expect(b.receive().count == 1)
        #expect(evil.device.port.queues[0].broken)
        // A reset (reconnect) of the evil device clears it.
        evil.device.reset(reason: "test")
        #expect(!evil.device.port.queues[0].broken)
    }

    @Test func badChainsAreCompletedWithZeroAndCounted() throws {
        let (vale, a, b) = try startedPair()
        b.postReceiveBuffers(8)
        let q = a.tx[0]
        q.writeDescriptor(0, address: UInt64(a.memory.size) + 5, length: 100, flags: 0, next: 0) // outside memory
        q.writeDescriptor(1, address: 0, length: 100, flags: 2, next: 0) // writable on TX
        q.writeDescriptor(2, address: 0, length: 4, flags: 0, next: 0) // shorter than the header
        q.writeDescriptor(3, address: 0, length: 16, flags: 1, next: 3) // self loop
        for h in 0..<4 { q.pushAvail(head: UInt16(h)) }
        q.publish()
        pump(vale)
        #expect(vale.counters(of: a.device.portIndex).dropBadDescriptor == 4)
        #expect(q.deviceUsedIndex == 4)
        let used = q.reapUsed()
        #expect(used.map(\.length) == [0, 0, 0, 0])
        a.send(ethernet(to: b.mac, from: a.mac, payload: 64))
        pump(vale)
        #expect(b.receive().count == 1)
        #expect(!a.device.port.queues[1].broken)
    }
}
