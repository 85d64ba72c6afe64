import CVhostShim
import Foundation
import Glibc
import HostPort
import Logging
import SystemPackage
import URing
import VALESwitch
import VhostSystem
import VhostUser

public struct DaemonOptions: Sendable {
    public var ports: [PortSpec]
    public var hostPorts: [HostPortSpec] = []
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
        var listener: OwnedDescriptor?
        var connection: Connection?
        var connectionWatch: EventLoop.Token?
        var backoff: UInt64 = 0
        var connects = 0
        init(spec: PortSpec, device: VhostNetDevice) {
            self.spec = spec
            self.device = device
        }
    }

    private let options: DaemonOptions
    private let logger: Logger
    private let loop: EventLoop
    private var switches: [(vale: VALESwitch, worker: SwitchWorker)] = []
    private var endpoints: [Endpoint] = []
    private var hostPorts: [(spec: HostPortSpec, port: TapPort, index: Int)] = []
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
        var seen: Set<String> = []
        for spec in options.ports {
            guard seen.insert(spec.fullName).inserted else { throw DaemonError.startup("port \(spec.fullName) given twice") }
        }
        for spec in options.ports {
            let (vale, worker) = try switchNamed(spec.switchName)
            let device = try VhostNetDevice(name: spec.fullName, queuePairs: spec.queuePairs, vale: vale,
                                            logger: logger, wakeWorker: { worker.poke() })
            endpoints.append(Endpoint(spec: spec, device: device))
        }
        for spec in options.hostPorts {
            guard seen.insert(spec.fullName).inserted else { throw DaemonError.startup("port \(spec.fullName) given twice") }
            let (vale, worker) = try switchNamed(spec.switchName)
            let tap: TapPort
            do {
                tap = try TapPort(name: spec.interfaceName, queues: spec.queues, mtu: spec.mtu, logger: logger)
            } catch {
                throw DaemonError.startup("host port \(spec.fullName): \(error)")
            }
            tap.setOffloads(.all)
            let index = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(tap, named: spec.interfaceName) }
            worker.poke()
            hostPorts.append((spec, tap, index))
        }
        if let path = options.controlSocket {
            try makeParentDirectory(path)
            do {
                controlListener = try UnixSocket.listen(path: path, mode: 0o660)
                createdSocketPaths.append(path)
            } catch {
                throw DaemonError.startup("cannot listen on control socket \(path): \(error)")
            }
        }
        for e in endpoints where e.spec.mode == .server {
            if let fd = e.spec.inheritedDescriptor {
                guard fcntl(fd, F_GETFD) >= 0 else { throw DaemonError.startup("--fd \(fd) is not an open descriptor") }
                continue
            }
            guard let path = e.spec.socketPath else { throw DaemonError.startup("\(e.spec.fullName): no socket path") }
            try makeParentDirectory(path)
            do {
                e.listener = try UnixSocket.listen(path: path, mode: e.spec.socketMode.map { mode_t($0) })
                createdSocketPaths.append(path)
            } catch {
                throw DaemonError.startup("cannot listen on \(path) for \(e.spec.fullName): \(error)")
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

    private func switchNamed(_ name: String) throws -> (VALESwitch, SwitchWorker) {
        if let s = switches.first(where: { $0.vale.name == name }) { return s }
        let vale = VALESwitch(name: name)
        let cpu = switches.count < options.workerCPUs.count ? options.workerCPUs[switches.count] : nil
        let worker = try SwitchWorker(vale: vale, busyPoll: options.busyPoll, cpu: cpu, logger: logger)
        switches.append((vale, worker))
        return (vale, worker)
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
        for e in endpoints {
            if let fd = e.spec.inheritedDescriptor {
                attach(OwnedDescriptor(adopting: fd), to: e)
            } else if let l = e.listener {
                logger.info("\(e.spec.fullName): listening on \(e.spec.socketPath!) (\(e.spec.queuePairs) queue pair(s))")
                acceptConnections(on: l.rawValue, what: e.spec.fullName) { [unowned self] in acceptFrontEnd($0, for: e) }
            } else {
                connect(e)
            }
        }
        logger.info("vhost-netmap running: \(endpoints.count) vhost-user port(s), \(hostPorts.count) host port(s) on \(switches.count) embedded switch(es)\(options.busyPoll ? ", busy-polling" : "")")
        loop.run()
        shutDown()
        return exitCode
    }

    private func watchSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGTERM, SIGINT, SIGUSR1, SIGHUP] { sigaddset(&set, s) }
        let fd = cvh_signalfd(-1, &set, CVH_SFD_CLOEXEC | CVH_SFD_NONBLOCK)
        guard fd >= 0 else {
            logger.error("signalfd failed (errno \(errno)); SIGTERM will not stop the daemon cleanly")
            return
        }
        let owned = OwnedDescriptor(adopting: fd)
        signalDescriptor = owned
        loop.readRepeatedly(fd, length: MemoryLayout<signalfd_siginfo>.size) { [unowned self] bytes, error in
            guard error == nil, bytes.count == MemoryLayout<signalfd_siginfo>.size else {
                logger.error("reading signalfd failed (\(error.map { String(cString: strerror($0)) } ?? "short read"))")
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
    private func acceptConnections(on listener: CInt, what: String, _ body: @escaping (OwnedDescriptor) -> Void) {
        loop.acceptConnections(on: listener) { [unowned self] result in
            if result >= 0 {
                body(OwnedDescriptor(adopting: result))
                return .keepWatching
            }
            logger.warning("\(what): accept failed: \(String(cString: strerror(-result))); retrying in 100 ms")
            loop.after(nanoseconds: 100_000_000) { [unowned self] in acceptConnections(on: listener, what: what, body) }
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
        guard let path = e.spec.socketPath else { return }
        do {
            let socket = try UnixSocket.connect(path: path)
            e.backoff = 0
            attach(socket, to: e)
        } catch {
            e.backoff = e.backoff == 0 ? options.reconnectInitialNanoseconds : min(e.backoff * 2, options.reconnectMaxNanoseconds)
            if e.connects == 0 || e.backoff == options.reconnectMaxNanoseconds {
                logger.info("\(e.spec.fullName): connecting to \(path) failed (\(error)); retrying in \(e.backoff / 1_000_000) ms")
            }
            loop.after(nanoseconds: e.backoff) { [unowned self] in connect(e) }
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
            loop.after(nanoseconds: e.backoff) { [unowned self] in connect(e) }
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
        let request = loop.readRepeatedly(client.rawValue, length: 256) { [unowned self] bytes, _ in
            let line = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            let answer = controlAnswer(line)
            Array((answer + "\n").utf8).withUnsafeBytes { _ = try? UnixSocket.send(client.rawValue, $0) }
            return .stop
        }
        loop.after(nanoseconds: 5_000_000_000) { [unowned self] in loop.cancel(request) }
    }

    private func controlAnswer(_ line: String) -> String {
        switch line {
        case "stats": return statisticsJSON(pretty: true)
        case "fdb": return forwardingTableJSON()
        case "ping": return "pong"
        default: return "{\"error\": \"unknown command '\(line.prefix(32))'; try: stats, fdb, ping\"}"
        }
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

    public struct SwitchReport: Codable, Sendable {
        public var name: String
        public var learnedAddresses: Int
        public var ports: [PortReport]
        public var hostPorts: [HostPortReport]
    }

    public func statistics() -> [SwitchReport] {
        switches.map { s in
            s.vale.lock.withLock { _ in
                let ports = endpoints.filter { $0.spec.switchName == s.vale.name }.map { e in
                    PortReport(name: e.spec.fullName, index: e.device.portIndex,
                               socket: e.spec.socketPath ?? "fd:\(e.spec.inheritedDescriptor ?? -1)",
                               mode: e.spec.mode.rawValue, queuePairs: e.spec.queuePairs,
                               connected: e.connection != nil, device: e.device.statusLocked(),
                               counters: s.vale.counters[e.device.portIndex])
                }
                let taps = hostPorts.filter { $0.spec.switchName == s.vale.name }.map { h in
                    HostPortReport(name: h.spec.fullName, index: h.index, interface: h.spec.interfaceName, queues: h.spec.queues,
                                   offloads: h.port.offloads.description, readErrors: h.port.readErrors,
                                   writeErrors: h.port.writeErrors, writesWhileDown: h.port.writesWhileDown, counters: s.vale.counters[h.index])
                }
                return SwitchReport(name: s.vale.name, learnedAddresses: s.vale.learning.entryCount, ports: ports, hostPorts: taps)
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
