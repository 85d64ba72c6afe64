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
    private let slots: UnsafeMutablePointer<PortSlot>
    /// Indices of attached ports, for flooding without scanning empty slots.
    private var active: [Int] = []
    private let activeList: UnsafeMutablePointer<Int>
    private var activeCount = 0

    struct PortSlot {
        var port: Unmanaged<SwitchPort>?
    }
    public private(set) var counters: UnsafeMutablePointer<PortCounters>
    public let learning = LearningTable()
    private var dirty: UnsafeMutablePointer<Bool>
    private var dirtyList: UnsafeMutablePointer<Int>
    private var dirtyCount = 0
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
            flushDeliveries()
        }
        return moved
    }

    /// Counts a malformed descriptor chain against `port`.
    @inline(__always)
    public func countBadDescriptor(from port: Int) {
        counters[port].dropBadDescriptor &+= 1
    }

    /// Learns the source, then delivers to the learned port or floods.
    @inline(__always)
    public func forward(_ frame: Frame, from source: Int) {
        guard frame.length >= 14 else {
            counters[source].dropShort &+= 1
            return
        }
        counters[source].inPackets &+= 1
        counters[source].inBytes &+= UInt64(frame.length)
        if captureCount != 0, let c = captures[source], c.tx { c.capture._withUnsafeGuaranteedRef { $0.record(frame) } }

        let (dst, src) = Self.addresses(of: frame)
        if src & 1 == 0 { learning.learn(src, port: source) }
        if dst & 1 == 0, let d = learning.lookup(dst) {
            if d == source {
                counters[source].dropSamePort &+= 1
            } else if let port = slots[d].port {
                port._withUnsafeGuaranteedRef { deliver(frame, to: d, $0) }
            }
            return
        }
        for k in 0..<activeCount {
            let d = activeList[k]
            if d != source { slots[d].port.unsafelyUnwrapped._withUnsafeGuaranteedRef { deliver(frame, to: d, $0) } }
        }
    }

    @inline(__always)
    private func deliver(_ frame: Frame, to index: Int, _ port: SwitchPort) {
        switch port.deliver(frame) {
        case .delivered:
            counters[index].outPackets &+= 1
            counters[index].outBytes &+= UInt64(frame.length)
            if captureCount != 0, let c = captures[index], c.rx { c.capture._withUnsafeGuaranteedRef { $0.record(frame) } }
            if !dirty[index] {
                dirty[index] = true
                dirtyList[dirtyCount] = index
                dirtyCount &+= 1
            }
        case .noRoom: counters[index].dropNoRoom &+= 1
        case .notReady: counters[index].dropNotReady &+= 1
        case .offloadMismatch: counters[index].dropOffload &+= 1
        case .badDescriptor: counters[index].dropBadDescriptor &+= 1
        }
    }

    /// Publishes every destination written since the last flush.
    @inline(__always)
    public func flushDeliveries() {
        for k in 0..<dirtyCount {
            let i = dirtyList[k]
            dirty[i] = false
            slots[i].port?._withUnsafeGuaranteedRef { $0.flushDeliveries() }
        }
        dirtyCount = 0
    }

    /// Destination and source MAC (48 bits each, first byte in the low bits: bit 0 is the
    /// group bit). Read once from the frame; it may span segments.
    @inline(__always)
    static func addresses(of frame: Frame) -> (UInt64, UInt64) {
        let first = frame.segments[0]
        if first.length >= frame.offset &+ 12 {
            let p = UnsafeRawPointer(first.base) + frame.offset
            return (mac(p), mac(p + 6))
        }
        var bytes: (UInt64, UInt64) = (0, 0)
        return withUnsafeMutableBytes(of: &bytes) { raw in
            var c = frame.cursor
            _ = c.read(into: raw.baseAddress!, length: 12)
            return (mac(UnsafeRawPointer(raw.baseAddress!)), mac(UnsafeRawPointer(raw.baseAddress!) + 6))
        }
    }

    @inline(__always)
    static func mac(_ p: UnsafeRawPointer) -> UInt64 {
        UInt64(p.loadUnaligned(as: UInt32.self)) | UInt64(p.loadUnaligned(fromByteOffset: 4, as: UInt16.self)) << 32
    }
}
