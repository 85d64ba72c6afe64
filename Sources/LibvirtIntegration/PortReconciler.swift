import VhostNetmapBackend

/// The daemon's control socket, as the reconciler uses it: one request line, one answer.
public protocol PortControl {
    func request(_ line: String) throws -> String
}

/// The real daemon, through its control socket.
public struct ControlSocket: PortControl {
    public let path: String
    public init(path: String) { self.path = path }

    public func request(_ line: String) throws -> String {
        String(decoding: try ControlClient.request(line, socket: path), as: UTF8.self).trimmingWhitespace
    }
}

/// What libvirt says about one domain: its name and the XML documents whose vhost-user
/// interfaces need a port (the definition's, for the next start; the running one's).
public struct DomainConfiguration {
    public var name: String
    public var documents: [String]
    public init(name: String, documents: [String]) {
        self.name = name
        self.documents = documents
    }
}

/// A port some domain needs: created listening (QEMU connects) or connecting (QEMU listens).
public struct WantedPort: Equatable {
    public var name: String
    public var interface: VhostUserInterface
    public var domains: [String]
}

/// Which switch port a socket path stands for: `<socket dir>/<switch>/<port>.sock`, the
/// convention of `libvirt-xml`, `qemu-args` and the hook. Paths elsewhere are not the daemon's.
public enum SocketConvention {
    public static func portName(for path: String, socketDirectory: String) -> String? {
        guard let parts = components(path), let base = components(socketDirectory),
              parts.count == base.count + 2, Array(parts.prefix(base.count)) == base,
              parts[parts.count - 1].hasSuffix(".sock") else { return nil }
        let name = "\(parts[parts.count - 2]):\(parts[parts.count - 1].dropLast(5))"
        guard (try? PortSpec.parseName(name)) != nil else { return nil }
        return name
    }

    /// The path's components without empty and "." ones; nil for a relative path or one with
    /// "..", which is not resolved (it would need the file system, and symlinks can lie).
    private static func components(_ path: String) -> [Substring]? {
        guard path.hasPrefix("/") else { return nil }
        let parts = path.split(separator: "/").filter { $0 != "." }
        return parts.contains("..") ? nil : parts
    }
}

/// Keeps the daemon's ports in step with libvirt's domains: every vhost-user interface whose
/// socket follows the convention gets its port, and the ports this integration created go
/// once no domain uses them. Ports it did not create (the operator's, the hook's) are never
/// removed; a port that exists already is used as it is.
public final class PortReconciler {
    public let socketDirectory: String
    public let socketGroup: String
    let control: any PortControl
    public let ownership: PortOwnership
    let log: (String) -> Void
    /// Messages already logged, so a standing problem is logged once, not at every pass.
    private var reported: Set<String> = []

    public init(socketDirectory: String, socketGroup: String, control: any PortControl,
                ownership: PortOwnership, log: @escaping (String) -> Void) {
        self.socketDirectory = socketDirectory
        self.socketGroup = socketGroup
        self.control = control
        self.ownership = ownership
        self.log = log
    }

    /// The ports the domains need, by name.
    public func wantedPorts(_ domains: [DomainConfiguration]) -> [String: WantedPort] {
        var wanted: [String: WantedPort] = [:]
        for domain in domains {
            for document in domain.documents {
                let interfaces: [VhostUserInterface]
                do { interfaces = try DomainInterfaces.parse(document) } catch {
                    logOnce("domain \(domain.name): \(error); its interfaces are skipped")
                    continue
                }
                for var interface in interfaces {
                    guard let name = SocketConvention.portName(for: interface.socketPath, socketDirectory: socketDirectory) else {
                        continue  // not one of the daemon's sockets
                    }
                    // The same socket, spelled as the convention spells it (no "//" or "/./").
                    let (switchName, portName) = try! PortSpec.parseName(name)
                    interface.socketPath = PortSpec.defaultSocketPath(switchName: switchName, portName: portName, in: socketDirectory)
                    guard (1...PortSpec.maxQueuePairs).contains(interface.queues) else {
                        logOnce("domain \(domain.name): \(name) asks for \(interface.queues) queue pairs (1...\(PortSpec.maxQueuePairs)); skipped")
                        continue
                    }
                    if let seen = wanted[name] {
                        if seen.interface.qemuListens != interface.qemuListens || seen.interface.queues != interface.queues {
                            logOnce("port \(name): domains \(seen.domains.joined(separator: ", ")) and \(domain.name) disagree on its mode or queues; the first is kept")
                        }
                        if !seen.domains.contains(domain.name) { wanted[name]!.domains.append(domain.name) }
                    } else {
                        wanted[name] = WantedPort(name: name, interface: interface, domains: [domain.name])
                    }
                }
            }
        }
        return wanted
    }

    /// The `attach` request that makes `port` as its interface needs it.
    public func attachLine(_ port: WantedPort) -> String {
        var options = port.interface.qemuListens ? ["client"] : ["mode=0660", "group=\(socketGroup)"]
        if port.interface.queues > 1 { options.append("queues=\(port.interface.queues)") }
        return "attach \(port.name)=\(port.interface.socketPath)," + options.joined(separator: ",")
    }

    public struct Pass: Equatable {
        public var created: [String] = []
        public var removed: [String] = []
        public var failed: [String] = []
    }

    /// One pass, under the ownership lock: `domains` is called inside it, so a port that
    /// `attach` is plugging in is seen with its domain.
    public func reconcile(_ domains: () throws -> [DomainConfiguration]) throws -> Pass {
        try ownership.update { owned in
            let wanted = wantedPorts(try domains())
            let existing = try existingPorts()
            var pass = Pass()
            // Made by us but gone (the daemon restarted, or an operator detached it): forget it,
            // and make it again below if a domain still needs it.
            owned.formIntersection(existing)
            for (name, port) in wanted.sorted(by: { $0.key < $1.key }) where !owned.contains(name) {
                if existing.contains(name) {
                    logOnce("port \(name) (domain \(port.domains.joined(separator: ", "))) exists already: used as it is, and never removed by this watcher")
                    continue
                }
                let answer = try control.request(attachLine(port))
                if answer.hasPrefix("ok") {
                    owned.insert(name)
                    pass.created.append(name)
                    log("created port \(name) on \(port.interface.socketPath) for domain \(port.domains.joined(separator: ", "))")
                } else {
                    pass.failed.append(name)
                    logOnce("port \(name) for domain \(port.domains.joined(separator: ", ")): the daemon refused it: \(answer)")
                }
            }
            for name in owned.sorted() where wanted[name] == nil {
                let answer = try control.request("detach \(name)")
                if answer.hasPrefix("ok") || answer.hasPrefix("error: no port") {
                    owned.remove(name)
                    pass.removed.append(name)
                    log("removed port \(name): no domain uses it")
                } else {
                    pass.failed.append(name)
                    logOnce("port \(name): the daemon did not remove it: \(answer)")
                }
            }
            return pass
        }
    }

    /// The daemon's ports (`list`: "NAME bridge B port P" lines).
    func existingPorts() throws -> Set<String> {
        let answer = try control.request("list")
        guard !answer.hasPrefix("error") else { throw OwnershipError("the daemon's port list: \(answer)") }
        return Set(answer.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) })
    }

    func logOnce(_ message: String) {
        if reported.insert(message).inserted { log(message) }
    }
}
