import DataPath
import FoundationEssentials
import Logging
import Netmap
import VALESwitch
import VhostSystem
import Virtio

/// What the daemon serves, below the sockets: its switches, each with its worker threads, the host
/// ports on them, and in kernel mode the netmap binding of each cross-connect. It creates and
/// removes these, in the order the data path needs, and answers questions about them. Devices
/// and their front-ends are the supervisor's.
final class Topology {
    /// A host port and the switch it is on.
    struct HostPortEntry {
        let spec: HostPortSpec
        let port: TapPort
        let index: Int
        let vale: VALESwitch
    }

    /// In kernel mode, each port is cross-connected to its netmap port on a two-port switch of
    /// its own; this keeps the netmap binding (descriptor, mapping, kernel loop) alive.
    struct KernelBinding {
        let opened: OpenedNetmapPort
        let index: Int
        let vale: VALESwitch
    }

    private let options: DaemonOptions
    private let logger: Logger
    /// True when the ports are served by netmap's kernel switch.
    let usesKernel: Bool
    /// Each switch with its workers (`SwitchWorkers.vale`), in order of creation.
    private(set) var switches: [SwitchWorkers] = []
    private(set) var hostPorts: [HostPortEntry] = []
    private(set) var kernelBindings: [KernelBinding] = []
    /// Once the daemon runs, a new switch's worker starts at once.
    private var running = false

    init(options: DaemonOptions, logger: Logger) throws {
        self.options = options
        self.logger = logger
        if options.netmapOpener != nil {
            usesKernel = true
            logger.info("switch: netmap ports through the configured opener")
        } else {
            usesKernel = try Self.resolveSwitch(options.switchMode, logger: logger)
        }
    }

    /// Decides between the kernel and the embedded switch, and says which and why.
    static func resolveSwitch(_ mode: SwitchMode, logger: Logger) throws -> Bool {
        if mode == .embedded {
            logger.info("switch: embedded (--switch embedded)")
            return false
        }
        switch NetmapAvailability.probe() {
        case .available(let memory):
            logger.info("switch: netmap kernel module (/dev/netmap, API \(NetmapControl.apiVersion), global memory \(memory / 1_048_576) MiB)")
            return true
        case .noDevice(let why), .apiMismatch(let why), .failed(let why):
            if mode == .kernel { throw DaemonError.startup("--switch kernel: \(why)") }
            logger.info("switch: embedded (\(why))")
            return false
        }
    }

    func startWorkers() {
        running = true
        for s in switches { s.start() }
    }

    func stopWorkers() {
        for s in switches { s.stop() }
    }

    func workers(of vale: VALESwitch) -> SwitchWorkers? {
        switches.first { $0.vale === vale }
    }

    /// The switch a device for `spec` goes on: in kernel mode a new cross-connect to its netmap
    /// port, otherwise its embedded switch (created on first use).
    func switchFor(_ spec: PortSpec) throws -> (VALESwitch, SwitchWorkers) {
        if usesKernel {
            return try crossConnect(spec.kernelPortName, as: spec.fullName, sync: spec.netmapSync ?? options.netmapSync)
        }
        guard !spec.switchName.isEmpty else {
            throw DaemonError.startup("\(spec.fullName): only valeX:Y names are served by the embedded switch; NICs, host rings, pipes, flags and options need the netmap kernel module (--switch kernel)")
        }
        return try switchNamed(spec.switchName)
    }

    /// Creates a host port (TAP) on its switch.
    func addHostPort(_ spec: HostPortSpec) throws {
        let (vale, workers): (VALESwitch, SwitchWorkers)
        if usesKernel {
            let name = try NetmapPortName.parse(spec.fullName)
            (vale, workers) = try crossConnect(name, as: spec.fullName, sync: options.netmapSync)
        } else {
            (vale, workers) = try switchNamed(spec.switchName)
        }
        let tap: TapPort
        do {
            tap = try TapPort(name: spec.interfaceName, queues: spec.queues, mtu: spec.mtu, logger: logger)
        } catch {
            throw DaemonError.startup("host port \(spec.fullName): \(error)")
        }
        let index = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(tap, named: spec.interfaceName) }
        workers.poke()
        hostPorts.append(HostPortEntry(spec: spec, port: tap, index: index, vale: vale))
    }

    /// Takes host port `name` off its switch; returns the switch, or nil if there is no such port.
    func removeHostPort(named name: String) -> VALESwitch? {
        guard let i = hostPorts.firstIndex(where: { $0.spec.fullName == name }) else { return nil }
        let h = hostPorts.remove(at: i)
        h.vale.lock.withLock { _ in h.vale.detach(index: h.index) }
        return h.vale
    }

    /// After a port left `vale`: in kernel mode its cross-connect goes — the worker stops first,
    /// then the binding's registration unmaps the rings (and stops the kernel loop) it was
    /// reading; on an embedded switch the worker is told its ports changed.
    func portRemoved(from vale: VALESwitch) {
        if let k = kernelBindings.firstIndex(where: { $0.vale === vale }) {
            if let w = switches.firstIndex(where: { $0.vale === vale }) {
                switches[w].stop()
                switches.remove(at: w)
            }
            kernelBindings.remove(at: k)
        } else {
            workers(of: vale)?.poke()
        }
    }

    /// A host port's TAP may hand us only segments every guest on its switch can take (a guest
    /// without TSO would have to drop them): the offloads are the intersection of the guests'
    /// negotiated receive features (`guests`, nil while not negotiated), or all of them while no
    /// guest has negotiated.
    func updateHostOffloads(on switchName: String, guests: [VirtioFeatures?]) {
        let taps = hostPorts.filter { $0.spec.switchName == switchName }
        guard !taps.isEmpty else { return }
        var offloads = TapOffloads.all
        for case let f? in guests {
            var accepted: TapOffloads = []
            if f.contains(.netGuestCSUM) {
                accepted.insert(.checksum)
                if f.contains(.netGuestTSO4) { accepted.insert(.tso4) }
                if f.contains(.netGuestTSO6) { accepted.insert(.tso6) }
                if f.contains(.netGuestECN) { accepted.insert(.tsoECN) }
            }
            offloads.formIntersection(accepted)
        }
        for t in taps { t.port.setOffloads(offloads) }
    }

    /// vale-ctl's listing: one line per port, "NAME bridge B port P", switches in order of creation.
    func listPorts(_ filter: String) -> String {
        var lines: [String] = []
        for (b, s) in switches.enumerated() {
            let ports = s.vale.lock.withLock { _ in s.vale.attachedPorts }
            for p in ports {
                let name = usesKernel ? s.vale.name : "\(s.vale.name):\(p.name)"
                if usesKernel && p.name == "netmap" { continue }
                if !filter.isEmpty && name != filter && s.vale.name != filter { continue }
                lines.append("\(name) bridge \(b) port \(p.index)")
            }
        }
        return lines.isEmpty ? (filter.isEmpty ? "" : "error: no port \(filter)") : lines.joined(separator: "\n")
    }

    /// The learned addresses of every switch: {"vale0": [{"mac": ..., "port": "vale0:a"}]}.
    func forwardingTableJSON() -> String {
        var out: [String: [[String: String]]] = [:]
        for s in switches {
            let names = s.vale.lock.withLock { _ in Dictionary(uniqueKeysWithValues: s.vale.attachedPorts.map { ($0.index, "\(s.vale.name):\($0.name)") }) }
            let entries = s.vale.lock.withLock { _ in s.vale.learning.learned }
            out[s.vale.name] = entries.sorted { $0.mac < $1.mac }.map { ["mac": LearningTable.format($0.mac), "port": names[$0.port] ?? "#\($0.port)"] }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(out)) ?? Data(), as: UTF8.self)
    }

    // MARK: Switches

    /// Kernel mode: registers `name` on /dev/netmap and puts it on a new two-port switch.
    private func crossConnect(_ name: NetmapPortName, as label: String, sync: NetmapSyncMode) throws -> (VALESwitch, SwitchWorkers) {
        let opened: OpenedNetmapPort
        do {
            opened = try (options.netmapOpener ?? KernelPortOpener()).open(name, sync: sync)
        } catch {
            throw DaemonError.startup("\(label): cannot open netmap port \(name.kernelName): \(error)")
        }
        let logger = logger.with("port", label)
        if opened.headerLength == 0 {
            logger.notice("netmap port \(name.kernelName) takes no virtio-net header: frames needing checksum or TSO offloads are dropped there")
        }
        // One lane: a cross-connect has two sources, and the kernel side is its own parallelism.
        let vale = VALESwitch(name: label)
        let workers = try addSwitch(vale)
        let index = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(opened.port, named: "netmap") }
        kernelBindings.append(KernelBinding(opened: opened, index: index, vale: vale))
        logger.info("on netmap port \(name.kernelName) (memory id \(opened.memoryID), \(opened.headerLength)-byte header, \(opened.sync == .kloop ? "synced by netmap's kernel loop" : "synced by ioctl"))")
        return (vale, workers)
    }

    /// Starts (once running) one worker per lane of `vale`. `--worker-cpu` CPUs are handed out
    /// in order: to the first switch's lanes, then the next switch's.
    private func addSwitch(_ vale: VALESwitch) throws -> SwitchWorkers {
        let first = switches.reduce(0) { $0 + $1.vale.lanes.count }
        let cpus: [Int?] = (0..<vale.lanes.count).map { k in
            first + k < options.workerCPUs.count ? options.workerCPUs[first + k] : nil
        }
        let workers = try SwitchWorkers(vale: vale, busyPoll: options.busyPoll, cpus: cpus, logger: logger)
        switches.append(workers)
        if running { workers.start() }
        return workers
    }

    private func switchNamed(_ name: String) throws -> (VALESwitch, SwitchWorkers) {
        if let s = switches.first(where: { $0.vale.name == name }) { return (s.vale, s) }
        let vale = VALESwitch(name: name, lanes: options.workersPerSwitch)
        return (vale, try addSwitch(vale))
    }
}
