import DataPath
import Netmap
import Testing
import TestSupport
import VALESwitch
@testable import VhostNetmapBackend
import Virtio

/// The netmap kernel-port data path end to end, from a guest's rings to netmap rings and back,
/// against `KernelModel` (the kernel's side of txsync/rxsync over netmap's memory layout).
@Suite struct NetmapPortOverKernelModel {
    static func setUp(headerLength: Int = 12, slots: Int = 64, bufferSize: Int = 2048) throws -> (VALESwitch, TestGuest, KernelModel, NetmapKernelPort) {
        let vale = VALESwitch(name: "vale0")
        let guest = try TestGuest("g", on: vale, mac: 1)
        try guest.start()
        let model = KernelModel(slots: slots, bufferSize: bufferSize)
        let port = try NetmapKernelPort(name: "vale0:k", region: model.region, headerLength: headerLength, sync: model, pollDescriptor: -1)
        _ = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(port, named: "k") }
        return (vale, guest, model, port)
    }

    static func header(_ bytes: [UInt8], _ length: Int) -> VirtioNetHeader {
        bytes.withUnsafeBytes { VirtioNetHeader(bytes: $0.baseAddress!, length: length) }
    }

    @Test func guestFramesReachTheNetmapTXRingWithHeaderAndFragments() throws {
        let (vale, guest, model, port) = try Self.setUp()
        let small = ethernet(to: [2, 0, 0, 0, 0, 9], from: guest.mac, payload: 50)
        let large = ethernet(to: [2, 0, 0, 0, 0, 9], from: guest.mac, payload: 5000, seed: 3)
        var tso = VirtioNetHeader()
        tso.flags = VirtioNetHeader.needsChecksum
        tso.gsoType = VirtioNetHeader.gsoTCPv4
        tso.gsoSize = 1448
        tso.checksumStart = 34
        tso.checksumOffset = 16
        guest.send(small)
        guest.send(large, header: tso, split: true)
        pump(vale)
        #expect(model.transmitted.count == 2)
        #expect(model.transmitted.first.map { Array($0.dropFirst(12)) } == small)
        // 12 + 5014 bytes over 2048-byte buffers: three fragments, joined back by the kernel.
        #expect(model.transmitted.last.map { Array($0.dropFirst(12)) } == large)
        #expect(model.transmitted.last.map { Self.header($0, 12) } == tso)
        #expect(model.txsyncCalls >= 1)
        #expect(model.resets == 0)
        #expect(port.syncErrors == 0 && port.badSlots == 0)
    }

    @Test func netmapRXFramesReachTheGuestIncludingMultiBufferOnes() throws {
        let (vale, guest, model, port) = try Self.setUp()
        guest.postReceiveBuffers(64)
        var frames: [[UInt8]] = []
        for n in [60, 1514, 4000] {
            var h = [UInt8](repeating: 0, count: 12)
            if n == 4000 { h[0] = VirtioNetHeader.needsChecksum; h[6] = 34; h[8] = 16 }
            let f = ethernet(to: guest.mac, from: [2, 0, 0, 0, 0, 9], payload: n - 14, seed: UInt8(n & 0xff))
            frames.append(f)
            model.pendingReceive.append(h + f)
        }
        pump(vale)
        let got = guest.receive()
        #expect(got.map(\.frame) == frames)
        #expect(got.last?.header.flags == VirtioNetHeader.needsChecksum)
        // Slots were given back: head caught up with tail.
        #expect(model.ring(rx: 0).pointee.head == model.ring(rx: 0).pointee.tail)
        #expect(port.badSlots == 0)
        vale.lock.withLock { _ in #expect(vale.counters(of: 1).inPackets == 3) }
    }

    @Test func aFullTXRingDropsAndCountsThenRecovers() throws {
        let (vale, guest, model, _) = try Self.setUp(slots: 8)
        model.freesTransmitSlots = false
        for i in 0..<10 { guest.send(ethernet(to: [2, 0, 0, 0, 0, 9], from: guest.mac, payload: 60, seed: UInt8(i))) }
        pump(vale)
        // 8 slots, one kept empty: 7 frames fit, 3 are dropped.
        #expect(model.transmitted.count == 7)
        vale.lock.withLock { _ in #expect(vale.counters(of: 1).dropNoRoom == 3) }
        model.freesTransmitSlots = true
        _ = model.txsync()
        guest.send(ethernet(to: [2, 0, 0, 0, 0, 9], from: guest.mac, payload: 60, seed: 99))
        pump(vale)
        #expect(model.transmitted.count == 8)
    }

    @Test func withoutAHeaderOffloadedFramesAreRefusedAndPlainOnesPass() throws {
        let (vale, guest, model, _) = try Self.setUp(headerLength: 0)
        var csum = VirtioNetHeader()
        csum.flags = VirtioNetHeader.needsChecksum
        csum.checksumStart = 34
        csum.checksumOffset = 16
        let plain = ethernet(to: [2, 0, 0, 0, 0, 9], from: guest.mac, payload: 80)
        guest.send(plain)
        guest.send(ethernet(to: [2, 0, 0, 0, 0, 9], from: guest.mac, payload: 80), header: csum)
        pump(vale)
        #expect(model.transmitted == [plain])
        vale.lock.withLock { _ in #expect(vale.counters(of: 1).dropOffload == 1) }
    }

    @Test func corruptSlotsFromTheKernelSideAreCountedNotFollowed() throws {
        let (vale, guest, model, port) = try Self.setUp()
        guest.postReceiveBuffers(16)
        let good = ethernet(to: guest.mac, from: [2, 0, 0, 0, 0, 9], payload: 100)
        model.pendingReceive = [[UInt8](repeating: 0, count: 12) + good, [UInt8](repeating: 0, count: 12) + good]
        _ = model.rxsync()
        // Slot 0 now names reserved buffer 1; then buffer 0xFFFFFFF0, far outside the region.
        model.setReceiveSlotBuffer(ring: 0, slot: 0, bufferIndex: 1)
        let port2 = port
        pump(vale)
        #expect(port2.badSlots >= 1)
        #expect(guest.receive().map(\.frame) == [good], "the intact frame still arrives")
        model.pendingReceive = [[UInt8](repeating: 0, count: 12) + good]
        _ = model.rxsync()
        let ring = model.ring(rx: 0)
        model.setReceiveSlotBuffer(ring: 0, slot: ring.pointee.head, bufferIndex: 0xFFFF_FFF0)
        pump(vale)
        #expect(port2.badSlots >= 2)
        vale.lock.withLock { _ in #expect(vale.counters(of: 1).dropBadDescriptor >= 2) }
    }

    @Test func theKernelResetsABadHeadAndThePortCarriesOn() throws {
        let (vale, guest, model, _) = try Self.setUp()
        // Something wrote a head beyond tail: the kernel resets the ring, no error, nothing sent.
        let tx = model.ring(tx: 0)
        tx.pointee.head = 40
        tx.pointee.cur = 30
        tx.pointee.tail = 5 // and a tail changed by user space is overwritten
        _ = model.txsync()
        #expect(model.resets == 1)
        #expect(tx.pointee.head == 0 && tx.pointee.cur == 0 && tx.pointee.tail == 63)
        #expect(model.transmitted.isEmpty)
        let f = ethernet(to: [2, 0, 0, 0, 0, 9], from: guest.mac, payload: 60)
        guest.send(f)
        pump(vale)
        #expect(model.transmitted.map { Array($0.dropFirst(12)) } == [f])
    }

    @Test func randomTrafficBothWaysKeepsEveryByte() throws {
        var rng = SeededRandom(seed: 7)
        let (vale, guest, model, port) = try Self.setUp(slots: 128, bufferSize: 1024)
        var expectedOut: [[UInt8]] = []
        var expectedIn: [[UInt8]] = []
        for round in 0..<20 {
            guest.postReceiveBuffers(16)
            for _ in 0..<Int(rng.next() % 8) {
                let f = ethernet(to: [2, 0, 0, 0, 0, 9], from: guest.mac, payload: 46 + Int(rng.next() % 4000), seed: UInt8(round))
                expectedOut.append(f)
                guest.send(f, split: rng.next() % 2 == 0)
            }
            for _ in 0..<Int(rng.next() % 4) {
                let f = ethernet(to: guest.mac, from: [2, 0, 0, 0, 0, 9], payload: 46 + Int(rng.next() % 1400), seed: UInt8(round))
                expectedIn.append(f)
                model.pendingReceive.append([UInt8](repeating: 0, count: 12) + f)
            }
            pump(vale)
        }
        #expect(model.transmitted.map { Array($0.dropFirst(12)) } == expectedOut)
        #expect(guest.receive().map(\.frame) == expectedIn)
        #expect(model.resets == 0 && port.badSlots == 0)
    }
}

@Suite struct NetmapRegionValidation {
    // Int64.max and Int64.min overflowed the offset arithmetic (FuzzNetmapRing's first finding).
    @Test(arguments: [Int64(1 << 40), -8192, 8, .max, .min, 4])
    func ringOffsetsOutsideTheMappingAreRefused(offset: Int64) {
        let model = KernelModel()
        // ring_ofs[0] (the first TX ring) now points outside the region (or into the interface).
        (model.memory + model.interfaceOffset + 56).storeBytes(of: offset, as: Int64.self)
        do {
            _ = try NetmapKernelPort(name: "x", region: model.region, headerLength: 12, sync: model, pollDescriptor: -1)
            Issue.record("a ring at offset \(offset) was accepted")
        } catch {
            #expect("\(error)".contains("netmap region"))
        }
    }

    @Test func aRingClaimingMoreSlotsThanFitIsRefused() {
        let model = KernelModel(slots: 64)
        model.ring(rx: 0).pointee.num_slots = 1 << 30
        #expect(throws: NetmapRegion.LayoutError.self) {
            _ = try NetmapKernelPort(name: "x", region: model.region, headerLength: 12, sync: model, pollDescriptor: -1)
        }
    }

    @Test(arguments: [(UInt32(70_000), Int64(0)), (2048, .max), (2048, .min), (32, 0)])
    func aBufferSizeOrOffsetNoSlotCanDescribeIsRefused(bufferSize: UInt32, bufferOffset: Int64) {
        let model = KernelModel()
        model.ring(tx: 0).pointee.nr_buf_size = bufferSize
        if bufferOffset != 0 { model.ring(tx: 0).pointee.buf_ofs = bufferOffset }
        #expect(throws: NetmapRegion.LayoutError.self) {
            _ = try NetmapKernelPort(name: "x", region: model.region, headerLength: 12, sync: model, pollDescriptor: -1)
        }
    }

    @Test func aMisalignedInterfaceOffsetIsRefused() {
        let model = KernelModel()
        #expect(throws: NetmapRegion.LayoutError.self) {
            _ = try NetmapRegion(base: model.memory, size: model.size, interfaceOffset: model.interfaceOffset + 4)
        }
    }

    /// The region is writable by the kernel and by other processes on the same allocator: a
    /// num_slots rewritten after the rings were found must not move any access beyond them.
    @Test func slotCountsAreTheValidatedOnes() throws {
        let model = KernelModel(slots: 64)
        let port = try NetmapKernelPort(name: "x", region: model.region, headerLength: 0, sync: model, pollDescriptor: -1)
        model.ring(tx: 0).pointee.num_slots = 1 << 30
        model.ring(tx: 0).pointee.cur = 1000
        let frame = [UInt8](repeating: 0xff, count: 60)
        let result = frame.withUnsafeBytes { raw in
            var segment = Segment(base: UnsafeMutableRawPointer(mutating: raw.baseAddress!), length: raw.count)
            return withUnsafePointer(to: &segment) {
                port.deliver(Frame(header: VirtioNetHeader(), segments: $0, segmentCount: 1, offset: 0, length: 60, queuePair: 0))
            }
        }
        #expect(result == .notReady && port.badSlots == 1, "cur 1000 is beyond the 64 slots found")
    }
}
