import FoundationEssentials
import Glibc
import Logging
import SystemPackage
import URing
import VALESwitch
import VhostSystem
import VhostUser

/// The vhost-user side of each device: its listening socket (server mode), its connection
/// attempts with back-off (client mode) or its inherited connection; it accepts, attaches and
/// drops front-ends and feeds their messages to the device. Runs on the control thread's event
/// loop. It also owns every socket file the daemon creates, and removes them at the end.
final class FrontEndSupervisor {
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
        /// Front-ends in a row that left within `shortSession` of connecting.
        var shortSessions = 0
        var refused = 0
        var lastLeaveReason: String?
        /// While a front-end in a leave loop is slowed down: the timer that ends the pause, and the
        /// connection that came meanwhile (the newest; older ones are closed).
        var acceptPause: EventLoop.Token?
        var waiting: OwnedDescriptor?
        var refusedFrontEnds = RateLimitedLog(interval: 10)
        var leaveLoop = RateLimitedLog(interval: 10)
        init(spec: PortSpec, device: VhostNetDevice, vale: VALESwitch) {
            self.spec = spec
            self.device = device
            self.vale = vale
        }
    }

    private let loop: EventLoop
    private let logger: Logger
    private let reconnectInitial: UInt64
    private let reconnectMax: UInt64
    private(set) var endpoints: [Endpoint] = []
    /// Socket files this process created, with their inodes: only these are ever unlinked.
    private var createdSockets: [String: SocketFileIdentity] = [:]
    private var running = false
    /// After each message from a front-end and each disconnect (host offloads follow the guests).
    var deviceChanged: (Endpoint) -> Void = { _ in }
    /// When an inherited connection closes (the daemon then stops).
    var inheritedConnectionClosed: () -> Void = {}

    init(loop: EventLoop, logger: Logger, options: DaemonOptions) {
        self.loop = loop
        self.logger = logger
        reconnectInitial = options.reconnectInitialNanoseconds
        reconnectMax = options.reconnectMaxNanoseconds
    }

    func endpoint(named name: String) -> Endpoint? { endpoints.first { $0.spec.fullName == name } }

    /// Serves `device` as `spec` says: in server mode its socket listens from now on (connections
    /// are accepted once `startAll` ran).
    func add(_ spec: PortSpec, device: VhostNetDevice, vale: VALESwitch) throws -> Endpoint {
        let e = Endpoint(spec: spec, device: device, vale: vale)
        if spec.mode == .server {
            if let fd = spec.inheritedDescriptor {
                guard fcntl(fd, F_GETFD) >= 0 else { throw DaemonError.startup("--fd \(fd) is not an open descriptor") }
            } else {
                guard let path = spec.socketPath else { throw DaemonError.startup("\(spec.fullName): no socket path") }
                do {
                    e.listener = try listen(path: path, mode: spec.socketMode.map { mode_t($0) })
                    if let group = spec.socketGroup {
                        guard let entry = getgrnam(group) else { throw DaemonError.startup("unknown group '\(group)'") }
                        guard chown(path, uid_t.max, entry.pointee.gr_gid) == 0 else {
                            throw DaemonError.startup("chown \(path) to group \(group): \(Errno(rawValue: errno))")
                        }
                    }
                } catch {
                    throw DaemonError.startup("cannot listen on \(path) for \(spec.fullName): \(error)")
                }
            }
        }
        endpoints.append(e)
        if running { start(e) }
        return e
    }

    /// Stops serving endpoint `name`: its watches and timers cancelled, its connection dropped,
    /// its socket file removed. Returns it (its device is the caller's to detach).
    func remove(named name: String) -> Endpoint? {
        guard let i = endpoints.firstIndex(where: { $0.spec.fullName == name }) else { return nil }
        let e = endpoints.remove(at: i)
        e.removed = true
        for token in [e.listenerWatch, e.connectionWatch, e.reconnectTimer, e.acceptPause].compactMap({ $0 }) { loop.cancel(token) }
        e.connection = nil
        e.waiting = nil
        if e.listener != nil, let path = e.spec.socketPath { removeSocketFile(path) }
        e.listener = nil
        return e
    }

    /// A listening socket at `path` (its directory created), removed again by `removeSocketFiles`.
    func listen(path: String, mode: mode_t?) throws -> OwnedDescriptor {
        try makeParentDirectory(path)
        let socket: OwnedDescriptor
        do {
            socket = try UnixSocket.listen(path: path, mode: mode)
        } catch {
            guard error == .addressInUse else { throw error }
            let owner = UnixSocket.probe(path)?.owner ?? "another process"
            throw DaemonError.startup("\(path) is in use: \(owner) listens on it; stop it or choose another path")
        }
        createdSockets[path] = SocketFileIdentity(path: path)
        return socket
    }

    func startAll() {
        running = true
        for e in endpoints { start(e) }
    }

    /// Devices reset (rings published as the guest expects) and connections dropped.
    func resetAll() {
        for e in endpoints {
            e.device.reset(reason: "shutdown")
            e.connection = nil
        }
    }

    func removeSocketFiles() {
        for path in createdSockets.keys { removeSocketFile(path) }
    }

    /// Unlinks `path` if it is still the socket file this process created: one that another
    /// process put there since (after ours was removed by hand) is left alone.
    func removeSocketFile(_ path: String) {
        guard let created = createdSockets.removeValue(forKey: path) else { return }
        if SocketFileIdentity(path: path) == created {
            unlink(path)
        } else {
            logger.warning("\(path) is no longer the socket this process created: left in place")
        }
    }

    // MARK: Front-end connections

    /// Starts serving an endpoint: its inherited connection, its listener, or its connection attempts.
    private func start(_ e: Endpoint) {
        if let fd = e.spec.inheritedDescriptor {
            attach(OwnedDescriptor(adopting: fd), to: e)
        } else if let l = e.listener {
            e.device.logger.info("listening on \(e.spec.socketPath!) (\(e.spec.queuePairs) queue pair(s))")
            e.listenerWatch = loop.acceptRepeatedly(on: l.rawValue, what: e.spec.fullName, logger: logger) { [unowned self] in acceptFrontEnd($0, for: e) }
        } else {
            connect(e)
        }
    }

    private func acceptFrontEnd(_ socket: OwnedDescriptor, for e: Endpoint) {
        if let current = e.connection {
            // A front-end that closed and reconnected at once: its old connection's end of
            // stream may not have been read yet. It is gone, so the new one is served.
            if Self.peerHungUp(current.socket.rawValue) {
                if let watch = e.connectionWatch { loop.cancel(watch) }
                disconnect(e, why: "front-end closed the connection (seen when it reconnected)")
            } else {
                e.refused += 1
                e.refusedFrontEnds.note { suppressed in
                    e.device.logger.warning("refused a second front-end while one is connected\(suppressed > 0 ? " (and \(suppressed) more since the last such line)" : "")")
                }
                return
            }
        }
        if e.acceptPause != nil {
            e.waiting = socket  // served when the pause ends
            return
        }
        attach(socket, to: e)
    }

    /// Whether the peer of a connected socket has closed it (or shut down its writing side).
    static func peerHungUp(_ fd: CInt) -> Bool {
        let readHangUp: Int16 = 0x2000  // POLLRDHUP (Linux; Glibc's module map hides it)
        var pfd = pollfd(fd: fd, events: readHangUp, revents: 0)
        return poll(&pfd, 1, 0) == 1 && pfd.revents & (readHangUp | Int16(POLLHUP | POLLERR)) != 0
    }

    /// A front-end that keeps leaving right after it connected (a queue count or feature it
    /// cannot have, a crash loop) is slowed down: after three such sessions in a row the listener
    /// pauses (server mode) or the reconnect back-off grows (client mode), and one line per 10 s
    /// says why.
    static let shortSession: Duration = .seconds(1)

    private func noteLeave(_ e: Endpoint, connection c: Connection, why: String) -> UInt64? {
        let short = ContinuousClock.now - c.connectedAt < Self.shortSession && !c.featuresChosen
        e.shortSessions = short ? e.shortSessions + 1 : 0
        let reason = c.probableLeaveReason.map { "\(why); \($0)" } ?? why
        e.lastLeaveReason = reason
        guard e.shortSessions >= 3 else {
            e.device.logger.info("front-end disconnected after \(c.messagesHandled) message(s)\(c.lastRequest.map { ", the last \($0)" } ?? ""): \(reason)")
            return nil
        }
        e.backoff = e.backoff == 0 ? reconnectInitial : min(e.backoff * 2, reconnectMax)
        let delay = e.backoff
        e.leaveLoop.note { suppressed in
            e.device.logger.warning("front-end keeps leaving right after connecting (\(e.shortSessions) times in a row\(suppressed > 0 ? ", \(suppressed) not logged" : "")): \(reason); next connection in \(delay / 1_000_000) ms")
        }
        return delay
    }

    private func connect(_ e: Endpoint) {
        guard let path = e.spec.socketPath, !e.removed else { return }
        do {
            let socket = try UnixSocket.connect(path: path)
            attach(socket, to: e)
        } catch {
            e.backoff = e.backoff == 0 ? reconnectInitial : min(e.backoff * 2, reconnectMax)
            if e.connects == 0 || e.backoff == reconnectMax {
                e.device.logger.info("connecting to \(path) failed (\(error)); retrying in \(e.backoff / 1_000_000) ms")
            }
            e.reconnectTimer = loop.after(nanoseconds: e.backoff) { [unowned self] in connect(e) }
        }
    }

    private func attach(_ socket: OwnedDescriptor, to e: Endpoint) {
        try? Posix.setNonBlocking(socket.rawValue)
        let c = Connection(socket: socket, device: e.device, logger: logger)
        e.connection = c
        e.connects += 1
        e.device.logger.log(level: e.shortSessions >= 3 ? .debug : .info, "front-end connected")
        e.connectionWatch = loop.receiveMessages(on: socket.rawValue, capacity: MessageHeader.byteCount + MessageFraming.maxPayload,
                                                 maxDescriptors: MemoryTable.maxRegions, firstLength: c.wantedLength) { [unowned self] received in
            let outcome = c.consume(received)
            deviceChanged(e)
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
        let pause = e.connection.flatMap { noteLeave(e, connection: $0, why: why) }
        if pause == nil { e.backoff = 0 }
        e.connection = nil
        e.connectionWatch = nil
        // A front-end in a leave loop is logged once per interval (noteLeave), not per attempt.
        let inLoop = e.shortSessions >= 3
        e.device.reset(reason: "disconnect", logLevel: inLoop ? .debug : .info)
        deviceChanged(e)
        if e.spec.inheritedDescriptor != nil {
            e.device.logger.notice("inherited connection closed: stopping")
            inheritedConnectionClosed()
        } else if e.spec.mode == .client {
            e.reconnectTimer = loop.after(nanoseconds: pause ?? reconnectInitial) { [unowned self] in connect(e) }
        } else if let pause {
            // Connections that come meanwhile wait (the newest is served when the pause ends).
            if let t = e.acceptPause { loop.cancel(t) }
            e.acceptPause = loop.after(nanoseconds: pause) { [unowned self] in
                e.acceptPause = nil
                if let socket = e.waiting, !e.removed {
                    e.waiting = nil
                    acceptFrontEnd(socket, for: e)
                }
            }
        }
    }

    private func makeParentDirectory(_ path: String) throws {
        let dir = FilePath(path).removingLastComponent().string
        guard !dir.isEmpty else { return }
        do {
            try Posix.makeDirectories(dir)
        } catch {
            throw DaemonError.startup("cannot create directory \(dir): \(error)")
        }
    }
}

extension EventLoop {
    /// Multishot accept on `listener`; on an error (e.g. out of descriptors) it pauses for 100 ms
    /// rather than spin, then accepts again.
    @discardableResult
    func acceptRepeatedly(on listener: CInt, what: String, logger: Logger, _ body: @escaping (OwnedDescriptor) -> Void) -> EventLoop.Token {
        acceptConnections(on: listener) { [unowned self] result in
            switch result {
            case .success(let fd):
                body(OwnedDescriptor(adopting: fd))
                return .keepWatching
            case .failure(let error):
                logger.warning("\(what): accept failed: \(error); retrying in 100 ms")
                after(nanoseconds: 100_000_000) { [unowned self] in _ = acceptRepeatedly(on: listener, what: what, logger: logger, body) }
                return .stop
            }
        }
    }
}

/// Which file a path names (device and inode), to tell our socket file from a later one.
struct SocketFileIdentity: Equatable {
    let device: UInt64
    let inode: UInt64

    init?(path: String) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }
}
