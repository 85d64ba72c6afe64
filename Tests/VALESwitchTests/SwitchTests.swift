import Glibc
import Testing
@testable import VALESwitch
import Virtio

/// A port that sends frames given to it and records what the switch delivers.
final class RecordingPort: SwitchPort {
    override init() { super.init() }

    var outbox: [[UInt8]] = []
    var received: [[UInt8]] = []
    var room = Int.max
    var flushes = 0
    var header = VirtioNetHeader()
    var accepts: VirtioFeatures = [.netGuestCSUM, .netGuestTSO4, .netGuestTSO6]

    override func transmit(into lane: SwitchLane, as portIndex: Int, budget: Int) -> Int {
        let n = min(budget, outbox.count)
        for frame in outbox.prefix(n) {
            var bytes = frame
            bytes.withUnsafeMutableBytes { raw in
                // Split every frame in two segments to exercise gathering of the addresses.
                let cut = min(5, raw.count)
                var segments = [Segment(base: raw.baseAddress!, length: cut),
                                Segment(base: raw.baseAddress! + cut, length: raw.count - cut)]
                segments.withUnsafeMutableBufferPointer { s in
                    lane.forward(Frame(header: header, segments: s.baseAddress!, segmentCount: 2, offset: 0, length: raw.count, queuePair: 0), from: portIndex)
                }
            }
        }
        outbox.removeFirst(n)
        return n
    }

    override func deliver(_ frame: Frame) -> DeliveryResult {
        guard accepts.isSuperset(of: frame.header.requiredReceiveFeatures) else { return .offloadMismatch }
        guard room > 0 else { return .noRoom }
        room -= 1
        var bytes = [UInt8](repeating: 0, count: frame.length)
        var c = frame.cursor
        _ = bytes.withUnsafeMutableBytes { c.read(into: $0.baseAddress!, length: frame.length) }
        received.append(bytes)
        return .delivered
    }

    override func flushDeliveries() { flushes += 1 }
    override func prepareToSleep(for lane: SwitchLane, as portIndex: Int) -> Bool { !outbox.isEmpty }
}

/// A switch with `count` recording ports named p0, p1, ...
func switchWithRecordingPorts(_ count: Int) throws -> (VALESwitch, [RecordingPort]) {
    let vale = VALESwitch(name: "vale0")
    let ports = (0..<count).map { _ in RecordingPort() }
    for (i, p) in ports.enumerated() {
        _ = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(p, named: "p\(i)") }
    }
    return (vale, ports)
}

func mac(_ last: UInt8, group: Bool = false) -> [UInt8] { [group ? 0x03 : 0x02, 0, 0, 0, 0, last] }

func frame(to dst: [UInt8], from src: [UInt8], payload: Int = 46, fill: UInt8 = 0xab) -> [UInt8] {
    dst + src + [0x08, 0x00] + [UInt8](repeating: fill, count: payload)
}

@Suite struct LearningSwitch {
    let vale: VALESwitch
    let ports: [RecordingPort]

    init() throws { (vale, ports) = try switchWithRecordingPorts(3) }

    func run() { vale.lock.withLock { _ in _ = vale.runPass(budget: 32) } }

    @Test func unknownUnicastFloodsThenLearnedUnicastGoesToOnePort() {
        ports[0].outbox = [frame(to: mac(2), from: mac(1))]
        run()
        #expect(ports[1].received.count == 1 && ports[2].received.count == 1)
        #expect(ports[0].received.isEmpty) // never back to the sender
        // Port 2 answers: its MAC is learned, and port 1 was learned from the first frame.
        ports[2].outbox = [frame(to: mac(1), from: mac(2))]
        run()
        #expect(ports[0].received.count == 1)
        #expect(ports[1].received.count == 1) // not flooded this time
        ports[0].outbox = Array(repeating: frame(to: mac(2), from: mac(1), fill: 7), count: 10)
        run()
        #expect(ports[2].received.count == 11)
        #expect(ports[1].received.count == 1)
        #expect(ports[2].received.last == frame(to: mac(2), from: mac(1), fill: 7)) // bytes intact
        #expect(vale.counters(of: 0).inPackets == 11)
        #expect(vale.counters(of: 2).outPackets == 11)
        #expect(vale.counters(of: 2).outBytes == 11 * 60)
    }

    @Test func broadcastAndMulticastFloodAndAreNotLearned() {
        ports[1].outbox = [frame(to: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], from: mac(9)), frame(to: mac(5, group: true), from: mac(9))]
        run()
        #expect(ports[0].received.count == 2 && ports[2].received.count == 2 && ports[1].received.isEmpty)
        // A multicast *source* is never learned.
        ports[0].outbox = [frame(to: mac(1), from: mac(7, group: true))]
        run()
        #expect(vale.learning.lookup(0x0700_0000_0003) == nil)
    }

    @Test func shortFramesAreDroppedAndCounted() {
        ports[0].outbox = [Array(frame(to: mac(2), from: mac(1)).prefix(13)), frame(to: mac(2), from: mac(1))]
        run()
        #expect(vale.counters(of: 0).dropShort == 1)
        #expect(vale.counters(of: 0).inPackets == 1)
        #expect(ports[1].received.count == 1)
    }

    @Test func fullDestinationDropsAndCounts() {
        ports[2].outbox = [frame(to: mac(1), from: mac(3))]
        run()
        ports[1].outbox = [frame(to: mac(3), from: mac(2))]
        run()
        #expect(ports[2].received.count == 1)
        ports[2].room = 4
        ports[0].outbox = Array(repeating: frame(to: mac(3), from: mac(1)), count: 10)
        run()
        #expect(ports[2].received.count == 1 + 4)
        #expect(vale.counters(of: 2).dropNoRoom == 6)
        #expect(vale.counters(of: 2).outPackets == 1 + 4)
    }

    @Test func offloadTheReceiverCannotTakeIsDropped() {
        ports[1].accepts = []
        ports[0].header.flags = VirtioNetHeader.needsChecksum
        ports[0].outbox = [frame(to: mac(2), from: mac(1))]
        run()
        #expect(vale.counters(of: 1).dropOffload == 1)
        #expect(ports[2].received.count == 1)
    }

    @Test func sameSegmentDestinationIsDropped() {
        ports[0].outbox = [frame(to: mac(8), from: mac(1)), frame(to: mac(1), from: mac(2))]
        run()
        #expect(vale.counters(of: 0).dropSamePort == 1)
    }

    @Test func detachForgetsAddressesAndFloodSkipsThePort() {
        ports[2].outbox = [frame(to: mac(1), from: mac(3))]
        run()
        #expect(vale.learning.lookup(0x0300_0000_0002) == 2)
        vale.lock.withLock { _ in vale.detach(index: 2) }
        #expect(vale.learning.lookup(0x0300_0000_0002) == nil)
        ports[0].outbox = [frame(to: mac(3), from: mac(1))]
        run()
        #expect(ports[1].received.count == 2)
        #expect(ports[2].received.isEmpty)
    }

    @Test func atMost254Ports() throws {
        let big = VALESwitch(name: "vale9")
        try big.lock.withLock { _ throws(SwitchError) in
            for i in 0..<VALESwitch.maxPorts { _ = try big.attach(RecordingPort(), named: "x\(i)") }
            #expect(throws: SwitchError.full("vale9")) { _ = try big.attach(RecordingPort(), named: "extra") }
            #expect(throws: SwitchError.nameInUse("vale9:x3")) { _ = try big.attach(RecordingPort(), named: "x3") }
        }
    }
}

@Suite struct Learning {
    @Test func collisionReplacesOlderEntry() {
        let t = LearningTable()
        defer { t.deallocate() }
        t.learn(0x1234_5678_9abc, port: 3)
        #expect(t.lookup(0x1234_5678_9abc) == 3)
        t.learn(0x1234_5678_9abc, port: 4)
        #expect(t.lookup(0x1234_5678_9abc) == 4)
        // Find another address in the same bucket: the newer one wins, the older floods again.
        var other: UInt64 = 1
        while LearningTable.bucket(other) != LearningTable.bucket(0x1234_5678_9abc) { other += 1 }
        t.learn(other, port: 7)
        #expect(t.lookup(other) == 7)
        #expect(t.lookup(0x1234_5678_9abc) == nil)
        t.forget(port: 7)
        #expect(t.entryCount == 0)
    }
}
