import Testing
import TestSupport
@testable import DataPath
@testable import VALESwitch
@testable import VhostNetmapBackend
import Virtio

/// How a multi-queue vhost-user port shares its transmit side among the lanes of its switch.
@Suite struct LaneOwnership {
    /// A port with `pairs` queue pairs, all running, in slot `slot` of a switch with `lanes` lanes.
    func port(pairs: Int, slot: Int, lanes: Int) throws -> (VALESwitch, VirtioNetPort) {
        let vale = VALESwitch(name: "vale0", lanes: lanes)
        for k in 0..<slot {
            _ = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(SwitchPort(), named: "filler\(k)") }
        }
        let port = VirtioNetPort(queueCount: 2 * pairs) { _ in }
        _ = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(port, named: "p") }
        port.setReady(tx: port.queues.filter { $0.index & 1 == 1 }, rx: port.queues.filter { $0.index & 1 == 0 })
        port.kickDescriptors = (0..<(2 * pairs)).map { 100 + CInt($0) }
        return (vale, port)
    }

    @Test func eachLaneWakesOnTheKicksOfThePairsItOwns() throws {
        let (vale, port) = try port(pairs: 4, slot: 1, lanes: 2)
        // Slot 1: pairs 1 and 3 on lane 0, pairs 0 and 2 on lane 1 (TX ring of pair q: 2q + 1).
        #expect(port.wakeDescriptors(for: vale.lanes[0], as: 1) == [103, 107])
        #expect(port.wakeDescriptors(for: vale.lanes[1], as: 1) == [101, 105])
        #expect(vale.lanes.allSatisfy { lane in lane.sources.contains { $0.index == 1 } }, "every lane visits a port that spreads its pairs")
    }

    @Test func aPolledRingKeepsOnlyItsOwnLaneAwake() throws {
        let (vale, port) = try port(pairs: 2, slot: 0, lanes: 2)
        port.polledTX = true
        port.kickDescriptors[3] = -1  // pair 1's TX ring has no kick descriptor: lane 1 polls it
        #expect(port.needsPolling(for: vale.lanes[1], as: 0))
        #expect(!port.needsPolling(for: vale.lanes[0], as: 0))
    }

    @Test func oneLaneOwnsEverything() throws {
        let (vale, port) = try port(pairs: 3, slot: 2, lanes: 1)
        #expect(port.wakeDescriptors(for: vale.lanes[0], as: 2) == [101, 103, 105])
    }

    /// Two lanes deliver into one port at once: into its two receive rings in parallel, and into
    /// the same ring by turns (its mutex). The source `s` has two queue pairs, whose frames go
    /// out on lanes 0 and 1 and keep their pair (ring 0 and ring 1 of the destination); `o`, in
    /// slot 1, sends on lane 1 into ring 0 too. Every frame arrives once, intact, in its sender's
    /// order, on its ring; each lane forwarded its own senders.
    @Test func twoLanesDeliverIntoTheReceiveRingsOfOnePortAtOnce() throws {
        let vale = VALESwitch(name: "vale0", lanes: 2)
        let source = try TestGuest("s", on: vale, mac: 1, queuePairs: 2)
        let other = try TestGuest("o", on: vale, mac: 3)
        let destination = try TestGuest("d", on: vale, mac: 2, queuePairs: 2)
        try source.start(queueSize: 1024, pairs: 2)
        try other.start(queueSize: 1024)
        try destination.start(queueSize: 1024, pairs: 2)
        #expect(destination.device.port.locksReceiveRings && destination.device.port.sharedReceiveSide)
        destination.send(ethernet(to: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], from: destination.mac, payload: 50))
        pump(vale)  // the destination's address is learned

        let perSender = 500
        /// Sender 0 and 1: the source's pairs; sender 2: `o`.
        func tagged(sender: Int, _ n: Int) -> [UInt8] {
            var f = ethernet(to: destination.mac, from: sender == 2 ? other.mac : source.mac, payload: 60 + n % 200, seed: UInt8(n & 0xff))
            f[14] = UInt8(sender)
            f[15] = UInt8(n & 0xff)
            f[16] = UInt8(n >> 8)
            return f
        }
        destination.postReceiveBuffers(2 * perSender, pair: 0)
        destination.postReceiveBuffers(perSender, pair: 1)
        for n in 0..<perSender {
            source.send(tagged(sender: 0, n), pair: 0)
            source.send(tagged(sender: 1, n), pair: 1)
            other.send(tagged(sender: 2, n))
        }
        let workers = vale.lanes.map { lane in
            {
                var idle = 0
                while idle < 3 {
                    let moved = lane.lock.withLock { lane.runPass(budget: 32) }
                    idle = moved == 0 ? idle + 1 : 0
                }
            }
        }
        runConcurrently(workers)

        let ring0 = destination.receive(pair: 0).map(\.frame)
        let ring1 = destination.receive(pair: 1).map(\.frame)
        #expect(ring0.count == 2 * perSender && ring1.count == perSender)
        let expected = (0..<perSender).map { n in (0..<3).map { tagged(sender: $0, n) } }
        #expect(ring0.filter { $0[14] == 0 } == expected.map { $0[0] }, "the source's pair 0 on ring 0: once each, intact, in order")
        #expect(ring0.filter { $0[14] == 2 } == expected.map { $0[2] }, "o on ring 0: once each, intact, in order")
        #expect(ring1 == expected.map { $0[1] }, "the source's pair 1 on ring 1")
        let s = source.device.portIndex
        let o = other.device.portIndex
        #expect(vale.lanes.map { $0.counters[s].inPackets } == [UInt64(perSender), UInt64(perSender)], "one pair per lane")
        #expect(vale.lanes[1].counters[o].inPackets == UInt64(perSender), "o goes out on lane 1")
        #expect(vale.counters(of: destination.device.portIndex).outPackets == UInt64(3 * perSender))
    }
}
