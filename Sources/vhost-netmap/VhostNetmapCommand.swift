import ArgumentParser
import FoundationEssentials
import Logging
import Netmap
import VhostNetmapBackend
import VhostSystem

@main
struct VhostNetmapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vhost-netmap",
        abstract: "A vhost-user virtio-net back-end that plugs VMs into netmap/VALE switches.",
        subcommands: [Serve.self, Stats.self, ForwardingTable.self, Vale.self, Capture.self, KernelCheck.self, QemuArgs.self, LibvirtXML.self, Libvirt.self],
        defaultSubcommand: Serve.self
    )
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve vhost-user devices on the embedded VALE switch (the default command).",
        discussion: """
        Each --port attaches one vhost-user device to a switch port:
          vale0:vm1                  listen on SOCKET_DIR/vale0/vm1.sock
          vale0:vm2=/tmp/vm2.sock    listen on that path (QEMU connects)
          vale0:vm3,client           connect and reconnect (QEMU server=on)
          options: queues=N (1-16), mode=0660, group=kvm, sync=ioctl|kloop

        SOCKET_DIR is --socket-dir, else $VHOST_NETMAP_DIR, else /run/vhost-netmap; \
        the control socket that stats, fdb and vale use is SOCKET_DIR/control.sock.

        Each --host-port connects a switch to the host's network stack through a TAP \
        interface (created, or an existing persistent one with vnet_hdr), brought up:
          vale0:tap0[,queues=N][,mtu=9000]

        The vhost-user back-end conventions are also accepted: --socket-path PATH or \
        --fd N (one device, on the port given by --switch-port), and --print-capabilities.
        """
    )

    @Option(name: .customLong("port"), help: "SWITCH:PORT[=SOCKET][,OPTION...] (repeatable; options above)")
    var ports: [String] = []

    @Option(name: .customLong("host-port"), help: "SWITCH:TAPNAME[,queues=N][,mtu=N] (repeatable)")
    var hostPorts: [String] = []

    @Option(name: .customLong("socket-path"), help: "vhost-user socket to listen on (back-end convention).")
    var socketPath: String?

    @Option(name: .customLong("fd"), help: "An already-connected vhost-user socket (back-end convention).")
    var fd: Int32?

    @Option(name: .customLong("switch-port"), help: "The switch port for --socket-path/--fd.")
    var switchPort: String = "vale0:0"

    @Option(name: .customLong("queues"), help: "Queue pairs for --socket-path/--fd.")
    var queues: Int = 1

    @Flag(name: .customLong("print-capabilities"), help: "Print the back-end capabilities as JSON and exit.")
    var printCapabilities = false

    @Option(name: .customLong("switch"), help: "auto (the default: the netmap kernel module when /dev/netmap is usable), kernel, or embedded.")
    var switchMode: SwitchMode?

    @Option(name: .customLong("socket-dir"), help: "Directory of the sockets without a path and of the control socket (default: $VHOST_NETMAP_DIR, else /run/vhost-netmap).")
    var socketDirectory: String?

    @Option(name: .customLong("control"), help: "Control socket for stats, fdb and vale (default: SOCKET_DIR/control.sock; empty to disable).")
    var control: String?

    @Option(name: .customLong("metrics"), help: "Serve Prometheus metrics at http://ADDR:PORT/metrics (127.0.0.1:9477, [::1]:9477, or :9477 for every IPv4 address).")
    var metrics: String?

    @Option(name: .customLong("netmap-sync"), help: "Kernel mode: sync netmap rings by ioctl per batch, or through netmap's sync kernel loop (CSB + eventfds); a port's sync= overrides it (default: ioctl).")
    var netmapSync: NetmapSyncMode?

    @Flag(name: .customLong("busy-poll"), help: "Switch workers poll without sleeping (benchmarks).")
    var busyPoll = false

    @Option(name: .customLong("worker-cpu"), help: "Pin the switch workers to these CPUs, in order of the switches and their workers (repeatable).")
    var workerCPUs: [Int] = []

    @Option(name: .customLong("workers"), help: "Worker threads per embedded switch (default 1): ports, and the queue pairs of multi-queue ports, are spread over them.")
    var workers: Int?

    @Option(name: .customLong("log-level"), help: "trace, debug, info (the default), notice, warning, error, critical")
    var logLevel: Logger.Level?

    @Option(name: .customLong("config"), help: "Read options from FILE too: one per line, NAME VALUE (port, host-port, metrics, ...; see docs/operating.md).")
    var config: String?

    mutating func validate() throws {
        if let config {
            let file = try ServeConfigFile.read(config)
            ports += file.ports
            hostPorts += file.hostPorts
            workerCPUs += file.workerCPUs
            metrics = metrics ?? file.metrics
            socketDirectory = socketDirectory ?? file.socketDirectory
            control = control ?? file.control
            switchMode = switchMode ?? file.switchMode
            netmapSync = netmapSync ?? file.netmapSync
            logLevel = logLevel ?? file.logLevel
            busyPoll = busyPoll || file.busyPoll
            workers = workers ?? file.workers
        }
        if socketPath != nil && fd != nil { throw ValidationError("--socket-path and --fd are mutually exclusive") }
        if !printCapabilities && ports.isEmpty && hostPorts.isEmpty && socketPath == nil && fd == nil {
            throw ValidationError("give at least one --port or --host-port (or --socket-path / --fd)")
        }
        if let workers, !(1...64).contains(workers) { throw ValidationError("--workers must be 1...64") }
        if !(1...PortSpec.maxQueuePairs).contains(queues) { throw ValidationError("--queues must be 1...\(PortSpec.maxQueuePairs)") }
        _ = try portSpecifications()
        _ = try metricsAddress()
    }

    func metricsAddress() throws -> TCPSocket.Address? {
        guard let metrics else { return nil }
        switch TCPSocket.Address.parse(metrics) {
        case .success(let address): return address
        case .failure(let why): throw ValidationError("--metrics \(metrics): \(why)")
        }
    }

    /// The --port, --host-port and --socket-path/--fd ports, parsed (usage errors name the option).
    func portSpecifications() throws -> (ports: [PortSpec], hostPorts: [HostPortSpec], directory: String) {
        let directory = socketDirectory ?? RunDirectory.path
        var specs: [PortSpec] = []
        var hostSpecs: [HostPortSpec] = []
        do {
            for h in hostPorts { hostSpecs.append(try HostPortSpec.parse(h)) }
            for p in ports { specs.append(try PortSpec.parse(p, socketDirectory: directory)) }
            if socketPath != nil || fd != nil {
                let (sw, port) = try PortSpec.parseName(switchPort)
                var spec = PortSpec(switchName: sw, portName: port, socketPath: socketPath)
                spec.inheritedDescriptor = fd
                spec.queuePairs = queues
                specs.append(spec)
            }
        } catch {
            throw ValidationError(error.description)
        }
        return (specs, hostSpecs, directory)
    }

    func run() throws {
        if printCapabilities {
            print(#"{"type": "net", "features": []}"#)
            return
        }
        let level = logLevel ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "vhost-netmap")
        let (specs, hostSpecs, directory) = try portSpecifications()
        let controlPath = control ?? "\(directory)/control.sock"
        var options = DaemonOptions(ports: specs, controlSocket: controlPath.isEmpty ? nil : controlPath)
        options.socketDirectory = directory
        options.busyPoll = busyPoll
        options.hostPorts = hostSpecs
        options.switchMode = switchMode ?? .auto
        options.netmapSync = netmapSync ?? .ioctl
        options.workerCPUs = workerCPUs
        options.workersPerSwitch = workers ?? 1
        options.metricsAddress = try metricsAddress()
        let daemon: Daemon
        do {
            daemon = try Daemon(options: options, logger: logger)
        } catch {
            logger.critical("start-up failed: \(error)")
            throw ExitCode(1)
        }
        let code = daemon.run()
        if code != 0 { throw ExitCode(code) }
    }
}

/// Sends one command line to the daemon's control socket and prints the answer.
func controlRequest(_ command: String, control: String) throws {
    print(try controlAnswer(command, control: control), terminator: "")
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the running daemon's per-port counters (JSON).")

    @OptionGroup var control: ControlSocketOption

    func run() throws { try controlRequest("stats", control: control.path) }
}

struct ForwardingTable: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fdb", abstract: "Print the switches' learned MAC addresses (JSON).")

    @OptionGroup var control: ControlSocketOption

    func run() throws { try controlRequest("fdb", control: control.path) }
}

extension NetmapSyncMode: ExpressibleByArgument {}
extension SwitchMode: ExpressibleByArgument {}
