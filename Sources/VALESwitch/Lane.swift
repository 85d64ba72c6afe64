import VhostSystem
import Virtio

/// One worker's share of a switch's data path.
///
/// A lane owns sources: a port whose transmit side is one source (`SwitchPort.spreadsQueuePairs`
/// false) belongs to the lane that owns its queue pair 0; a port that spreads its queue pairs
/// gives each pair to a lane of its own (`owns(port:queuePair:)`: consecutive pairs, and ports
/// in consecutive slots, go to consecutive lanes). Only the owning lane reads a source.
///
/// Everything a lane writes while forwarding is its own (batch, counters, destinations to
/// publish, transmit scratch), so lanes take no lock on the hot path but the destination's
/// receive side, once per batch, when there is more than one lane.
public final class SwitchLane: @unchecked Sendable {
    public let index: Int
    /// Lanes of the switch.
    public let count: Int
    /// The switch's storage, for the data path.
    let view: SwitchView
    /// Set once by the switch, which owns its lanes (control operations only: the data path goes
    /// through `view`, with no reference counting).
    unowned(unsafe) var vale: VALESwitch!
    /// Held by the lane's worker for a pass, and by the control plane with every other lane's.
    public let lock = PosixMutex()

    /// The frames of the source being forwarded (Forwarding.swift).
    let batch = FrameBatch()
    /// This lane's share of each port's counters (the switch sums them).
    let counters: UnsafeMutablePointer<PortCounters>
    /// Destinations written since the last flush.
    let dirty: UnsafeMutablePointer<Bool>
    let dirtyList: UnsafeMutablePointer<Int>
    var dirtyCount = 0

    /// Scratch for the source being read: one chain's segments, and the heads of the chains of
    /// the batch (returned to the source after the batch is forwarded).
    public let transmitSegments = SegmentList(capacity: Virtqueue.maxSegmentsPerChain)
    public static let transmitHeadCapacity = 256
    public let transmitHeads = UnsafeMutablePointer<UInt16>.allocate(capacity: transmitHeadCapacity)
    /// Passes run: a source with several queues starts each pass at the next one.
    public private(set) var passes = 0

    init(index: Int, of count: Int, view: SwitchView) {
        self.index = index
        self.count = count
        self.view = view
        counters = .allocate(capacity: VALESwitch.maxPorts)
        counters.initialize(repeating: PortCounters(), count: VALESwitch.maxPorts)
        dirty = .allocate(capacity: VALESwitch.maxPorts)
        dirty.initialize(repeating: false, count: VALESwitch.maxPorts)
        dirtyList = .allocate(capacity: VALESwitch.maxPorts)
    }

    deinit {
        counters.deallocate()
        dirty.deallocate()
        dirtyList.deallocate()
        transmitHeads.deallocate()
    }

    /// Whether this lane reads queue pair `queuePair` of the port in slot `port`.
    @inline(__always)
    public func owns(port: Int, queuePair: Int) -> Bool {
        count == 1 || (port &+ queuePair) % count == index
    }

    /// Whether this lane calls `port` (in slot `index`) to transmit and to sleep: always for a port
    /// that spreads its queue pairs (it reads only the pairs it owns), else if it owns pair 0.
    @inline(__always)
    func visits(_ port: SwitchPort, at index: Int) -> Bool {
        port.spreadsQueuePairs || owns(port: index, queuePair: 0)
    }

    /// The ports this lane transmits from and sleeps on (control operations, lane lock held).
    public var sources: [(index: Int, port: SwitchPort)] {
        vale.attachedPorts.compactMap { visits($0.port, at: $0.index) ? ($0.index, $0.port) : nil }
    }

    // MARK: Data path (the lane's worker, lane lock held)

    /// Lets every source of this lane move up to `budget` frames; returns the total moved.
    @inline(never)
    public func runPass(budget: Int) -> Int {
        var moved = 0
        for k in 0..<view.activeCount {
            let i = view.activeList[k]
            moved &+= view.slots[i].port.unsafelyUnwrapped._withUnsafeGuaranteedRef { port in
                visits(port, at: i) ? port.transmit(into: self, as: i, budget: budget) : 0
            }
            assert(batch.count == 0, "port \(i) staged frames it did not forward")
            flushDeliveries()
        }
        passes &+= 1
        return moved
    }

    /// Counts a malformed descriptor chain against `port`.
    @inline(__always)
    public func countBadDescriptor(from port: Int) {
        counters[port].dropBadDescriptor &+= 1
    }
}
