import CVhostShim
import Foundation
import Glibc
import HostPort
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
    public var busyPoll = false
    /// CPU for each switch worker, in order of first appearance of the switch.
    public var workerCPUs: [Int] = []
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

/// The back-end process: switches and their workers, one vhost-user endpoint per port, the
/// control socket, and signals, all driven by one io_uring event loop on the main thread.
public final class Daemon: @unchecked Sendable {
    final class Endpoint {
        let spec: PortSpec
        let device: VhostNetDevice
        let vale: VALESwitch
        var listener: OwnedDescriptor?
        var listenerWatch: EventLoop.Token?
        var connection: Connection?
        var connectionWatch: EventLoop.Token?
        var reconnectTimer: EventLoop.Token?
        var backoff: UInt64 = 0
        var connects = 0
        var removed = false
        init(spec: PortSpec, device: VhostNetDevice, vale: VALESwitch) {
            self.spec = spec
            self.device = device
            self.vale = vale
        }
    }

    /// A host port and the switch it is on.
    struct HostPortEntry {
        let spec: HostPortSpec
        let port: TapPort
        let index: Int
        let vale: VALESwitch
    }

    /// In kernel mode, each port is cross-connected to its netmap port on a two-port switch of
    /// its own; this keeps the netmap binding (descriptor and mapping) alive.
    struct KernelBinding {
        let opened: OpenedNetmapPort
        let index: Int
        let vale: VALESwitch
    }

    private let options: DaemonOptions
    private let logger: Logger
    private let loop: EventLoop
    private var switches: [(vale: VALESwitch, worker: SwitchWorker)] = []
    private var endpoints: [Endpoint] = []
    private var hostPorts: [HostPortEntry] = []
    private var kernelBindings: [KernelBinding] = []
    /// True when the ports are served by netmap's kernel switch.
    public private(set) var usesKernel = false
    private var running = false
    private var controlListener: OwnedDescriptor?
    private var signalDescriptor: OwnedDescriptor?
    private var createdSocketPaths: [String] = []
    private var exitCode: Int32 = 0
    private let stopRequest: OwnedDescriptor

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
        try setUp()
    }

    private func setUp() throws {
        if options.netmapOpener != nil {
            usesKernel = true
            logger.info("switch: netmap ports through the configured opener")
        } else {
            usesKernel = try Self.resolveSwitch(options.switchMode, logger: logger)
        }
        var seen: Set<String> = []
        for spec in options.ports {
            guard seen.insert(spec.fullName).inserted else { throw DaemonError.startup("port \(spec.fullName) given twice") }
        }
        for spec in options.hostPorts {
            guard seen.insert(spec.fullName).inserted else { throw DaemonError.startup("port \(spec.fullName) given twice") }
        }
        for spec in options.ports { _ = try addEndpoint(spec) }
        for spec in options.hostPorts { try addHostPort(spec) }
        if let path = options.controlSocket {
            try makeParentDirectory(path)
            do {
                controlListener = try UnixSocket.listen(path: path, mode: 0o660)
                createdSocketPaths.append(path)
            } catch {
                throw DaemonError.startup("cannot listen on control socket \(path): \(error)")
            }
        }
    }

    private func makeParentDirectory(_ path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        guard !dir.isEmpty else { return }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw DaemonError.startup("cannot create directory \(dir): \(error.localizedDescription)")
        }
    }

    /// Decides between the kernel and the embedded switch, and says which and why.
    static func resolveSwitch(_ mode: SwitchMode, logger: Logger) throws -> Bool {
        if mode == .embedded {
            logger.info("switch: embedded (--switch embedded)")
            return false
        }
        let availability = NetmapAvailability.probe()
        switch availability {
        case .available(let memory):
            logger.info("switch: netmap kernel module (/dev/netmap, API \(NetmapControl.apiVersion), global memory \(memory / 1_048_576) MiB)")
            return true
        case .noDevice(let why), .apiMismatch(let why), .failed(let why):
            if mode == .kernel { throw DaemonError.startup("--switch kernel: \(why)") }
            logger.info("switch: embedded (\(why))")
            return false
        }
    }

    /// Creates a vhost-user device for `spec` on its switch (kernel mode: on a switch of its
    /// own, cross-connected to the netmap port), and its listening socket in server mode.
    private func addEndpoint(_ spec: PortSpec) throws -> Endpoint {
        let (vale, worker): (VALESwitch, SwitchWorker)
        if usesKernel {
            (vale, worker) = try crossConnect(spec.kernelPortName, as: spec.fullName, sync: spec.netmapSync ?? options.netmapSync)
        } else {
            guard !spec.switchName.isEmpty else {
                throw DaemonError.startup("\(spec.fullName): only valeX:Y names are served by the embedded switch; NICs, host rings, pipes, flags and options need the netmap kernel module (--switch kernel)")
            }
            (vale, worker) = try switchNamed(spec.switchName)
        }
        let device = try VhostNetDevice(name: spec.fullName, queuePairs: spec.queuePairs, vale: vale,
                                        logger: logger, wakeWorker: { worker.poke() })
        let e = Endpoint(spec: spec, device: device, vale: vale)
        if spec.mode == .server {
            if let fd = spec.inheritedDescriptor {
                guard fcntl(fd, F_GETFD) >= 0 else {
                    device.detachFromSwitch()
                    throw DaemonError.startup("--fd \(fd) is not an open descriptor")
                }
            } else {
                guard let path = spec.socketPath else { throw DaemonError.startup("\(spec.fullName): no socket path") }
                do {
                    try makeParentDirectory(path)
                    e.listener = try UnixSocket.listen(path: path, mode: spec.socketMode.map { mode_t($0) })
                    createdSocketPaths.append(path)
                    if let group = spec.socketGroup {
                        guard let entry = getgrnam(group) else { throw DaemonError.startup("unknown group '\(group)'") }
                        guard chown(path, uid_t.max, entry.pointee.gr_gid) == 0 else {
                            throw DaemonError.startup("chown \(path) to group \(group): \(Errno(rawValue: errno))")
                        }
                    }
                } catch {
                    device.detachFromSwitch()
                    throw DaemonError.startup("cannot listen on \(path) for \(spec.fullName): \(error)")
                }
            }
        }
        endpoints.append(e)
        if running { start(e) }
        return e
    }

    /// Creates a host port (TAP) on its switch.
    private func addHostPort(_ spec: HostPortSpec) throws {
        let (vale, worker): (VALESwitch, SwitchWorker)
        if usesKernel {
            let name = try NetmapPortName.parse(spec.fullName)
            (vale, worker) = try crossConnect(name, as: spec.fullName, sync: options.netmapSync)
        } else {
            (vale, worker) = try switchNamed(spec.switchName)
        }
        let tap: TapPort
        do {
            tap = try TapPort(name: spec.interfaceName, queues: spec.queues, mtu: spec.mtu, logger: logger)
        } catch {
            throw DaemonError.startup("host port \(spec.fullName): \(error)")
        }
        let index = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(tap, named: spec.interfaceName) }
        worker.poke()
        hostPorts.append(HostPortEntry(spec: spec, port: tap, index: index, vale: vale))
        updateHostOffloads(on: spec.switchName)
    }

    /// Kernel mode: registers `name` on /dev/netmap and puts it on a new two-port switch.
    private func crossConnect(_ name: NetmapPortName, as label: String, sync: NetmapSyncMode) throws -> (VALESwitch, SwitchWorker) {
        let opened: OpenedNetmapPort
        do {
            opened = try (options.netmapOpener ?? KernelPortOpener()).open(name, sync: sync)
        } catch {
            throw DaemonError.startup("\(label): cannot open netmap port \(name.kernelName): \(error)")
        }
        let port = opened.port
        if opened.headerLength == 0 {
            logger.notice("\(label): netmap port \(name.kernelName) takes no virtio-net header: frames needing checksum or TSO offloads are dropped there")
        }
        let vale = VALESwitch(name: label)
        let worker = try addSwitch(vale)
        let index = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(port, named: "netmap") }
        kernelBindings.append(KernelBinding(opened: opened, index: index, vale: vale))
        logger.info("\(label): on netmap port \(name.kernelName) (memory id \(opened.memoryID), \(opened.headerLength)-byte header, \(opened.sync == .kloop ? "synced by netmap's kernel loop" : "synced by ioctl"))")
        return (vale, worker)
    }

    private func addSwitch(_ vale: VALESwitch) throws -> SwitchWorker {
        let cpu = switches.count < options.workerCPUs.count ? options.workerCPUs[switches.count] : nil
        let worker = try SwitchWorker(vale: vale, busyPoll: options.busyPoll, cpu: cpu, logger: logger)
        switches.append((vale, worker))
        if running { worker.start() }
        return worker
    }

    private func switchNamed(_ name: String) throws -> (VALESwitch, SwitchWorker) {
        if let s = switches.first(where: { $0.vale.name == name }) { return s }
        let vale = VALESwitch(name: name)
        return (vale, try addSwitch(vale))
    }

    /// Runs until SIGTERM/SIGINT (or, with an inherited connection, until it closes).
    /// Returns the process exit code.
    public func run() -> Int32 {
        for s in switches { s.worker.start() }
        watchSignals()
        loop.readRepeatedly(stopRequest.rawValue, length: 8) { [unowned self] _, _ in
            logger.notice("stop requested")
            loop.stop()
            return .stop
        }
        if let l = controlListener {
            acceptConnections(on: l.rawValue, what: "control socket") { [unowned self] in serveControlClient($0) }
        }
        running = true
        for e in endpoints { start(e) }
        logger.info("vhost-netmap running: \(endpoints.count) vhost-user port(s), \(hostPorts.count) host port(s) on \(usesKernel ? "netmap kernel ports (\(switches.count) cross-connect worker(s))" : "\(switches.count) embedded switch(es)")\(options.busyPoll ? ", busy-polling" : "")")
        loop.run()
        shutDown()
        return exitCode
    }

    /// Starts serving an endpoint: its inherited connection, its listener, or its connection attempts.
    private func start(_ e: Endpoint) {
        if let fd = e.spec.inheritedDescriptor {
            attach(OwnedDescriptor(adopting: fd), to: e)
        } else if let l = e.listener {
            logger.info("\(e.spec.fullName): listening on \(e.spec.socketPath!) (\(e.spec.queuePairs) queue pair(s))")
            e.listenerWatch = acceptConnections(on: l.rawValue, what: e.spec.fullName) { [unowned self] in acceptFrontEnd($0, for: e) }
        } else {
            connect(e)
        }
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
        let owned = OwnedDescriptor(adopting: fd)
        signalDescriptor = owned
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

    /// Asks the running daemon to stop, from any thread (as SIGTERM does).
    public func requestStop() {
        EventFD.signal(stopRequest.rawValue)
    }

    // MARK: Front-end connections

    /// Multishot accept on `listener`; on an error (e.g. out of descriptors) it pauses for 100 ms
    /// rather than spin, then accepts again.
    @discardableResult
    private func acceptConnections(on listener: CInt, what: String, _ body: @escaping (OwnedDescriptor) -> Void) -> EventLoop.Token {
        loop.acceptConnections(on: listener) { [unowned self] result in
            let error: Errno
            switch result {
            case .success(let fd):
                body(OwnedDescriptor(adopting: fd))
                return .keepWatching
            case .failure(let e):
                error = e
            }
            logger.warning("\(what): accept failed: \(error); retrying in 100 ms")
            loop.after(nanoseconds: 100_000_000) { [unowned self] in _ = acceptConnections(on: listener, what: what, body) }
            return .stop
        }
    }

    private func acceptFrontEnd(_ socket: OwnedDescriptor, for e: Endpoint) {
        if e.connection != nil {
            logger.warning("\(e.spec.fullName): refused a second front-end while one is connected")
            return
        }
        attach(socket, to: e)
    }

    private func connect(_ e: Endpoint) {
        guard let path = e.spec.socketPath, !e.removed else { return }
        do {
            let socket = try UnixSocket.connect(path: path)
            e.backoff = 0
            attach(socket, to: e)
        } catch {
            e.backoff = e.backoff == 0 ? options.reconnectInitialNanoseconds : min(e.backoff * 2, options.reconnectMaxNanoseconds)
            if e.connects == 0 || e.backoff == options.reconnectMaxNanoseconds {
                logger.info("\(e.spec.fullName): connecting to \(path) failed (\(error)); retrying in \(e.backoff / 1_000_000) ms")
            }
            e.reconnectTimer = loop.after(nanoseconds: e.backoff) { [unowned self] in connect(e) }
        }
    }

    private func attach(_ socket: OwnedDescriptor, to e: Endpoint) {
        try? Posix.setNonBlocking(socket.rawValue)
        let c = Connection(socket: socket, device: e.device, logger: logger)
        e.connection = c
        e.connects += 1
        logger.info("\(e.spec.fullName): front-end connected")
        e.connectionWatch = loop.receiveMessages(on: socket.rawValue, capacity: MessageHeader.byteCount + MessageFraming.maxPayload,
                                                 maxDescriptors: MemoryTable.maxRegions, firstLength: c.wantedLength) { [unowned self] received in
            let outcome = c.consume(received)
            updateHostOffloads(on: e.spec.switchName)
            switch outcome {
            case .open:
                return .receive(c.wantedLength)
            case .closed(let why):
                disconnect(e, why: why)
                return .stop
            }
        }
    }

    private func disconnect(_ e: Endpoint, why: String) {
        logger.info("\(e.spec.fullName): front-end disconnected: \(why)")
        e.connection = nil
        e.connectionWatch = nil
        e.device.reset(reason: "disconnect")
        updateHostOffloads(on: e.spec.switchName)
        if e.spec.inheritedDescriptor != nil {
            logger.notice("\(e.spec.fullName): inherited connection closed: stopping")
            loop.stop()
        } else if e.spec.mode == .client {
            e.backoff = options.reconnectInitialNanoseconds
            e.reconnectTimer = loop.after(nanoseconds: e.backoff) { [unowned self] in connect(e) }
        }
    }

    // MARK: Host ports

    /// A host port's TAP may hand us only segments every guest on its switch can take (a guest
    /// without TSO would have to drop them): the offloads are the intersection of the attached
    /// guests' receive features, or all of them while no guest has negotiated.
    private func updateHostOffloads(on switchName: String) {
        let taps = hostPorts.filter { $0.spec.switchName == switchName }
        guard !taps.isEmpty else { return }
        var offloads = TapOffloads.all
        for e in endpoints where e.spec.switchName == switchName {
            guard let f = e.device.negotiatedFeatures else { continue }
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

    // MARK: Control socket

    /// One short request line per connection, read through io_uring; the answer is sent and the
    /// connection closed. A client that sends nothing is dropped after 5 s.
    private func serveControlClient(_ client: OwnedDescriptor) {
        let request = loop.readRepeatedly(client.rawValue, length: 1024) { [unowned self] bytes, _ in
            let line = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            let answer = controlAnswer(line)
            Array((answer + "\n").utf8).withUnsafeBytes { _ = try? UnixSocket.send(client.rawValue, $0) }
            return .stop
        }
        loop.after(nanoseconds: 5_000_000_000) { [unowned self] in loop.cancel(request) }
    }

    /// One request line: `stats`, `fdb`, `ping`, and the switch management that `vhost-netmap
    /// vale` sends: `list`, `attach SPEC` (a vhost-user port, --port syntax), `attach-host SPEC`
    /// (a host port, --host-port syntax), `detach NAME`. Management answers are text: "ok ..." or
    /// "error: ...".
    func controlAnswer(_ line: String) -> String {
        let words = line.split(separator: " ", maxSplits: 1).map(String.init)
        let argument = words.count > 1 ? words[1].trimmingCharacters(in: .whitespaces) : ""
        switch words.first ?? "" {
        case "stats": return statisticsJSON(pretty: true)
        case "fdb": return forwardingTableJSON()
        case "ping": return "pong"
        case "list": return listPorts(argument)
        case "attach":
            do {
                let spec = try PortSpec.parse(argument)
                guard !portExists(spec.fullName) else { return "error: port \(spec.fullName) exists" }
                let e = try addEndpoint(spec)
                logger.notice("control: attached \(spec.fullName) (\(spec.socketPath ?? "?"))")
                return "ok attached \(e.spec.fullName) port \(e.device.portIndex)"
            } catch {
                return "error: \(error)"
            }
        case "attach-host":
            do {
                let spec = try HostPortSpec.parse(argument)
                guard !portExists(spec.fullName) else { return "error: port \(spec.fullName) exists" }
                try addHostPort(spec)
                logger.notice("control: attached host port \(spec.fullName)")
                return "ok attached \(spec.fullName)"
            } catch {
                return "error: \(error)"
            }
        case "detach":
            if let problem = removePort(argument) { return "error: \(problem)" }
            logger.notice("control: detached \(argument)")
            return "ok detached \(argument)"
        default:
            return "error: unknown command '\(line.prefix(32))'; try: stats, fdb, ping, list, attach, attach-host, detach"
        }
    }

    private func portExists(_ name: String) -> Bool {
        endpoints.contains { $0.spec.fullName == name } || hostPorts.contains { $0.spec.fullName == name }
    }

    /// vale-ctl's listing: one line per port, "NAME bridge B port P", switches in order of creation.
    private func listPorts(_ filter: String) -> String {
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

    /// Removes a vhost-user or host port (and, in kernel mode, its netmap binding and worker).
    /// Returns an error text, or nil.
    private func removePort(_ name: String) -> String? {
        var vale: VALESwitch?
        if let i = endpoints.firstIndex(where: { $0.spec.fullName == name }) {
            let e = endpoints.remove(at: i)
            e.removed = true
            for token in [e.listenerWatch, e.connectionWatch, e.reconnectTimer].compactMap({ $0 }) { loop.cancel(token) }
            e.connection = nil
            e.device.detachFromSwitch()
            if e.listener != nil, let path = e.spec.socketPath {
                unlink(path)
                createdSocketPaths.removeAll { $0 == path }
            }
            e.listener = nil
            vale = e.vale
        } else if let i = hostPorts.firstIndex(where: { $0.spec.fullName == name }) {
            let h = hostPorts.remove(at: i)
            h.vale.lock.withLock { _ in h.vale.detach(index: h.index) }
            vale = h.vale
        } else {
            return "no port \(name)"
        }
        if let vale, let k = kernelBindings.firstIndex(where: { $0.vale === vale }) {
            if let w = switches.firstIndex(where: { $0.vale === vale }) {
                switches[w].worker.stop()
                switches.remove(at: w)
            }
            // Only now: the binding's registration unmaps the rings (and stops the kernel loop)
            // that its worker was reading.
            kernelBindings.remove(at: k)
        } else if let vale, let w = switches.first(where: { $0.vale === vale }) {
            w.worker.poke()
        }
        return nil
    }

    public struct PortReport: Codable, Sendable {
        public var name: String
        public var index: Int
        public var socket: String
        public var mode: String
        public var queuePairs: Int
        public var connected: Bool
        public var device: VhostNetDevice.Status
        public var counters: PortCounters
    }

    public struct HostPortReport: Codable, Sendable {
        public var name: String
        public var index: Int
        public var interface: String
        public var queues: Int
        public var offloads: String
        public var readErrors: UInt64
        public var writeErrors: UInt64
        public var writesWhileDown: UInt64
        public var counters: PortCounters
    }

    public struct NetmapPortReport: Codable, Sendable {
        public var name: String
        public var index: Int
        public var headerLength: Int
        public var memoryID: Int
        /// "ioctl" or "kloop".
        public var sync: NetmapSyncMode
        /// kloop: "running", or how netmap's kernel loop ended ("ended: <errno>").
        public var kernelLoop: String?
        public var syncErrors: UInt64
        public var badSlots: UInt64
        public var counters: PortCounters
    }

    public struct SwitchReport: Codable, Sendable {
        public var name: String
        /// "embedded", or "netmap-cross-connect" (a guest and its netmap port, in kernel mode).
        public var kind: String
        public var learnedAddresses: Int
        public var ports: [PortReport]
        public var hostPorts: [HostPortReport]
        public var netmapPorts: [NetmapPortReport]
    }

    public func statistics() -> [SwitchReport] {
        switches.map { s in
            s.vale.lock.withLock { _ in
                let ports = endpoints.filter { $0.vale === s.vale }.map { e in
                    PortReport(name: e.spec.fullName, index: e.device.portIndex,
                               socket: e.spec.socketPath ?? "fd:\(e.spec.inheritedDescriptor ?? -1)",
                               mode: e.spec.mode.rawValue, queuePairs: e.spec.queuePairs,
                               connected: e.connection != nil, device: e.device.statusLocked(),
                               counters: s.vale.counters[e.device.portIndex])
                }
                let taps = hostPorts.filter { $0.vale === s.vale }.map { h in
                    HostPortReport(name: h.spec.fullName, index: h.index, interface: h.spec.interfaceName, queues: h.spec.queues,
                                   offloads: h.port.offloads.description, readErrors: h.port.readErrors,
                                   writeErrors: h.port.writeErrors, writesWhileDown: h.port.writesWhileDown, counters: s.vale.counters[h.index])
                }
                let netmap = kernelBindings.filter { $0.vale === s.vale }.map { k in
                    NetmapPortReport(name: k.opened.name.text, index: k.index, headerLength: k.opened.headerLength,
                                     memoryID: Int(k.opened.memoryID), sync: k.opened.sync,
                                     kernelLoop: k.opened.kernelLoop.map { loop in loop.ended.map { "ended: \(Errno(rawValue: $0))" } ?? "running" },
                                     syncErrors: k.opened.port.syncErrors,
                                     badSlots: k.opened.port.badSlots, counters: s.vale.counters[k.index])
                }
                return SwitchReport(name: s.vale.name, kind: usesKernel ? "netmap-cross-connect" : "embedded",
                                    learnedAddresses: s.vale.learning.entryCount, ports: ports, hostPorts: taps,
                                    netmapPorts: netmap)
            }
        }
    }

    public func statisticsJSON(pretty: Bool) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        let data = (try? encoder.encode(["switches": statistics()])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// The learned addresses of every switch: {"vale0": [{"mac": ..., "port": "vale0:a"}]}.
    public func forwardingTableJSON() -> String {
        var out: [String: [[String: String]]] = [:]
        for s in switches {
            let names = s.vale.lock.withLock { _ in Dictionary(uniqueKeysWithValues: s.vale.attachedPorts.map { ($0.index, "\(s.vale.name):\($0.name)") }) }
            let entries = s.vale.lock.withLock { _ in s.vale.learning.entries }
            out[s.vale.name] = entries.sorted { $0.mac < $1.mac }.map { ["mac": LearningTable.format($0.mac), "port": names[$0.port] ?? "#\($0.port)"] }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: (try? encoder.encode(out)) ?? Data(), as: UTF8.self)
    }

    // MARK: Shutdown

    private func shutDown() {
        logger.info("stopping: rings left consistent, sockets removed")
        for e in endpoints {
            e.device.reset(reason: "shutdown")
            e.connection = nil
        }
        for s in switches { s.worker.stop() }
        for path in createdSocketPaths { unlink(path) }
    }
}
