import ArgumentParser
import Glibc
import LibvirtIntegration
import VhostNetmapBackend
import VhostSystem

/// `vhost-netmap libvirt ...` (the daemon's own binary execs this one, so the daemon never loads
/// libvirt): the integration with libvirtd through its C API.
@main
struct LibvirtCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vhost-netmap libvirt",
        abstract: "Drive vhost-netmap ports from libvirt domains (libvirt's C API; also run as: vhost-netmap libvirt).",
        discussion: """
        watch keeps the daemon's ports in step with libvirt's domains, with no hook installed: \
        every <interface type='vhostuser'> whose socket is SOCKET_DIR/<switch>/<port>.sock gets \
        its port when the domain is defined, and the port goes when no domain uses it. attach \
        makes a port and hot-plugs its interface into a running domain. The libvirt hook \
        (docs/operating.md) is the choice for transient domains (virsh create): only a hook runs \
        before QEMU starts.
        """,
        subcommands: [Watch.self, Attach.self]
    )
}

/// What both commands need: libvirt's URI and the daemon's sockets.
struct IntegrationOptions: ParsableArguments {
    @Option(name: [.customShort("c"), .customLong("connect")], help: "libvirt URI, as virsh -c takes it.")
    var uri = "qemu:///system"

    @Option(help: "Directory of the daemon's sockets (default: $VHOST_NETMAP_DIR, else /run/vhost-netmap).")
    var socketDir: String?

    @Option(help: "The daemon's control socket (default: SOCKET_DIR/control.sock).")
    var control: String?

    @Option(help: "Group of the sockets QEMU connects to (default: group in /etc/libvirt/qemu.conf, else libvirt-qemu's, else kvm).")
    var socketGroup: String?

    @Option(help: "Where the list of ports this integration created is kept (default: SOCKET_DIR/libvirt).")
    var stateDir: String?

    func reconciler() -> PortReconciler {
        let directory = socketDir ?? RunDirectory.path
        return PortReconciler(
            socketDirectory: directory, socketGroup: socketGroup ?? IntegrationDefaults.qemuGroup(),
            control: ControlSocket(path: control ?? "\(directory)/control.sock"),
            ownership: PortOwnership(directory: stateDir ?? "\(directory)/libvirt"),
            log: say)
    }
}

/// One line on standard error, written at once (the journal or the test's log file reads it).
func say(_ text: String) {
    Posix.printError("vhost-netmap libvirt: \(text)\n")
}

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create and remove ports as libvirt defines, starts, hot-plugs and undefines domains.",
        discussion: """
        Ports are created when a domain is defined (QEMU needs the socket the moment it \
        starts; libvirt tells of a start only after QEMU runs) and when a running domain gets an \
        interface; they go when the domain is undefined, a transient domain stops, or the \
        interface is unplugged. Only ports the watcher (or libvirt attach) created are removed. \
        Every --resync seconds, and after libvirtd or the daemon restarts, the whole picture is \
        compared again. Stopping the watcher (SIGTERM) leaves the ports.
        """)

    @OptionGroup var options: IntegrationOptions

    @Option(help: "Seconds between full passes (besides those events start).")
    var resync: Double = 10

    func validate() throws {
        guard resync >= 0.5, resync <= 86400 else { throw ValidationError("--resync must be 0.5...86400 seconds") }
    }

    func run() throws {
        let reconciler = options.reconciler()
        say("watching \(options.uri) for interfaces under \(reconciler.socketDirectory) (state: \(reconciler.ownership.directory))")
        do {
            try LibvirtWatcher(uri: options.uri, reconciler: reconciler, resyncSeconds: resync, log: say).run()
        } catch {
            say("stopped: \(error)")
            throw ExitCode.failure
        }
    }
}

struct Attach: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a port and hot-plug its vhost-user interface into a running domain.",
        discussion: """
        The port's socket is SOCKET_DIR/<switch>/<port>.sock; QEMU connects to it (or, with \
        --qemu-listens, listens there). A port that exists already is used and left to its \
        owner; one this command made goes, through libvirt watch, when the domain no longer has \
        the interface. The domain needs shared memory (libvirt-xml prints the <memoryBacking>).
        """)

    @OptionGroup var options: IntegrationOptions

    @Argument(help: "The running domain's name.")
    var domain: String

    @Option(help: "The switch port, valeX:Y.")
    var port: String

    @Option(help: "Guest MAC address (default: derived from the port's name).")
    var mac: String?

    @Option(help: "Queue pairs.")
    var queues = 1

    @Flag(help: "QEMU listens and the back-end connects (libvirt mode='server').")
    var qemuListens = false

    @Flag(help: "Also add the interface to the domain's definition.")
    var persistent = false

    @Flag(help: "Packed virtqueues for the interface (<driver packed='on'/>).")
    var packed = false

    func validate() throws {
        do { _ = try PortSpec.parseName(port) } catch { throw ValidationError(error.description) }
        guard (1...PortSpec.maxQueuePairs).contains(queues) else { throw ValidationError("--queues must be 1...\(PortSpec.maxQueuePairs)") }
        if let mac, !DerivedMAC.isValid(mac) { throw ValidationError("--mac '\(mac)': expected six hex bytes of a unicast address, e.g. 52:54:00:12:34:56") }
    }

    func run() throws {
        let attachment = InterfaceAttachment(domain: domain, port: port, mac: mac ?? DerivedMAC.forName(port), queues: queues,
                                             qemuListens: qemuListens, persistent: persistent, packed: packed)
        do {
            try LibvirtEventLoop.register()
            let connection = try LibvirtConnection(uri: options.uri)
            let outcome = try attachment.run(connection: connection, reconciler: options.reconciler())
            print("attached \(port) (\(outcome.socketPath)) to domain \(domain), MAC \(attachment.mac)"
                  + (outcome.createdPort ? "" : "; the port existed and is left to its owner"))
        } catch {
            Posix.printError("Error: \(error)\n")
            throw ExitCode.failure
        }
    }
}
