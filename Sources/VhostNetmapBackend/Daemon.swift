import CVhostShim
import FoundationEssentials
import Glibc
import DataPath
import Logging
import Netmap
import SystemPackage
import URing
import VALESwitch
import VhostSystem
import VhostUser

/// Which switch serves the ports: netmap's kernel VALE (through /dev/netmap), the embedded one,
/// or the kernel when it is there and speaks our API.
public enum SwitchMode: String, Sendable, CaseIterable {
    case auto, kernel, embedded
}

public struct DaemonOptions: Sendable {
    public var ports: [PortSpec]
    public var switchMode: SwitchMode = .embedded
    /// Opens netmap ports in kernel mode. Set, it also selects kernel mode without probing
    /// /dev/netmap (tests give a model of the kernel here).
    public var netmapOpener: (any NetmapPortOpening)?
    public var hostPorts: [HostPortSpec] = []
    /// Kernel mode: how netmap ports are synced unless a port says otherwise (`sync=`).
    public var netmapSync: NetmapSyncMode = .ioctl
    public var controlSocket: String?
    /// Where `/metrics` is served (Prometheus); nil: nowhere.
    public var metricsAddress: TCPSocket.Address?
    /// Where ports attached without a socket path get theirs: `<dir>/<switch>/<port>.sock`.
    public var socketDirectory = PortSpec.defaultSocketDirectory
    public var busyPoll = false
    /// CPU for each switch worker: the lanes of the first switch to appear, then the next's.
    public var workerCPUs: [Int] = []
    /// Worker threads (lanes) per embedded switch; a kernel cross-connect has one.
    public var workersPerSwitch = 1
    public var reconnectInitialNanoseconds: UInt64 = 100_000_000
    public var reconnectMaxNanoseconds: UInt64 = 2_000_000_000

    public init(ports: [PortSpec], controlSocket: String? = nil) {
        self.ports = ports
        self.controlSocket = controlSocket
    }
}

public enum DaemonError: Error, CustomStringConvertible {
    case startup(String)
    public var description: String { switch self { case .startup(let s): s } }
}

/// The back-end process: it wires a `Topology` (switches, workers, host ports, netmap bindings), a
/// `FrontEndSupervisor` (vhost-user sockets and front-ends) and a `ControlServer`, all driven by
/// one io_uring event loop on the main thread, and handles signals and shutdown.
public final class Daemon: @unchecked Sendable {
    private let options: DaemonOptions
    private let logger: Logger
    private let loop: EventLoop
    let topology: Topology
    let supervisor: FrontEndSupervisor
    private var controlListener: OwnedDescriptor?
    private var metricsListener: OwnedDescriptor?
    private var metricsServer: MetricsServer?
    private var captures: [CaptureSession] = []
    /// What ended captures did, by port: `/metrics` counts on from it.
    private var endedCaptures: [String: CaptureReport] = [:]
    private var signalDescriptor: OwnedDescriptor?
    private let stopRequest: OwnedDescriptor

    /// True when the ports are served by netmap's kernel switch.
    public var usesKernel: Bool { topology.usesKernel }

    public init(options: DaemonOptions, logger: Logger) throws {
        self.options = options
        self.logger = logger
        // Signals go to the signalfd, in every thread (workers inherit this mask).
        Posix.blockSignals([SIGTERM, SIGINT, SIGUSR1, SIGHUP])
        signal(SIGPIPE, SIG_IGN)
        stopRequest = try EventFD.make()
        do {
            loop = try EventLoop()
        } catch {
            throw DaemonError.startup("io_uring is not available (\(error)); check /proc/sys/kernel/io_uring_disabled and seccomp")
        }
        topology = try Topology(options: options, logger: logger)
        supervisor = FrontEndSupervisor(loop: loop, logger: logger, options: options)
        supervisor.deviceChanged = { [unowned self] e in updateHostOffloads(on: e.spec.switchName) }
        supervisor.inheritedConnectionClosed = { [unowned self] in loop.stop() }
        do {
            try setUp()
        } catch {
            // A failed start leaves nothing behind: no socket file, no TAP it created, no worker.
            supervisor.removeSocketFiles()
            topology.stopWorkers()
            throw error
        }
    }

    /// Descriptors the configured ports may hold at once: per vhost-user port its listener and
    /// connection, a kick and a call eventfd per ring, memory-table and log fds; per host-port
    /// queue a TAP fd; the control socket's and the metrics endpoint's clients; and a margin for the rest.
    static func descriptorsNeeded(_ options: DaemonOptions) -> UInt64 {
        let ports = options.ports.reduce(0) { $0 + 4 + 4 * $1.queuePairs + MemoryTable.maxRegions + 2 }
        let hostPorts = options.hostPorts.reduce(0) { $0 + 2 * $1.queues }
        return UInt64(128 + ports + hostPorts + ControlServer.maxClients + MetricsServer.maxClients)
    }

    private func setUp() throws {
        // Ports attached at run time need descriptors too: take what the hard limit allows, at
        // least what the configured ports need.
        let needed = Self.descriptorsNeeded(options)
        let (soft, hard) = Posix.raiseOpenFileLimit(to: max(needed, 65536))
        guard soft >= needed else {
            throw DaemonError.startup("the ports need about \(needed) open files but the limit is \(soft) (hard \(hard)); raise it (ulimit -n \(needed), or LimitNOFILE= in the unit)")
        }
        var seen: Set<String> = []
        for name in options.ports.map(\.fullName) + options.hostPorts.map(\.fullName) {
            guard seen.insert(name).inserted else { throw DaemonError.startup("port \(name) given twice") }
        }
        var paths: Set<String> = []
        for path in options.ports.compactMap(\.socketPath) + [options.controlSocket].compactMap({ $0 }) {
            guard paths.insert(path).inserted else { throw DaemonError.startup("socket path \(path) given twice") }
        }
        for spec in options.ports { _ = try attachPort(spec) }
        for spec in options.hostPorts { try attachHostPort(spec) }
        if let path = options.controlSocket {
            do {
                controlListener = try supervisor.listen(path: path, mode: 0o660)
            } catch let error as DaemonError {
                throw error
            } catch {
                throw DaemonError.startup("cannot listen on control socket \(path): \(error)")
            }
        }
        if let address = options.metricsAddress {
            do {
                metricsListener = try TCPSocket.listen(address)
            } catch {
                throw DaemonError.startup("cannot serve metrics on \(address): \(error)\(error == .addressInUse ? " (another process listens there)" : "")")
            }
        }
    }

    /// Runs until SIGTERM/SIGINT (or, with an inherited connection, until it closes).
    /// Returns the process exit code.
    public func run() -> Int32 {
        topology.startWorkers()
        watchSignals()
        loop.readRepeatedly(stopRequest.rawValue, length: 8) { [unowned self] _, _ in
            logger.notice("stop requested")
            loop.stop()
            return .stop
        }
        if let l = controlListener {
            let control = ControlServer(commands: self, loop: loop, logger: logger)
            loop.acceptRepeatedly(on: l.rawValue, what: "control socket", logger: logger) { control.serve($0) }
        }
        if let l = metricsListener, let address = options.metricsAddress {
            let server = MetricsServer(loop: loop, logger: logger) { [unowned self] in Self.metrics(of: statistics(), captures: captureReports()) }
            metricsServer = server
            loop.acceptRepeatedly(on: l.rawValue, what: "metrics", logger: logger) { server.serve($0) }
            let port = TCPSocket.boundPort(l.rawValue) ?? address.port
            logger.info("metrics on http://\(TCPSocket.Address(host: address.host, port: port))/metrics")
        }
        supervisor.startAll()
        let switchCount = topology.switches.count
        logger.info("vhost-netmap running: \(supervisor.endpoints.count) vhost-user port(s), \(topology.hostPorts.count) host port(s) on \(usesKernel ? "netmap kernel ports (\(switchCount) cross-connect worker(s))" : "\(switchCount) embedded switch(es)")\(options.busyPoll ? ", busy-polling" : "")")
        loop.run()
        shutDown()
        return 0
    }

    /// Asks the running daemon to stop, from any thread (as SIGTERM does).
    public func requestStop() {
        EventFD.signal(stopRequest.rawValue)
    }

    private func watchSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGTERM, SIGINT, SIGUSR1, SIGHUP] { sigaddset(&set, s) }
        let fd = cvh_signalfd(-1, &set, CVH_SFD_CLOEXEC | CVH_SFD_NONBLOCK)
        guard fd >= 0 else {
            logger.error("signalfd failed (\(Errno(rawValue: -fd))); SIGTERM will not stop the daemon cleanly")
            return
        }
        signalDescriptor = OwnedDescriptor(adopting: fd)
        loop.readRepeatedly(fd, length: MemoryLayout<signalfd_siginfo>.size) { [unowned self] bytes, error in
            guard error == nil, bytes.count == MemoryLayout<signalfd_siginfo>.size else {
                logger.error("reading signalfd failed (\(error.map { "\($0)" } ?? "short read"))")
                return .stop
            }
            let info = bytes.loadUnaligned(as: signalfd_siginfo.self)
            switch Int32(info.ssi_signo) {
            case SIGUSR1:
                logger.notice("statistics: \(statisticsJSON(pretty: false))")
            case SIGHUP:
                logger.notice("SIGHUP ignored (no configuration file to reload)")
            default:
                logger.notice("signal \(info.ssi_signo): stopping")
                loop.stop()
            }
            return .keepWatching
        }
    }

    /// Host ports' offloads follow the guests on their switch.
    private func updateHostOffloads(on switchName: String) {
        let guests = supervisor.endpoints.filter { $0.spec.switchName == switchName }.map { $0.device.negotiatedFeatures }
        topology.updateHostOffloads(on: switchName, guests: guests)
    }

    private func shutDown() {
        logger.info("stopping: rings left consistent, sockets removed")
        for c in captures { c.end("the daemon stops") }
        supervisor.resetAll()
        topology.stopWorkers()
        supervisor.removeSocketFiles()
        // Every handler goes, and with it what it holds (endpoints, devices, connections).
        loop.cancelAll()
    }
}

extension Daemon: ControlCommands {
    package func startCapture(_ argument: String, client: OwnedDescriptor) -> String? {
        let request: CaptureSession.Request
        switch CaptureSession.Request.parse(argument) {
        case .success(let r): request = r
        case .failure(let e): return e.description
        }
        guard captures.count < CaptureSession.maxSessions else { return "\(CaptureSession.maxSessions) captures are running; stop one first" }
        let parts = request.port.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, let sw = topology.switches.first(where: { $0.vale.name == parts[0] }),
              let index = sw.vale.lock.withLock({ _ in sw.vale.index(ofPortNamed: parts[1]) }) else {
            return "no port \(request.port) (vhost-netmap vale -l lists them)"
        }
        let session = CaptureSession(vale: sw.vale, index: index, request: request, client: client, loop: loop, logger: logger)
        guard sw.vale.lock.withLock({ _ in sw.vale.startCapture(session.capture, onPort: index) }) else {
            return "port \(request.port) is being captured already"
        }
        session.onEnd = { [unowned self] ended in
            captures.removeAll { $0 === ended }
            endedCaptures[ended.request.port, default: CaptureReport(port: ended.request.port)].add(ended.report)
        }
        captures.append(session)
        session.start()
        return nil
    }

    /// Per port: whether a capture runs, and the copies sent and dropped by all its captures.
    package func captureReports() -> [CaptureReport] {
        var reports = endedCaptures
        for c in captures { reports[c.request.port, default: CaptureReport(port: c.request.port)].add(c.report) }
        return reports.values.sorted { $0.port < $1.port }
    }

    package var socketDirectory: String { options.socketDirectory }
    package func forwardingTableJSON() -> String { topology.forwardingTableJSON() }
    package func listPorts(_ filter: String) -> String { topology.listPorts(filter) }

    package func portExists(_ name: String) -> Bool {
        supervisor.endpoint(named: name) != nil || topology.hostPorts.contains { $0.spec.fullName == name }
    }

    /// A vhost-user device for `spec` on its switch (kernel mode: on a switch of its own,
    /// cross-connected to the netmap port), served by the supervisor.
    package func attachPort(_ spec: PortSpec) throws -> Int {
        let (vale, workers) = try topology.switchFor(spec)
        let device = try VhostNetDevice(name: spec.fullName, queuePairs: spec.queuePairs, vale: vale,
                                        logger: logger, wakeWorker: { workers.poke() })
        do {
            _ = try supervisor.add(spec, device: device, vale: vale)
        } catch {
            device.detachFromSwitch()
            topology.portRemoved(from: vale)
            throw error
        }
        return device.portIndex
    }

    package func attachHostPort(_ spec: HostPortSpec) throws {
        try topology.addHostPort(spec)
        updateHostOffloads(on: spec.switchName)
    }

    /// Removes a vhost-user or host port (and, in kernel mode, its netmap binding and worker).
    package func detachPort(_ name: String) -> String? {
        let vale: VALESwitch
        if let e = supervisor.remove(named: name) {
            e.device.detachFromSwitch()
            vale = e.vale
        } else if let v = topology.removeHostPort(named: name) {
            vale = v
        } else {
            return "no port \(name)"
        }
        topology.portRemoved(from: vale)
        return nil
    }
}
