import Synchronization
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
/// One worker thread runs the data path of a switch; `lock` is held by it for a pass over the
/// ports and by the control plane while it changes a port, so the data path takes no other lock.
public final class VALESwitch: @unchecked Sendable {
    public static let maxPorts = 254

    public let name: String
    public let lock = Lock<Void>(())

    /// Strong references: they keep the ports alive while attached.
    private var ports: [SwitchPort?]
    private var portNames: [String?]
    /// The data path's view of `ports`: unretained references (no ARC traffic per packet), valid
    /// while the port is attached, which `ports` guarantees.
    let slots: UnsafeMutablePointer<PortSlot>
    /// Indices of attached ports, for flooding without scanning empty slots.
    private var active: [Int] = []
    let activeList: UnsafeMutablePointer<Int>
    private(set) var activeCount = 0

    struct PortSlot {
        var port: Unmanaged<SwitchPort>?
    }
    public private(set) var counters: UnsafeMutablePointer<PortCounters>
    public let learning = LearningTable()
    let dirty: UnsafeMutablePointer<Bool>
    let dirtyList: UnsafeMutablePointer<Int>
    var dirtyCount = 0
    /// The frames of the source port being forwarded (Forwarding.swift).
    let batch = FrameBatch()
    /// Ports being captured (`PortCapture`): tested once per frame, nonzero only while a capture runs.
    var captureCount = 0
    let captures: UnsafeMutablePointer<CaptureSlot?>
    var retainedCaptures: [PortCapture?]
    /// Bumped (under the lock) whenever ports or their wake descriptors change.
    public private(set) var generation: UInt64 = 0

    public init(name: String) {
        self.name = name
        ports = Array(repeating: nil, count: Self.maxPorts)
        portNames = Array(repeating: nil, count: Self.maxPorts)
        counters = .allocate(capacity: Self.maxPorts)
        counters.initialize(repeating: PortCounters(), count: Self.maxPorts)
        dirty = .allocate(capacity: Self.maxPorts)
        dirty.initialize(repeating: false, count: Self.maxPorts)
        dirtyList = .allocate(capacity: Self.maxPorts)
        slots = .allocate(capacity: Self.maxPorts)
        slots.initialize(repeating: PortSlot(port: nil), count: Self.maxPorts)
        activeList = .allocate(capacity: Self.maxPorts)
        captures = .allocate(capacity: Self.maxPorts)
        captures.initialize(repeating: nil, count: Self.maxPorts)
        retainedCaptures = Array(repeating: nil, count: Self.maxPorts)
    }

    deinit {
        slots.deallocate()
        activeList.deallocate()
        counters.deallocate()
        dirty.deallocate()
        dirtyList.deallocate()
        learning.deallocate()
        captures.deallocate()
    }

    // MARK: Control plane (caller holds `lock`)

    /// Attaches a port under `portName` (the part after "valeX:"); returns its index.
    public func attach(_ port: SwitchPort, named portName: String) throws(SwitchError) -> Int {
        guard !portNames.contains(portName) else { throw .nameInUse("\(name):\(portName)") }
        guard let i = ports.firstIndex(where: { $0 == nil }) else { throw .full(name) }
        ports[i] = port
        portNames[i] = portName
        counters[i] = PortCounters()
        active.append(i)
        slots[i].port = Unmanaged.passUnretained(port)
        rebuildActiveList()
        generation &+= 1
        return i
    }

    public func detach(index: Int) {
        guard ports[index] != nil else { return }
        stopCapture(onPort: index)
        slots[index].port = nil
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

    // MARK: Data path (worker thread, `lock` held)

    /// Lets every port move up to `budget` frames; returns the total moved.
    @inline(never)
    public func runPass(budget: Int) -> Int {
        var moved = 0
        for k in 0..<activeCount {
            let i = activeList[k]
            moved &+= slots[i].port.unsafelyUnwrapped._withUnsafeGuaranteedRef { $0.transmit(into: self, as: i, budget: budget) }
            assert(batch.count == 0, "port \(i) staged frames it did not forward")
            flushDeliveries()
        }
        return moved
    }

    /// Counts a malformed descriptor chain against `port`.
    @inline(__always)
    public func countBadDescriptor(from port: Int) {
        counters[port].dropBadDescriptor &+= 1
    }
}
