import Testing
@testable import VALESwitch
import Virtio

/// A port that stages its frames (a virtio-net header in front of each, in several segments)
/// and records every batch the switch hands it.
final class BatchPort: SwitchPort {
    override init() { super.init() }

    /// Frames to send, each with its header's flags byte.
    var outbox: [(flags: UInt8, bytes: [UInt8])] = []
    /// Segments per frame (the last one takes the rest).
    var pieces = 2
    /// Each batch delivered: the frames' bytes and header flags, in order.
    var batches: [[(flags: UInt8, bytes: [UInt8])]] = []
    /// Set while the port's staged buffers may be read; cleared after forwardStaged returns.
    var buffersHeld = false
    var readAfterRelease = false
    weak var peers: PortsForBatchTest?

    override func transmit(into lane: SwitchLane, as portIndex: Int, budget: Int) -> Int {
        let n = min(budget, outbox.count)
        // Buffers that stay put until the batch is forwarded: header (12 bytes) + frame.
        let buffers = outbox.prefix(n).map { item -> UnsafeMutableRawBufferPointer in
            let b = UnsafeMutableRawBufferPointer.allocate(byteCount: 12 + item.bytes.count, alignment: 8)
            b.initializeMemory(as: UInt8.self, repeating: 0)
            b[0] = item.flags
            b.baseAddress!.advanced(by: 12).copyMemory(from: item.bytes, byteCount: item.bytes.count)
            return b
        }
        buffersHeld = true
        peers?.holding = self
        for b in buffers {
            var segments: [Segment] = []
            var at = 0
            for p in 0..<pieces {
                let length = p == pieces - 1 ? b.count - at : min(5, b.count - at)
                segments.append(Segment(base: b.baseAddress! + at, length: length))
                at += length
            }
            segments.withUnsafeBufferPointer {
                lane.stage(segments: $0.baseAddress!, count: $0.count, offset: 12, length: b.count - 12, queuePair: 0, from: portIndex)
            }
        }
        lane.forwardStaged(from: portIndex)
        buffersHeld = false
        peers?.holding = nil
        // Spoil the buffers before freeing them: a late reader would see it.
        for b in buffers {
            b.initializeMemory(as: UInt8.self, repeating: 0xee)
            b.deallocate()
        }
        outbox.removeFirst(n)
        return n
    }

    override func deliver(_ frames: UnsafePointer<Frame>, selection: UnsafePointer<UInt8>, count: Int,
                          results: UnsafeMutablePointer<DeliveryResult>) {
        if peers?.holding == nil { readAfterRelease = true }
        var batch: [(flags: UInt8, bytes: [UInt8])] = []
        for k in 0..<count {
            let frame = frames[Int(selection[k])]
            var bytes = [UInt8](repeating: 0, count: frame.length)
            var c = frame.cursor
            _ = bytes.withUnsafeMutableBytes { c.read(into: $0.baseAddress!, length: frame.length) }
            batch.append((frame.header.flags, bytes))
            results[k] = .delivered
        }
        batches.append(batch)
    }
}

final class PortsForBatchTest {
    var holding: BatchPort?
}

@Suite struct BatchForwarding {
    let vale = VALESwitch(name: "vale0")
    let ports = (0..<4).map { _ in BatchPort() }
    let shared = PortsForBatchTest()

    init() throws {
        for (i, p) in ports.enumerated() {
            p.peers = shared
            _ = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(p, named: "p\(i)") }
        }
        // Every port announces itself, so unicast is learned.
        for (i, p) in ports.enumerated() {
            p.outbox = [(0, frame(to: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], from: mac(UInt8(i))))]
            run()
        }
        for p in ports { p.batches = [] }
    }

    func run(budget: Int = 32) { vale.lock.withLock { _ in _ = vale.runPass(budget: budget) } }

    @Test func eachDestinationGetsItsFramesInOneCallInOrderWithFloodsInterleaved() {
        let broadcast: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        ports[0].outbox = [
            (1, frame(to: mac(1), from: mac(0), fill: 1)),
            (0, frame(to: mac(2), from: mac(0), fill: 2)),
            (0, frame(to: broadcast, from: mac(0), fill: 3)),
            (VirtioNetHeader.needsChecksum, frame(to: mac(1), from: mac(0), fill: 4)),
            (0, frame(to: mac(0), from: mac(0), fill: 5)),  // to itself: dropped
            (0, frame(to: mac(9), from: mac(0), fill: 6)),  // unknown: flooded
        ]
        run()
        #expect(ports[0].batches.isEmpty)
        #expect(ports[1].batches.map { $0.map { $0.bytes.last! } } == [[1, 3, 4, 6]])
        #expect(ports[2].batches.map { $0.map { $0.bytes.last! } } == [[2, 3, 6]])
        #expect(ports[3].batches.map { $0.map { $0.bytes.last! } } == [[3, 6]])
        // Headers are read in phase one, from the staged buffers.
        #expect(ports[1].batches.first?.map(\.flags) == [1, 0, VirtioNetHeader.needsChecksum, 0])
        #expect(ports[1].batches.first?.first?.bytes == frame(to: mac(1), from: mac(0), fill: 1))
        #expect(vale.counters(of: 0).dropSamePort == 1)
        // Each port also sent (and got the others') announcements in init.
        #expect(vale.counters(of: 0).inPackets == 1 + 6)
        #expect(vale.counters(of: 1).outPackets == 3 + 4 && vale.counters(of: 3).outPackets == 3 + 2)
        #expect(!ports.contains { $0.readAfterRelease })
    }

    @Test func unicastOnlyBatchesTouchOnlyTheirDestinations() {
        ports[3].outbox = (0..<20).map { (0, frame(to: mac(UInt8($0 % 2 + 1)), from: mac(3), fill: UInt8($0))) }
        run()
        #expect(ports[1].batches.count == 1 && ports[2].batches.count == 1)
        #expect(ports[1].batches[0].map { $0.bytes.last! } == (0..<20).filter { $0 % 2 == 0 }.map(UInt8.init))
        #expect(ports[2].batches[0].map { $0.bytes.last! } == (0..<20).filter { $0 % 2 == 1 }.map(UInt8.init))
        #expect(ports[0].batches.isEmpty && ports[3].batches.isEmpty)
    }

    @Test func aFullBatchIsForwardedBeforeMoreIsStaged() {
        // More frames than a batch holds, and chains of many segments: the switch forwards early,
        // while the source still holds its buffers, and nothing is lost or reordered.
        ports[1].pieces = 200
        ports[1].outbox = (0..<70).map { (0, frame(to: mac(2), from: mac(1), payload: 300, fill: UInt8($0))) }
        run(budget: 70)
        let got = ports[2].batches.flatMap { $0 }
        #expect(got.count == 70)
        #expect(got.map { $0.bytes.last! } == (0..<70).map(UInt8.init))
        #expect(got.allSatisfy { $0.bytes.count == 314 })
        #expect(ports[2].batches.count > 2, "200-segment chains fill the segment pool after two frames")
        #expect(ports[2].batches.allSatisfy { $0.count <= FrameBatch.capacity })
        #expect(!ports.contains { $0.readAfterRelease })
    }
}
