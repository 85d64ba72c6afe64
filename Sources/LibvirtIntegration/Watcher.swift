import CLibvirt
import CVhostShim
import Glibc

/// `vhost-netmap libvirt watch`: follows libvirtd's domain events and keeps the daemon's ports
/// in step (PortReconciler). Ports are made when a domain is *defined*: QEMU needs its socket
/// the moment it starts, and libvirt reports a start only after QEMU runs. A pass also runs
/// on every device hot-plug or unplug, on (re)connecting to libvirtd, and every `resync`
/// seconds (a restarted daemon gets its ports back). Stopping the watcher leaves the ports.
public final class LibvirtWatcher {
    public let uri: String
    let reconciler: PortReconciler
    let resyncSeconds: Double
    let log: (String) -> Void

    public init(uri: String, reconciler: PortReconciler, resyncSeconds: Double, log: @escaping (String) -> Void) {
        self.uri = uri
        self.reconciler = reconciler
        self.resyncSeconds = resyncSeconds
        self.log = log
    }

    /// Runs until SIGTERM or SIGINT.
    public func run() throws {
        try LibvirtEventLoop.register()
        WatchState.log = log
        let signals = try Self.signalDescriptor()
        try LibvirtEventLoop.watchReadable(signals) { _, fd, _, _ in
            var info = signalfd_siginfo()
            if read(fd, &info, MemoryLayout<signalfd_siginfo>.size) > 0 { WatchState.stopSignal = Int32(info.ssi_signo) }
        }
        LibvirtEventLoop.addTick(milliseconds: 500)
        var connection: LibvirtConnection?
        var nextConnect = 0.0, nextPass = 0.0
        var connectProblem = ""
        while WatchState.stopSignal == 0 {
            let now = Self.now()
            if WatchState.connectionClosed, connection != nil {
                log("the connection to libvirtd (\(uri)) closed; reconnecting")
                connection = nil
                nextConnect = now + 1
            }
            WatchState.connectionClosed = false
            if connection == nil, now >= nextConnect {
                do {
                    connection = try connect()
                    log("connected to libvirtd (\(uri)); watching domain events")
                    connectProblem = ""
                    nextPass = now
                } catch {
                    if "\(error)" != connectProblem { log("cannot connect to libvirtd (\(error)); retrying every 2 s") }
                    connectProblem = "\(error)"
                    nextConnect = now + 2
                }
            }
            if let connection, WatchState.eventsPending || now >= nextPass {
                WatchState.eventsPending = false
                nextPass = now + resyncSeconds
                do {
                    _ = try reconciler.reconcile { try Self.configurations(connection) }
                } catch {
                    reconciler.logOnce("this pass did not finish (\(error)); trying again in 2 s")
                    nextPass = now + 2
                }
            }
            try LibvirtEventLoop.runOnce()
        }
        log("signal \(WatchState.stopSignal): stopping; the ports stay for their domains")
    }

    private func connect() throws -> LibvirtConnection {
        let connection = try LibvirtConnection(uri: uri)
        connection.keepAlive(interval: 5, count: 3)
        try connection.registerDomainEvents(
            lifecycle: { _, domain, event, _, _ in
                if let domain, let name = virDomainGetName(domain) { WatchState.note("domain \(String(cString: name)): \(LifecycleEvent.name(event))") }
                WatchState.eventsPending = true
                return 0
            },
            deviceChange: { _, domain, alias, _ in
                if let domain, let name = virDomainGetName(domain) {
                    WatchState.note("domain \(String(cString: name)): device \(alias.map { String(cString: $0) } ?? "?") added or removed")
                }
                WatchState.eventsPending = true
            })
        connection.onClose { _, _, _ in WatchState.connectionClosed = true }
        return connection
    }

    /// Each domain's documents: its definition (persistent domains: the ports must exist before
    /// it starts) and, while it runs, its live XML (hot-plugged interfaces). A domain that
    /// vanished between the list and the lookup needs nothing; any other failure ends the pass
    /// before it removes anything.
    static func configurations(_ connection: LibvirtConnection) throws -> [DomainConfiguration] {
        var out: [DomainConfiguration] = []
        for domain in try connection.allDomains() {
            do {
                out.append(try configuration(of: domain))
            } catch {
                guard error.isNoDomain else { throw error }
            }
        }
        return out
    }

    static func configuration(of domain: LibvirtDomain) throws(LibvirtError) -> DomainConfiguration {
        var documents: [String] = []
        if domain.isPersistent { documents.append(try domain.xml(inactive: true)) }
        if domain.isActive { documents.append(try domain.xml()) }
        return DomainConfiguration(name: domain.name, documents: documents)
    }

    private static func signalDescriptor() throws -> Int32 {
        var mask = sigset_t()
        sigemptyset(&mask)
        sigaddset(&mask, SIGTERM)
        sigaddset(&mask, SIGINT)
        pthread_sigmask(SIG_BLOCK, &mask, nil)
        let fd = cvh_signalfd(-1, &mask, CVH_SFD_CLOEXEC | CVH_SFD_NONBLOCK)
        guard fd >= 0 else { throw OwnershipError("signalfd: \(String(cString: strerror(-fd)))") }
        return fd
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

/// What the C callbacks hand the loop; they run on the loop's own thread (inside runOnce).
enum WatchState {
    nonisolated(unsafe) static var eventsPending = false
    nonisolated(unsafe) static var connectionClosed = false
    nonisolated(unsafe) static var stopSignal: Int32 = 0
    nonisolated(unsafe) static var log: ((String) -> Void)?

    static func note(_ text: String) { log?(text) }
}

/// virDomainEventType's names, for the log.
enum LifecycleEvent {
    static func name(_ event: Int32) -> String {
        let names = ["defined", "undefined", "started", "suspended", "resumed", "stopped", "shut down", "pmsuspended", "crashed"]
        return names.indices.contains(Int(event)) ? names[Int(event)] : "event \(event)"
    }
}
