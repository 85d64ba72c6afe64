import Testing
@testable import VALESwitch
import Virtio

/// Port captures: copies in pcap records, by direction, bounded, and gone with the port.
@Suite struct PortCaptures {
    let vale: VALESwitch
    let ports: [RecordingPort]

    init() throws { (vale, ports) = try switchWithRecordingPorts(2) }

    func run() { vale.lock.withLock { _ in _ = vale.runPass(budget: 32) } }

    /// (incl_len, orig_len, bytes) of each pcap record in `data`.
    static func records(_ data: [UInt8]) -> [(Int, Int, [UInt8])] {
        var out: [(Int, Int, [UInt8])] = []
        var at = 0
        func u32(_ i: Int) -> Int { Int(data[i]) | Int(data[i + 1]) << 8 | Int(data[i + 2]) << 16 | Int(data[i + 3]) << 24 }
        while at + 16 <= data.count {
            let incl = u32(at + 8), orig = u32(at + 12)
            out.append((incl, orig, Array(data[at + 16 ..< at + 16 + incl])))
            at += 16 + incl
        }
        return out
    }

    @Test func eachDirectionCopiesWhatItShould() {
        let tx = PortCapture(direction: .tx, snapLength: 65_535)
        let rx = PortCapture(direction: .rx, snapLength: 20)
        vale.lock.withLock { _ in
            #expect(vale.startCapture(tx, onPort: 0))
            #expect(vale.startCapture(rx, onPort: 1))
            #expect(!vale.startCapture(PortCapture(direction: .both, snapLength: 64), onPort: 0), "one capture per port")
        }
        let f = frame(to: mac(2), from: mac(1), payload: 100)
        ports[0].outbox = [f]
        ports[1].outbox = [frame(to: mac(1), from: mac(2))]
        run()
        var out: [UInt8] = []
        #expect(tx.drain(into: &out) == 1)
        let sent = Self.records(out)
        #expect(sent.count == 1 && sent[0].0 == f.count && sent[0].1 == f.count && sent[0].2 == f, "port 0's own frame, whole")
        out = []
        #expect(rx.drain(into: &out) == 1, "port 1 received one frame (port 0's); its own is tx")
        let got = Self.records(out)
        #expect(got.count == 1 && got[0].0 == 20 && got[0].1 == f.count && got[0].2 == Array(f.prefix(20)), "cut at the snap length")
        #expect(tx.fileHeader.count == 24 && tx.fileHeader.prefix(4) == [0xd4, 0xc3, 0xb2, 0xa1])
    }

    @Test func aFullRingDropsCopiesNotFrames() {
        let c = PortCapture(direction: .tx, snapLength: 64, capacity: 4)
        vale.lock.withLock { _ in _ = vale.startCapture(c, onPort: 0) }
        ports[0].outbox = (0..<10).map { frame(to: mac(2), from: mac(1), fill: UInt8($0)) }
        run()
        #expect(ports[1].received.count == 10, "every frame switched")
        #expect(c.dropped == 6)
        var out: [UInt8] = []
        #expect(c.drain(into: &out, limit: 3) == 3 && c.drain(into: &out) == 1)
        #expect(Self.records(out).map { $0.2[14] } == [0, 1, 2, 3], "the first four, in order")
        ports[0].outbox = [frame(to: mac(2), from: mac(1), fill: 9)]
        run()
        out = []
        #expect(c.drain(into: &out) == 1 && Self.records(out)[0].2[14] == 9, "room again once drained")
    }

    @Test func stoppingOrDetachingEndsTheCopies() {
        let c = PortCapture(direction: .both, snapLength: 64)
        vale.lock.withLock { _ in _ = vale.startCapture(c, onPort: 0) }
        vale.lock.withLock { _ in vale.stopCapture(onPort: 0) }
        ports[0].outbox = [frame(to: mac(2), from: mac(1))]
        run()
        var out: [UInt8] = []
        #expect(c.drain(into: &out) == 0)
        let d = PortCapture(direction: .both, snapLength: 64)
        vale.lock.withLock { _ in
            _ = vale.startCapture(d, onPort: 1)
            vale.detach(index: 1)
            #expect(!vale.isCapturing(d, onPort: 1))
            #expect(vale.captureCount == 0)
        }
    }
}
