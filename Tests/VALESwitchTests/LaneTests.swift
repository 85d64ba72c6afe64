import Testing
import TestSupport
@testable import VALESwitch
import Virtio

/// A frame tagged with its source and sequence number (in the payload), to check that every
/// frame arrives once, intact and in its source's order.
func taggedFrame(to dst: [UInt8], from source: UInt8, sequence: Int) -> [UInt8] {
    let seq = [UInt8(truncatingIfNeeded: sequence), UInt8(truncatingIfNeeded: sequence >> 8)]
    return frame(to: dst, from: mac(source), payload: 0) + [source] + seq + [UInt8](repeating: source ^ 0x5a, count: 43)
}

@Suite struct Lanes {
    @Test func everySourceHasExactlyOneLane() {
        let vale = VALESwitch(name: "vale0", lanes: 3)
        for port in 0..<8 {
            for pair in 0..<8 {
                let owners = vale.lanes.filter { $0.owns(port: port, queuePair: pair) }.map(\.index)
                #expect(owners == [(port + pair) % 3], "port \(port) pair \(pair)")
            }
        }
        let single = VALESwitch(name: "vale1")
        #expect(single.lanes.count == 1 && single.lanes[0].owns(port: 5, queuePair: 3))
    }

    @Test func aPortThatDoesNotSpreadIsVisitedByOneLane() throws {
        let vale = VALESwitch(name: "vale0", lanes: 2)
        let ports = (0..<3).map { _ in RecordingPort() }
        for (i, p) in ports.enumerated() {
            _ = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(p, named: "p\(i)") }
        }
        let visited = vale.lock.withLock { _ in vale.lanes.map { $0.sources.map(\.index) } }
        #expect(visited == [[0, 2], [1]])
    }

    /// Two lanes forward at once, each on its own thread, while the control plane reads the
    /// counters: p0 and p2 (lane 0) and p1 (lane 1) send unicast to p3 and broadcasts. Every
    /// frame arrives exactly once, intact, in its source's order, and the summed counters agree.
    @Test func twoLanesForwardConcurrentlyIntoSharedDestinations() throws {
        let vale = VALESwitch(name: "vale0", lanes: 2)
        let ports = (0..<4).map { _ in RecordingPort() }
        for (i, p) in ports.enumerated() {
            _ = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(p, named: "p\(i)") }
        }
        // Every port announces itself once (a broadcast), so every address is learned.
        for (i, p) in ports.enumerated() { p.outbox = [frame(to: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], from: mac(UInt8(i)))] }
        vale.lock.withLock { _ in _ = vale.runPass(budget: 32) }
        for p in ports { p.received.removeAll() }

        let perSource = 3000
        let broadcastEvery = 10
        for s in 0..<3 {
            ports[s].outbox = (0..<perSource).map { n in
                taggedFrame(to: n % broadcastEvery == 0 ? [0xff, 0xff, 0xff, 0xff, 0xff, 0xff] : mac(3), from: UInt8(s), sequence: n)
            }
        }
        var observed: [UInt64] = []
        let lanes = vale.lanes
        let workers = lanes.map { lane in
            {
                var idle = 0
                while idle < 3 {
                    let moved = lane.lock.withLock { lane.runPass(budget: 32) }
                    idle = moved == 0 ? idle + 1 : 0
                }
            }
        }
        let reader = {
            for _ in 0..<200 {
                observed.append(vale.lock.withLock { _ in vale.counters(of: 3).outPackets })
            }
        }
        runConcurrently(workers + [reader])

        #expect(observed == observed.sorted(), "the summed counters never go backwards")
        let broadcasts = perSource / broadcastEvery
        // p3 got everything from all three; each other port got the broadcasts of the other two.
        #expect(ports[3].received.count == 3 * perSource)
        for s in 0..<3 {
            let fromS = ports[3].received.filter { $0[14] == UInt8(s) }
            #expect(fromS.map { Int($0[15]) | Int($0[16]) << 8 } == Array(0..<perSource), "source \(s) in order, once each")
            #expect(fromS.allSatisfy { $0 == taggedFrame(to: Array($0[0..<6]), from: UInt8(s), sequence: Int($0[15]) | Int($0[16]) << 8) })
            #expect(ports[s].received.count == 2 * broadcasts, "port \(s): the others' broadcasts")
            #expect(!ports[s].received.contains { $0[14] == UInt8(s) }, "never back to the sender")
        }
        let c = vale.lock.withLock { _ in (0..<4).map { vale.counters(of: $0) } }
        for s in 0..<3 {
            #expect(c[s].inPackets == UInt64(perSource) + 1)
            #expect(c[s].outPackets == UInt64(2 * broadcasts) + 3, "the broadcasts, and the three announcements")
        }
        #expect(c[3].outPackets == UInt64(3 * perSource) + 3)
        #expect(vale.lanes[1].counters[0].inPackets == 0 && vale.lanes[0].counters[1].inPackets == 0,
                "a source is counted by its own lane only")
    }

    /// The learning table's entries are single words: lanes learning and looking up at once see
    /// an address on a port it was learned on, never a torn entry.
    @Test func learningFromTwoThreadsNeverTearsAnEntry() {
        let table = LearningTable()
        defer { table.deallocate() }
        let addresses: [UInt64] = (0..<64).map { 0x0200_0000_0000 | UInt64($0) << 8 }
        // One counter per thread, each in memory of its own.
        let wrong = UnsafeMutablePointer<Int>.allocate(capacity: 16)
        wrong.initialize(repeating: 0, count: 16)
        defer { wrong.deallocate() }
        let bodies = (0..<2).map { t in
            {
                for round in 0..<2000 {
                    for (k, a) in addresses.enumerated() {
                        let port = (k + round + t) % 2 == 0 ? 2 * k : 2 * k + 1
                        table.learn(a, port: port)
                        if let p = table.lookup(a), p / 2 != k { wrong[8 * t] += 1 }
                    }
                }
            }
        }
        runConcurrently(bodies)
        #expect(wrong[0] == 0 && wrong[8] == 0)
        #expect(table.learned.allSatisfy { e in addresses.firstIndex(of: e.mac).map { e.port / 2 == $0 } ?? false })
    }
}
