import Glibc
import Testing
import VALESwitch
@testable import VhostNetmapBackend
import VhostSystem
import VhostUser
import Virtio

@Suite struct DeviceDatapath {
    @Test(arguments: [
        (VhostNetDevice.offeredFeatures, 256),
        (VhostNetDevice.offeredFeatures.subtracting(.netMergeableRxBuffers), 256),
        (VhostNetDevice.offeredFeatures.subtracting([.eventIndex, .indirectDescriptors]), 1024),
        (VirtioFeatures([.protocolFeatures]), 64), // legacy 10-byte header, no offloads
    ])
    func unicastAfterLearningArrivesIntact(features: VirtioFeatures, queueSize: Int) throws {
        let vale = VALESwitch(name: "vale0")
        let a = try TestGuest("a", on: vale, mac: 1)
        let b = try TestGuest("b", on: vale, mac: 2)
        try a.start(features: features, queueSize: queueSize)
        try b.start(features: features, queueSize: queueSize)
        a.postReceiveBuffers(8)
        b.postReceiveBuffers(min(64, queueSize))
        // b speaks first so the switch learns it; a receives that flood.
        b.send(ethernet(to: a.mac, from: b.mac, payload: 50))
        pump(vale)
        #expect(a.receive().count == 1)
        var sent: [[UInt8]] = []
        var got: [TestGuest.Received] = []
        for k in 0..<150 {
            let f = ethernet(to: b.mac, from: a.mac, payload: 46 + k * 9, seed: UInt8(k & 0xff))
            sent.append(f)
            a.send(f, split: k % 3 == 1, indirect: k % 3 == 2 && features.contains(.indirectDescriptors))
            if k % 20 == 19 {
                pump(vale)
                got += b.receive()
                b.postReceiveBuffers(20)
            }
        }
        pump(vale)
        got += b.receive()
        #expect(got.count == 150)
        let intact = got.map(\.frame) == sent
        #expect(intact)
        #expect(vale.counters(of: a.device.portIndex).inPackets == 151 - 1 + 0)
        #expect(vale.counters(of: b.device.portIndex).outPackets == 150)
        #expect(vale.counters(of: b.device.portIndex).outBytes == UInt64(sent.reduce(0) { $0 + $1.count }))
        // Transmit chains all came back.
        _ = a.tx[0].reapUsed()
        #expect(a.tx[0].freeCount == queueSize)
    }

    @Test func mergeableSpreadsLargeFramesOverSeveralBuffers() throws {
        let (vale, a, b) = try startedPair()
        b.postReceiveBuffers(64, size: 512)
        let big = ethernet(to: b.mac, from: a.mac, payload: 9000)
        a.send(big)
        pump(vale)
        let got = b.receive()
        #expect(got.count == 1)
        let intact = got.first?.frame == big
        #expect(intact)
        #expect(got.first?.buffers == (12 + big.count + 511) / 512)
    }

    @Test func withoutMergeableATooSmallBufferIsNoRoom() throws {
        let vale = VALESwitch(name: "vale0")
        let f = VhostNetDevice.offeredFeatures.subtracting(.netMergeableRxBuffers)
        let a = try TestGuest("a", on: vale, mac: 1)
        let b = try TestGuest("b", on: vale, mac: 2)
        try a.start(features: f)
        try b.start(features: f)
        b.postReceiveBuffers(4, size: 256)
        a.send(ethernet(to: b.mac, from: a.mac, payload: 1000))
        a.send(ethernet(to: b.mac, from: a.mac, payload: 100))
        pump(vale)
        #expect(vale.counters(of: b.device.portIndex).dropNoRoom == 1)
        #expect(b.receive().count == 1) // the small one; the buffer was not consumed by the big one
    }

    @Test func fullRingDropsAndCountsAndCallsFollowEventIndex() throws {
        let (vale, a, b) = try startedPair()
        b.postReceiveBuffers(10)
        b.rx[0].setUsedEvent(0)
        for _ in 0..<25 { a.send(ethernet(to: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], from: a.mac, payload: 50)) }
        pump(vale)
        #expect(b.receive().count == 10)
        #expect(vale.counters(of: b.device.portIndex).dropNoRoom == 15)
        // b's RX call eventfd fired; a's TX call fired as its chains were completed.
        #expect(EventFD.drain(b.calls[0].rawValue) >= 1)
        #expect(EventFD.drain(a.calls[1].rawValue) >= 1)
    }

    @Test func offloadHeaderPassesThroughUnchanged() throws {
        let (vale, a, b) = try startedPair()
        b.postReceiveBuffers(8, size: 4096)
        var h = VirtioNetHeader()
        h.flags = VirtioNetHeader.needsChecksum
        h.gsoType = VirtioNetHeader.gsoTCPv4
        h.headerLength = 54
        h.gsoSize = 1448
        h.checksumStart = 34
        h.checksumOffset = 16
        a.send(ethernet(to: b.mac, from: a.mac, payload: 3000), header: h)
        pump(vale)
        let got = b.receive()
        #expect(got.count == 1)
        var expected = h
        expected.numBuffers = 1
        #expect(got.first?.header == expected)
    }

    @Test func offloadToAGuestWithoutItIsDropped() throws {
        let vale = VALESwitch(name: "vale0")
        let a = try TestGuest("a", on: vale, mac: 1)
        let b = try TestGuest("b", on: vale, mac: 2)
        try a.start()
        try b.start(features: VhostNetDevice.offeredFeatures.subtracting([.netGuestCSUM, .netGuestTSO4, .netGuestTSO6, .netGuestUFO, .netGuestECN]))
        b.postReceiveBuffers(8, size: 4096)
        var h = VirtioNetHeader()
        h.flags = VirtioNetHeader.needsChecksum
        a.send(ethernet(to: b.mac, from: a.mac, payload: 100), header: h)
        a.send(ethernet(to: b.mac, from: a.mac, payload: 100))
        pump(vale)
        #expect(vale.counters(of: b.device.portIndex).dropOffload == 1)
        #expect(b.receive().count == 1)
    }

    @Test func multiqueueDeliversOnTheSourceQueuePair() throws {
        let vale = VALESwitch(name: "vale0")
        let a = try TestGuest("a", on: vale, mac: 1, queuePairs: 2)
        let b = try TestGuest("b", on: vale, mac: 2, queuePairs: 2)
        try a.start(pairs: 2)
        try b.start(pairs: 2)
        b.postReceiveBuffers(32, pair: 0)
        b.postReceiveBuffers(32, pair: 1)
        for _ in 0..<5 { a.send(ethernet(to: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], from: a.mac, payload: 50), pair: 0) }
        for _ in 0..<7 { a.send(ethernet(to: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], from: a.mac, payload: 50), pair: 1) }
        pump(vale)
        #expect(b.receive(pair: 0).count == 5)
        #expect(b.receive(pair: 1).count == 7)
        guard case .reply(let n) = try b.handle(message(.getQueueNum)) else { Issue.record("no reply"); return }
        #expect(n.withUnsafeBytes { $0.u64 } == 2)
    }

    @Test func disabledRingDoesNotReceiveAndStoppedRingReportsBase() throws {
        let (vale, a, b) = try startedPair()
        b.postReceiveBuffers(8)
        try b.handle(message(.setVringEnable, VringState(index: 0, num: 0).encoded()))
        a.send(ethernet(to: b.mac, from: a.mac, payload: 50))
        pump(vale)
        #expect(b.receive().isEmpty)
        #expect(vale.counters(of: b.device.portIndex).dropNotReady == 1)
        try b.handle(message(.setVringEnable, VringState(index: 0, num: 1).encoded()))
        a.send(ethernet(to: b.mac, from: a.mac, payload: 50))
        a.send(ethernet(to: b.mac, from: a.mac, payload: 50))
        pump(vale)
        #expect(b.receive().count == 2)
        // GET_VRING_BASE stops the ring and returns how far the device got.
        guard case .reply(let bytes) = try a.handle(message(.getVringBase, VringState(index: 1, num: 0).encoded())) else {
            Issue.record("no reply"); return
        }
        #expect(bytes.withUnsafeBytes { VringState($0) } == VringState(index: 1, num: 3))
        a.send(ethernet(to: b.mac, from: a.mac, payload: 50))
        pump(vale)
        #expect(b.receive().isEmpty) // stopped: nothing more is taken from a's TX ring
        #expect(a.tx[0].deviceUsedIndex == 3)
    }

    @Test func withoutProtocolFeaturesAllRingsAreEnabled() throws {
        let vale = VALESwitch(name: "vale0")
        let a = try TestGuest("a", on: vale, mac: 1)
        let b = try TestGuest("b", on: vale, mac: 2)
        try a.start()
        // b: a legacy front-end (no PROTOCOL_FEATURES, so no SET_VRING_ENABLE).
        try b.handle(message(.setOwner))
        try b.handle(message(.setFeatures, u64(VirtioFeatures([.version1, .netMergeableRxBuffers]).rawValue)))
        b.features = [.version1, .netMergeableRxBuffers]
        try b.handle(message(.setMemTable, MemoryTable(regions: [b.region]).encoded(), fds: [b.memory.descriptor]))
        let r = DriverQueue(size: 64, memory: b.memory)
        b.rx = [r]
        let k = try EventFD.make()
        let a2 = r.addresses
        try b.handle(message(.setVringNum, VringState(index: 0, num: 64).encoded()))
        try b.handle(message(.setVringAddr, VringAddress(index: 0, flags: 0, descriptorTable: a2.descriptorTable.value, usedRing: a2.usedRing.value, availRing: a2.availRing.value, log: 0).encoded()))
        try b.handle(message(.setVringKick, u64(0), fds: [k]))
        // An enable message is accepted anyway (DPDK sends one before negotiating after a reconnect).
        try b.handle(message(.setVringEnable, VringState(index: 0, num: 1).encoded()))
        b.postReceiveBuffers(4)
        a.send(ethernet(to: b.mac, from: a.mac, payload: 50))
        pump(vale)
        #expect(b.receive().count == 1)
    }

    /// QEMU's order: protocol features, then SET_VRING_ENABLE(0) for every ring, then SET_FEATURES.
    @Test func qemuEnablesRingsBeforeSettingFeatures() throws {
        let vale = VALESwitch(name: "vale0")
        let a = try TestGuest("a", on: vale, mac: 1)
        try a.handle(message(.setOwner))
        _ = try a.handle(message(.getFeatures))
        _ = try a.handle(message(.getProtocolFeatures))
        try a.handle(message(.setProtocolFeatures, u64(ProtocolFeatures([.mq, .replyAck]).rawValue)))
        try a.handle(message(.setVringEnable, VringState(index: 0, num: 0).encoded()))
        try a.handle(message(.setVringEnable, VringState(index: 1, num: 0).encoded()))
        try a.handle(message(.setFeatures, u64(VhostNetDevice.offeredFeatures.rawValue)))
    }

    /// A back-end restarted under a running front-end is told SET_VRING_BASE 0 while the ring's
    /// indices are far ahead (DPDK's virtio-user after a reconnect): the ring resumes at the used
    /// index in guest memory, neither broken (avail "300 ahead") nor replaying old chains.
    @Test func aRingStartedBehindItsUsedIndexResumesThere() throws {
        let (vale, a, b) = try startedPair()
        for _ in 0..<6 {
            b.postReceiveBuffers(50)
            for _ in 0..<50 { a.send(ethernet(to: b.mac, from: a.mac, payload: 50)) }
            pump(vale)
            #expect(b.receive().count == 50)
        }
        guard case .reply(let bytes) = try a.handle(message(.getVringBase, VringState(index: 1, num: 0).encoded())) else {
            Issue.record("no reply"); return
        }
        #expect(bytes.withUnsafeBytes { VringState($0) } == VringState(index: 1, num: 300))
        try a.startRing(1, a.tx[0]) // SET_VRING_BASE 0, as after a reconnect
        b.postReceiveBuffers(8)
        a.send(ethernet(to: b.mac, from: a.mac, payload: 50, seed: 9))
        pump(vale)
        let received = b.receive()
        #expect(received.count == 1 && received.first?.frame == ethernet(to: b.mac, from: a.mac, payload: 50, seed: 9))
        #expect(a.device.statusLocked().brokenRings.isEmpty && a.tx[0].deviceUsedIndex == 301)
    }

    /// RESET_DEVICE: rings stopped, memory and features forgotten, the connection kept; the same
    /// front-end then starts the device again and frames flow.
    @Test func resetDeviceStopsEverythingAndTheDeviceStartsAgain() throws {
        let (vale, a, b) = try startedPair()
        try b.handle(message(.resetDevice))
        let reset = b.device.statusLocked()
        #expect(b.device.negotiatedFeatures == nil && reset.memoryRegions == 0 && reset.readyRX == 0 && reset.readyTX == 0)
        b.postReceiveBuffers(4) // on the old rings: the device must not touch them
        a.send(ethernet(to: b.mac, from: a.mac, payload: 50))
        pump(vale)
        #expect(b.receive().isEmpty)
        b.rx = []
        b.tx = []
        try b.start()
        b.postReceiveBuffers(4)
        a.send(ethernet(to: b.mac, from: a.mac, payload: 50, seed: 3))
        pump(vale)
        #expect(b.receive().map(\.frame) == [ethernet(to: b.mac, from: a.mac, payload: 50, seed: 3)])
    }

    /// SET_STATUS is kept for GET_STATUS; FEATURES_OK only sticks once features are set; status 0
    /// (QEMU's stop) resets nothing, so the rings' bases survive for GET_VRING_BASE.
    @Test func statusIsKeptAndFeaturesOKNeedsFeatures() throws {
        let (_, a, _) = try startedPair()
        let fresh = try TestGuest("c", on: VALESwitch(name: "vale1"), mac: 3)
        func status(_ g: TestGuest) throws -> UInt64 {
            guard case .reply(let bytes) = try g.handle(message(.getStatus)) else { Issue.record("no reply"); return .max }
            return bytes.withUnsafeBytes { $0.u64 }
        }
        try fresh.handle(message(.setProtocolFeatures, u64(ProtocolFeatures.status.rawValue)))
        try fresh.handle(message(.setStatus, u64(0x0b))) // ACKNOWLEDGE|DRIVER|FEATURES_OK before SET_FEATURES
        #expect(try status(fresh) == 0x03)
        try a.handle(message(.setStatus, u64(0x0f)))
        #expect(try status(a) == 0x0f)
        try a.handle(message(.setStatus, u64(0)))
        #expect(try status(a) == 0 && a.device.negotiatedFeatures != nil && a.device.statusLocked().readyTX == 1)
    }

    /// GET_VRING_BASE of a ring that never started returns the base it was given (or 0), and the
    /// ring stays stopped.
    @Test func baseOfARingNeverStarted() throws {
        let a = try TestGuest("a", on: VALESwitch(name: "vale0"), mac: 1)
        func base(_ index: UInt32) throws -> UInt32? {
            guard case .reply(let bytes) = try a.handle(message(.getVringBase, VringState(index: index, num: 0).encoded())) else { return nil }
            return bytes.withUnsafeBytes { VringState($0) }.num
        }
        try a.handle(message(.setVringBase, VringState(index: 1, num: 42).encoded()))
        #expect(try base(1) == 42)
        #expect(try base(1) == 42)
        #expect(try base(0) == 0)
        #expect(a.device.statusLocked().readyTX == 0)
    }

    /// The same with the indices half the index space away (where a 16-bit comparison of the old
    /// and new positions flips): nothing between the two positions is taken for available.
    @Test func aRingResumedFarFromItsBaseTakesOnlyNewChains() throws {
        let (vale, a, b) = try startedPair()
        _ = try a.handle(message(.getVringBase, VringState(index: 1, num: 0).encoded()))
        a.tx[0].moveIdleRing(to: 40_000)
        try a.startRing(1, a.tx[0])
        b.postReceiveBuffers(8)
        a.send(ethernet(to: b.mac, from: a.mac, payload: 50, seed: 4))
        pump(vale)
        #expect(b.receive().map(\.frame) == [ethernet(to: b.mac, from: a.mac, payload: 50, seed: 4)])
        #expect(a.device.statusLocked().brokenRings.isEmpty && a.tx[0].deviceUsedIndex == 40_001)
        #expect(vale.counters(of: a.device.portIndex).dropBadDescriptor == 0)
    }

    @Test func rarpAnnouncementIsFlooded() throws {
        let (vale, a, b) = try startedPair()
        b.postReceiveBuffers(4)
        try a.handle(message(.sendRARP, a.mac + [0, 0]))
        pump(vale)
        let got = b.receive()
        #expect(got.count == 1)
        #expect(got.first?.frame.count == 60)
        #expect(Array(got.first!.frame[0..<14]) == [0xff, 0xff, 0xff, 0xff, 0xff, 0xff] + a.mac + [0x80, 0x35])
        #expect(vale.learning.lookup(0x0100_0000_5452) == a.device.portIndex)
    }

    @Test func resetStopsEverythingAndForgetsAddresses() throws {
        let (vale, a, b) = try startedPair()
        b.postReceiveBuffers(4)
        a.send(ethernet(to: b.mac, from: a.mac, payload: 50))
        pump(vale)
        #expect(vale.learning.entryCount == 1)
        b.device.reset(reason: "test")
        #expect(vale.learning.entryCount == 1) // a's address stays; b had learned nothing
        a.device.reset(reason: "test")
        #expect(vale.learning.entryCount == 0)
        a.send(ethernet(to: b.mac, from: a.mac, payload: 50))
        pump(vale)
        #expect(vale.counters(of: a.device.portIndex).inPackets == 1)
    }
}
