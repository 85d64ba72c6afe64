import Testing
@testable import DataPath
import VALESwitch
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
}
