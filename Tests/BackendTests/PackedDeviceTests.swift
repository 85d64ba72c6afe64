import Glibc
import Testing
import TestSupport
import VALESwitch
@testable import VhostNetmapBackend
import VhostSystem
import VhostUser
import Virtio

struct InflightReplyMissing: Error {}

/// A guest whose rings are packed, talking to a device through `handle` like `TestGuest`.
final class PackedGuest {
    let memory: DriverMemory
    var device: VhostNetDevice
    let rx: PackedDriverQueue
    let tx: PackedDriverQueue
    var kicks: [OwnedDescriptor] = []
    var calls: [OwnedDescriptor] = []
    let mac: [UInt8]
    let headerLength = 12
    /// INFLIGHT_SHMFD: asked for at the first start, handed back at every start after.
    var keepsInflightBuffer = false
    var inflightBuffer: (InflightBufferDescription, OwnedDescriptor)?

    init(_ name: String, on vale: VALESwitch, mac last: UInt8, ringSize: Int = 10) throws {
        memory = try DriverMemory(size: 16 << 20)
        device = try VhostNetDevice(name: "\(vale.name):\(name)", queuePairs: 1, vale: vale, logger: quietLogger, wakeWorker: {})
        mac = [0x52, 0x54, 0, 0, 0, last]
        rx = PackedDriverQueue(size: ringSize, memory: memory)
        tx = PackedDriverQueue(size: ringSize, memory: memory)
    }

    @discardableResult
    func handle(_ m: VhostUserMessage) throws -> VhostNetDevice.Response { try device.handle(m) }

    func start() throws {
        try handle(message(.setOwner))
        try handle(message(.setProtocolFeatures, u64(VhostNetDevice.offeredProtocolFeatures.rawValue)))
        try handle(message(.setFeatures, u64(VhostNetDevice.offeredFeatures.subtracting(.logAll).rawValue)))
        rx.inOrder = VhostNetDevice.offeredFeatures.contains(.inOrder)
        tx.inOrder = rx.inOrder
        let r = memory.regionSpec
        let region = MemoryRegionDescription(guestPhysicalAddress: r.guestPhysicalAddress.value, size: r.size, userAddress: r.userAddress.value, mmapOffset: 0)
        try handle(message(.setMemTable, MemoryTable(regions: [region]).encoded(), fds: [memory.descriptor]))
        if keepsInflightBuffer {
            if inflightBuffer == nil {
                let wanted = InflightBufferDescription(mmapSize: 0, mmapOffset: 0, queueCount: 2, queueSize: UInt16(rx.size))
                guard case .replyWithDescriptor(let bytes, let fd) = try handle(message(.getInflightFD, wanted.encoded())) else {
                    throw InflightReplyMissing()
                }
                inflightBuffer = (bytes.withUnsafeBytes { InflightBufferDescription($0) }, fd)
            }
            let (d, fd) = inflightBuffer!
            try handle(message(.setInflightFD, d.encoded(), fds: [fd]))
        }
        kicks = []
        calls = []
        for (index, q) in [rx, tx].enumerated() {
            let kick = try EventFD.make(), call = try EventFD.make()
            kicks.append(kick)
            calls.append(call)
            let a = q.addresses
            // A ring size that is no power of two, and the packed initial base: slot 0, wrap counter 1.
            try handle(message(.setVringNum, VringState(index: UInt32(index), num: UInt32(q.size)).encoded()))
            try handle(message(.setVringBase, VringState(index: UInt32(index), num: UInt32(PackedRingLayout.wrapBit)).encoded()))
            try handle(message(.setVringAddr, VringAddress(index: UInt32(index), flags: 0, descriptorTable: a.descriptorTable.value,
                                                           usedRing: a.usedRing.value, availRing: a.availRing.value, log: 0).encoded()))
            try handle(message(.setVringCall, u64(UInt64(index)), fds: [call]))
            try handle(message(.setVringKick, u64(UInt64(index)), fds: [kick]))
            try handle(message(.setVringEnable, VringState(index: UInt32(index), num: 1).encoded()))
        }
    }

    func send(_ frame: [UInt8]) {
        let buffer = memory.allocate(headerLength + frame.count)
        memset(memory.host(buffer), 0, headerLength)
        frame.withUnsafeBytes { memory.host(buffer + UInt64(headerLength)).copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
        _ = tx.reapUsed()
        // Header and frame in two descriptors: a chain of two in the ring.
        _ = tx.add([.readable(buffer, length: UInt32(headerLength)), .readable(buffer + UInt64(headerLength), length: UInt32(frame.count))])
    }

    var receiveBuffers: [UInt16: UInt64] = [:]

    func postReceiveBuffers(_ count: Int) {
        for _ in 0..<count {
            let b = memory.allocate(2048)
            if let id = rx.add([.writable(b, length: 2048)]) { receiveBuffers[id] = b }
        }
    }

    func receive() -> [[UInt8]] {
        rx.reapUsed().map { id, length in
            Array(UnsafeRawBufferPointer(start: memory.host(receiveBuffers[id]!) + headerLength, count: Int(length) - headerLength))
        }
    }
}

@Suite struct PackedDevice {
    @Test func framesCrossBetweenPackedAndSplitGuests() throws {
        let vale = VALESwitch(name: "vale0")
        let p = try PackedGuest("p", on: vale, mac: 7)
        let b = try TestGuest("b", on: vale, mac: 2)
        try p.start()
        try b.start()
        #expect(p.device.negotiatedFeatures?.contains(.ringPacked) == true)
        b.postReceiveBuffers(32)
        p.postReceiveBuffers(8)
        // More frames than the packed ring has slots, both ways: its wrap counters turn over.
        for round in 0..<25 {
            let toB = ethernet(to: b.mac, from: p.mac, payload: 60 + round, seed: UInt8(round))
            p.send(toB)
            pump(vale)
            #expect(b.receive().map(\.frame) == [toB], "round \(round): p -> b")
            b.postReceiveBuffers(1)
            let toP = ethernet(to: p.mac, from: b.mac, payload: 100 + round, seed: UInt8(round))
            b.send(toP)
            pump(vale)
            #expect(p.receive() == [toP], "round \(round): b -> p")
            p.postReceiveBuffers(1)
        }
        // Stopping a ring returns its position for both halves (QEMU reads the used one above bit 16).
        guard case .reply(let bytes) = try p.handle(message(.getVringBase, VringState(index: 1, num: 0).encoded())) else {
            Issue.record("no reply"); return
        }
        let num = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) }
        #expect(num & 0xffff == UInt32(p.tx.availPosition.encoded) && num >> 16 == num & 0xffff)
    }

    @Test func aPackedRingThatBreaksLeavesTheOthersWorking() throws {
        let (vale, p, a, b) = try { () throws -> (VALESwitch, PackedGuest, TestGuest, TestGuest) in
            let vale = VALESwitch(name: "vale0")
            let p = try PackedGuest("p", on: vale, mac: 9)
            let a = try TestGuest("a", on: vale, mac: 1)
            let b = try TestGuest("b", on: vale, mac: 2)
            try a.start()
            try b.start()
            return (vale, p, a, b)
        }()
        try p.start()
        // A chain that never ends: every descriptor of the transmit ring says NEXT.
        for slot in 0..<p.tx.size {
            p.tx.writeDescriptor(slot, address: p.memory.allocate(64), length: 64, id: 3,
                                 flags: DescriptorFlags.next.rawValue | PackedDriverQueue.availableFlags(p.tx.availPosition))
        }
        b.postReceiveBuffers(8)
        let frame = ethernet(to: b.mac, from: a.mac, payload: 80)
        a.send(frame)
        pump(vale)
        #expect(b.receive().map(\.frame) == [frame], "the bystanders still exchange frames")
        let report = p.device.statusLocked()
        #expect(report.brokenRings == [1], "the packed transmit ring is marked broken: \(report)")
        // SET_VRING_BASE with a used position in the high half is a split ring's mistake, not a packed one's.
        try p.handle(message(.getVringBase, VringState(index: 0, num: 0).encoded()))
        try p.handle(message(.setVringBase, VringState(index: 0, num: 0x8000_8000).encoded()))
        let split = try TestGuest("s", on: vale, mac: 5)
        try split.start()
        try split.handle(message(.getVringBase, VringState(index: 0, num: 0).encoded()))
        #expect(throws: (any Error).self) { try split.handle(message(.setVringBase, VringState(index: 0, num: 0x8000_8000).encoded())) }
    }
}
