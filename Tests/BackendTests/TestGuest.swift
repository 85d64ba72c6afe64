import Glibc
import TestSupport
import Logging
import VALESwitch
@testable import VhostNetmapBackend
import VhostSystem
import VhostUser
import Virtio

func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

func message(_ request: VhostUserRequest, _ payload: [UInt8] = [], fds: [OwnedDescriptor] = [], needReply: Bool = false) -> VhostUserMessage {
    VhostUserMessage(header: MessageHeader(request: request.rawValue, flags: needReply ? 9 : 1, size: UInt32(payload.count)),
                     request: request, payload: payload, descriptors: fds)
}

let quietLogger: Logger = {
    var l = Logger(label: "test")
    l.logLevel = .critical
    return l
}()

func ethernet(to dst: [UInt8], from src: [UInt8], payload: Int, seed: UInt8 = 0) -> [UInt8] {
    dst + src + [0x08, 0x00] + (0..<payload).map { UInt8(truncatingIfNeeded: $0 &+ Int(seed)) }
}

/// A guest as a vhost-user front-end sees it: its memory, its rings, its eventfds.
/// Talks to a `VhostNetDevice` by calling `handle` directly (no socket, no threads).
final class TestGuest {
    let memory: DriverMemory
    let device: VhostNetDevice
    var rx: [DriverQueue] = []
    var tx: [DriverQueue] = []
    var kicks: [OwnedDescriptor] = []
    var calls: [OwnedDescriptor] = []
    var features: VirtioFeatures = []
    let mac: [UInt8]
    var headerLength: Int { features.netHeaderLength }

    init(_ name: String, on vale: VALESwitch, mac last: UInt8, queuePairs: Int = 1) throws {
        memory = try DriverMemory(size: 16 << 20)
        device = try VhostNetDevice(name: "\(vale.name):\(name)", queuePairs: queuePairs, vale: vale, logger: quietLogger, wakeWorker: {})
        mac = [0x52, 0x54, 0, 0, 0, last]
    }

    @discardableResult
    func handle(_ m: VhostUserMessage) throws -> VhostNetDevice.Response { try device.handle(m) }

    /// The usual start-up: features (all offered but LOG_ALL, which a front-end sets only while
    /// it migrates), memory table, then every ring started and enabled.
    func start(features wanted: VirtioFeatures = VhostNetDevice.offeredFeatures.subtracting(.logAll), queueSize: Int = 256, pairs: Int = 1) throws {
        try handle(message(.setOwner))
        guard case .reply(let offered) = try handle(message(.getFeatures)) else { fatalError() }
        // The test driver's rings are split rings (packed ones have PackedDriverQueue's tests).
        let f = VirtioFeatures(rawValue: offered.withUnsafeBytes { $0.u64 }).intersection(wanted).subtracting(.ringPacked)
        try handle(message(.setProtocolFeatures, u64(VhostNetDevice.offeredProtocolFeatures.rawValue)))
        try handle(message(.setFeatures, u64(f.rawValue)))
        features = f
        try handle(message(.setMemTable, MemoryTable(regions: [region]).encoded(), fds: [memory.descriptor]))
        for pair in 0..<pairs {
            let r = DriverQueue(size: queueSize, memory: memory)
            let t = DriverQueue(size: queueSize, memory: memory)
            r.inOrder = f.contains(.inOrder)
            t.inOrder = f.contains(.inOrder)
            rx.append(r)
            tx.append(t)
            try startRing(2 * pair, r)
            try startRing(2 * pair + 1, t)
        }
    }

    var region: MemoryRegionDescription {
        let s = memory.regionSpec
        return MemoryRegionDescription(guestPhysicalAddress: s.guestPhysicalAddress.value, size: s.size, userAddress: s.userAddress.value, mmapOffset: s.mmapOffset)
    }

    func startRing(_ index: Int, _ q: DriverQueue) throws {
        let kick = try EventFD.make()
        let call = try EventFD.make()
        kicks.append(kick)
        calls.append(call)
        let a = q.addresses
        try handle(message(.setVringNum, VringState(index: UInt32(index), num: UInt32(q.size)).encoded()))
        try handle(message(.setVringBase, VringState(index: UInt32(index), num: 0).encoded()))
        try handle(message(.setVringAddr, VringAddress(index: UInt32(index), flags: 0, descriptorTable: a.descriptorTable.value,
                                                       usedRing: a.usedRing.value, availRing: a.availRing.value, log: 0).encoded()))
        try handle(message(.setVringCall, u64(UInt64(index)), fds: [call]))
        try handle(message(.setVringKick, u64(UInt64(index)), fds: [kick]))
        try handle(message(.setVringEnable, VringState(index: UInt32(index), num: 1).encoded()))
    }

    /// Queues a frame for transmission (virtio-net header + frame, split in two descriptors
    /// when `split` is set) and publishes it.
    func send(_ frame: [UInt8], pair: Int = 0, header: VirtioNetHeader = VirtioNetHeader(), split: Bool = false, indirect: Bool = false) {
        let hdr = headerLength
        let buffer = memory.allocate(hdr + frame.count)
        header.store(to: memory.host(buffer), length: hdr)
        frame.withUnsafeBytes { memory.host(buffer + UInt64(hdr)).copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
        _ = tx[pair].reapUsed()
        if indirect {
            let table = memory.allocate(32, alignment: 16)
            let t = memory.host(table)
            t.storeBytes(of: buffer, as: UInt64.self)
            t.storeBytes(of: UInt32(hdr), toByteOffset: 8, as: UInt32.self)
            t.storeBytes(of: UInt16(1), toByteOffset: 12, as: UInt16.self)
            t.storeBytes(of: UInt16(1), toByteOffset: 14, as: UInt16.self)
            (t + 16).storeBytes(of: buffer + UInt64(hdr), as: UInt64.self)
            (t + 16).storeBytes(of: UInt32(frame.count), toByteOffset: 8, as: UInt32.self)
            (t + 16).storeBytes(of: UInt16(0), toByteOffset: 12, as: UInt16.self)
            let head = tx[pair].add([.readable(table, length: 32)])!
            tx[pair].writeDescriptor(Int(head), address: table, length: 32, flags: 4, next: 0)
        } else if split {
            _ = tx[pair].add([.readable(buffer, length: UInt32(hdr)),
                              .readable(buffer + UInt64(hdr), length: UInt32(frame.count))])
        } else {
            _ = tx[pair].add([.readable(buffer, length: UInt32(hdr + frame.count))])
        }
        tx[pair].publish()
    }

    /// Posts `count` receive buffers of `size` bytes each.
    func postReceiveBuffers(_ count: Int, size: Int = 2048, pair: Int = 0) {
        for _ in 0..<count {
            let b = memory.allocate(size)
            _ = rx[pair].add([.writable(b, length: UInt32(size))])
        }
        rx[pair].publish()
    }

    struct Received {
        var header: VirtioNetHeader
        var frame: [UInt8]
        var buffers: Int
    }

    /// Reads the frames the device completed (reassembling mergeable buffers).
    func receive(pair: Int = 0) -> [Received] {
        let used = rx[pair].reapUsedWithAddresses()
        var out: [Received] = []
        var k = 0
        let hdr = headerLength
        while k < used.count {
            let first = used[k]
            let h = VirtioNetHeader(bytes: memory.host(first.address), length: hdr)
            let n = features.contains(.netMergeableRxBuffers) ? max(1, Int(h.numBuffers)) : 1
            var bytes = Array(UnsafeRawBufferPointer(start: memory.host(first.address) + hdr, count: Int(first.length) - hdr))
            for j in 1..<n where k + j < used.count {
                bytes += Array(UnsafeRawBufferPointer(start: memory.host(used[k + j].address), count: Int(used[k + j].length)))
            }
            out.append(Received(header: h, frame: bytes, buffers: n))
            k += n
        }
        return out
    }
}

extension DriverQueue {
    /// Used entries with the address of each chain's (single) buffer.
    func reapUsedWithAddresses() -> [(address: UInt64, length: UInt32)] {
        reapUsed().map { (head, length) in
            let d = memory.host(descriptorTable) + 16 * Int(head)
            return (d.load(as: UInt64.self), length)
        }
    }
}

/// A switch with two guests, `a` (MAC ...:01) and `b` (...:02), both started with every offered feature.
func startedPair() throws -> (VALESwitch, TestGuest, TestGuest) {
    let vale = VALESwitch(name: "vale0")
    let a = try TestGuest("a", on: vale, mac: 1)
    let b = try TestGuest("b", on: vale, mac: 2)
    try a.start()
    try b.start()
    return (vale, a, b)
}

/// A switch with two started bystanders, `a` (MAC ...:01) and `b` (...:02), and a guest `name`
/// (MAC ...:`mac`) not started yet: the subject of a test that must leave the others working.
func bystandersAndSubject(_ name: String, mac: UInt8) throws -> (VALESwitch, subject: TestGuest, a: TestGuest, b: TestGuest) {
    let vale = VALESwitch(name: "vale0")
    let subject = try TestGuest(name, on: vale, mac: mac)
    let a = try TestGuest("a", on: vale, mac: 1)
    let b = try TestGuest("b", on: vale, mac: 2)
    try a.start()
    try b.start()
    return (vale, subject, a, b)
}

func pump(_ vale: VALESwitch, passes: Int = 64) {
    for _ in 0..<passes {
        if vale.lock.withLock({ _ in vale.runPass(budget: 32) }) == 0 { return }
    }
}
