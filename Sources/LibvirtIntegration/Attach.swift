import VhostNetmapBackend

/// `vhost-netmap libvirt attach`: makes a port and hot-plugs its interface into a running domain,
/// in that order (QEMU connects the moment the device appears). The port is recorded as the
/// integration's, so the watcher removes it once the domain no longer has the interface. It all
/// happens under the ownership lock: a watcher pass never sees the port before its interface.
public struct InterfaceAttachment {
    public var domain: String
    public var port: String
    public var mac: String
    public var queues: Int
    public var qemuListens: Bool
    /// Also add the interface to the domain's definition (virsh attach-device --config).
    public var persistent: Bool
    /// Packed virtqueues for the new interface.
    public var packed: Bool

    public init(domain: String, port: String, mac: String, queues: Int, qemuListens: Bool, persistent: Bool, packed: Bool = false) {
        self.domain = domain
        self.port = port
        self.mac = mac
        self.queues = queues
        self.qemuListens = qemuListens
        self.persistent = persistent
        self.packed = packed
    }

    public struct Outcome: Equatable {
        public var socketPath: String
        /// False when the port existed already (it is used, and left to whoever made it).
        public var createdPort: Bool
    }

    public func run(connection: LibvirtConnection, reconciler: PortReconciler) throws -> Outcome {
        let (switchName, portName) = try PortSpec.parseName(port)
        let path = PortSpec.defaultSocketPath(switchName: switchName, portName: portName, in: reconciler.socketDirectory)
        let element = LibvirtInterfaceXML(socketPath: path, mac: mac, queues: queues, qemuListens: qemuListens, packed: packed).element
        let target = try connection.domain(named: domain)
        guard target.isActive else { throw AttachError("domain '\(domain)' is not running; to add the interface to its definition, use virsh attach-device --config with the XML of libvirt-xml --interface-only") }
        return try reconciler.ownership.update { owned in
            let existing = try reconciler.existingPorts()
            var created = false
            if !existing.contains(port) {
                let wanted = WantedPort(name: port, interface: VhostUserInterface(socketPath: path, qemuListens: qemuListens, queues: queues, mac: mac), domains: [domain])
                let answer = try reconciler.control.request(reconciler.attachLine(wanted))
                guard answer.hasPrefix("ok") else { throw AttachError("the daemon refused port \(port): \(answer)") }
                created = true
            }
            do {
                try target.attachDevice(element, persistent: persistent)
            } catch {
                if created { _ = try? reconciler.control.request("detach \(port)") }
                throw error
            }
            if created { owned.insert(port) }
            return Outcome(socketPath: path, createdPort: created)
        }
    }
}

public struct AttachError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
