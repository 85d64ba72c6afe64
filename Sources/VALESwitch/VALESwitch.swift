import VhostSystem
import Virtio

public enum SwitchError: Error, Equatable, CustomStringConvertible {
    case full(String)
    case nameInUse(String)

    public var description: String {
        switch self {
        case .full(let s): "switch \(s) already has \(VALESwitch.maxPorts) ports"
        case .nameInUse(let n): "port \(n) already exists"
        }
    }
}

/// The embedded VALE-compatible switch: a learning bridge over up to 254 ports.
///
/// Its data path runs on one or more lanes (`SwitchLane`), one worker thread each. A lane owns
/// its sources (a port, or one transmit queue pair of a multi-queue port) and forwards their
/// frames with state of its own: its batch, its counters, its list of destinations to publish.
/// What lanes share is read-only while they run (the port table, changed only with `lock` held,
/// which holds every lane's lock), or made for sharing: the learning table's entries are single
/// atomic words, a capture takes its own lock, and a destination port's receive side is taken
/// once per batch (only with more than one lane: by `slotLocks`, or per receive ring by a port
/// that `locksReceiveRings`).
public final class VALESwitch: @unchecked Sendable {
    public static let maxPorts = 254

    public let name: String
    public let lanes: [SwitchLane]
    /// Every lane's lock, taken in lane order: the control plane holds it while it changes the
    /// switch, and each lane's worker holds its own lane's for a pass.
    public let lock: SwitchLock
    /// With more than one lane, one mutex per port slot (destinations' receive sides are then
    /// locked per batch, unless the port locks its receive rings itself); kept here to be freed
    /// with the switch.
    let slotLocks: MutexArray

    /// Strong references: they keep the ports alive while attached.
    private var ports: [SwitchPort?]
    private var portNames: [String?]
    /// The data path's view of `ports`: unretained references (no ARC traffic per packet), valid
    /// while the port is attached, which `ports` guarantees.
    let slots: UnsafeMutablePointer<PortSlot>
    /// Indices of attached ports, for flooding without scanning empty slots.
    private var active: [Int] = []
    let activeList: UnsafeMutablePointer<Int>
    /// `activeCount` and `captureCount`, in storage the lanes' `SwitchView` points at.
    private let shared: UnsafeMutablePointer<Int>
    private(set) var activeCount: Int {
        get { shared[0] }
        set { shared[0] = newValue }
    }

    struct PortSlot {
        var port: Unmanaged<SwitchPort>?
        /// Whether a lane takes the slot's mutex around the port's receive side (more than one
        /// lane, and a port that does not lock its receive rings itself).
        var locked = false
    }
    public let learning = LearningTable()
    /// Ports being captured (`PortCapture`): tested once per frame, nonzero only while a capture runs.
    var captureCount: Int {
        get { shared[1] }
        set { shared[1] = newValue }
    }
    let captures: UnsafeMutablePointer<CaptureSlot?>
    var retainedCaptures: [PortCapture?]
    /// Bumped (under the lock) whenever ports or their wake descriptors change.
    public private(set) var generation: UInt64 = 0

    /// A switch whose data path runs on `laneCount` lanes (one worker thread each).
    public init(name: String, lanes laneCount: Int = 1) {
        precondition(laneCount >= 1 && laneCount <= 64, "\(laneCount) lanes")
        self.name = name
        ports = Array(repeating: nil, count: Self.maxPorts)
        portNames = Array(repeating: nil, count: Self.maxPorts)
        slots = .allocate(capacity: Self.maxPorts)
        slots.initialize(repeating: PortSlot(port: nil), count: Self.maxPorts)
        activeList = .allocate(capacity: Self.maxPorts)
        shared = .allocate(capacity: 2)
        shared.initialize(repeating: 0, count: 2)
        captures = .allocate(capacity: Self.maxPorts)
        captures.initialize(repeating: nil, count: Self.maxPorts)
        retainedCaptures = Array(repeating: nil, count: Self.maxPorts)
        slotLocks = MutexArray(count: laneCount > 1 ? Self.maxPorts : 0)
        let view = SwitchView(slots: slots, activeList: activeList, counts: shared, captures: captures,
                              learning: learning, slotLocks: slotLocks)
        let lanes = (0..<laneCount).map { SwitchLane(index: $0, of: laneCount, view: view) }
        self.lanes = lanes
        lock = SwitchLock(lanes.map(\.lock))
        for lane in lanes { lane.vale = self }
    }

    deinit {
        slots.deallocate()
        activeList.deallocate()
        shared.deallocate()
        learning.deallocate()
        captures.deallocate()
        slotLocks.deallocate()
    }

    // MARK: Control plane (caller holds `lock`)

    /// Attaches a port under `portName` (the part after "valeX:"); returns its index.
    public func attach(_ port: SwitchPort, named portName: String) throws(SwitchError) -> Int {
        guard !portNames.contains(portName) else { throw .nameInUse("\(name):\(portName)") }
        guard let i = ports.firstIndex(where: { $0 == nil }) else { throw .full(name) }
        ports[i] = port
        portNames[i] = portName
        port.sharedReceiveSide = lanes.count > 1
        for lane in lanes { lane.counters[i] = PortCounters() }
        active.append(i)
        slots[i] = PortSlot(port: Unmanaged.passUnretained(port), locked: lanes.count > 1 && !port.locksReceiveRings)
        rebuildActiveList()
        generation &+= 1
        return i
    }

    public func detach(index: Int) {
        guard ports[index] != nil else { return }
        stopCapture(onPort: index)
        slots[index] = PortSlot(port: nil)
        ports[index] = nil
        portNames[index] = nil
        active.removeAll { $0 == index }
        rebuildActiveList()
        learning.forget(port: index)
        generation &+= 1
    }

    private func rebuildActiveList() {
        for (k, i) in active.enumerated() { activeList[k] = i }
        activeCount = active.count
    }

    /// Marks the wake-up set as changed (a ring started or stopped).
    public func configurationChanged() {
        generation &+= 1
    }

    public var attachedPorts: [(index: Int, name: String, port: SwitchPort)] {
        active.map { ($0, portNames[$0]!, ports[$0]!) }
    }

    public func index(ofPortNamed portName: String) -> Int? {
        portNames.firstIndex(of: portName)
    }

    /// Port `index`'s counters: the sum of every lane's.
    public func counters(of index: Int) -> PortCounters {
        var sum = PortCounters()
        for lane in lanes { sum.add(lane.counters[index]) }
        return sum
    }

    // MARK: Data path on one thread (tests, tools): `lock` held

    /// Runs a pass of every lane in turn; returns the total moved.
    public func runPass(budget: Int) -> Int {
        lanes.reduce(0) { $0 &+ $1.runPass(budget: budget) }
    }

    /// Publishes what every lane delivered since its last flush.
    public func flushDeliveries() {
        for lane in lanes { lane.flushDeliveries() }
    }
}

/// The switch as the lanes' data path sees it: the storage the switch owns (and changes only with
/// every lane's lock held), reached through plain pointers, so that forwarding a frame touches
/// no reference count.
struct SwitchView {
    let slots: UnsafeMutablePointer<VALESwitch.PortSlot>
    let activeList: UnsafeMutablePointer<Int>
    /// [0]: attached ports (`activeList`'s length), [1]: ports being captured.
    let counts: UnsafeMutablePointer<Int>
    let captures: UnsafeMutablePointer<CaptureSlot?>
    let learning: LearningTable
    let slotLocks: MutexArray

    var activeCount: Int {
        @inline(__always) get { counts[0] }
    }
    var captureCount: Int {
        @inline(__always) get { counts[1] }
    }
}

/// Every lane's lock of a switch, taken in lane order (so two holders cannot deadlock) and
/// released in reverse.
public final class SwitchLock: @unchecked Sendable {
    private let locks: [PosixMutex]

    init(_ locks: [PosixMutex]) { self.locks = locks }

    public func withLock<Result, E: Error>(_ body: (inout Void) throws(E) -> Result) throws(E) -> Result {
        for l in locks { l.lock() }
        defer { for l in locks.reversed() { l.unlock() } }
        var nothing: Void = ()
        return try body(&nothing)
    }
}
