import ArgumentParser
import Foundation
import Logging
import Netmap
import VhostNetmapBackend
import VhostSystem

@main
struct VhostNetmapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vhost-netmap",
        abstract: "A vhost-user virtio-net back-end that plugs VMs into netmap/VALE switches.",
        subcommands: [Serve.self, Stats.self, ForwardingTable.self, Vale.self, KernelCheck.self, QemuArgs.self, LibvirtXML.self],
        defaultSubcommand: Serve.self
    )
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve vhost-user devices on the embedded VALE switch (the default command).",
        discussion: """
        Each --port attaches one vhost-user device to a switch port:
          --port vale0:vm1=/run/vhost-netmap/vm1.sock              listen (QEMU connects, reconnect-ms=...)
          --port vale0:vm2=/run/vhost-netmap/vm2.sock,client       connect, and reconnect (QEMU server=on)
          options after the path: queues=N (1-16 pairs), mode=0660 (socket permissions)
        Each --host-port connects a switch to the host's network stack through a TAP interface
        (created, or an existing persistent one with vnet_hdr), brought up:
          --host-port vale0:tap0[,queues=N][,mtu=9000]
        The vhost-user back-end conventions are also accepted: --socket-path PATH or --fd N
        (one device, on the port given by --switch-port), and --print-capabilities.
        """
    )

    @Option(name: .customLong("port"), help: "SWITCH:PORT=SOCKET[,client][,queues=N][,mode=0660][,group=G][,sync=ioctl|kloop] (repeatable)")
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

    @Option(name: .customLong("switch"), help: "auto (the netmap kernel module when /dev/netmap is usable), kernel, or embedded.")
    var switchMode: SwitchMode = .auto

    @Option(name: .customLong("control"), help: "Control socket for 'vhost-netmap stats' (empty to disable).")
    var control: String = ControlSocketOption.defaultPath

    @Option(name: .customLong("netmap-sync"), help: "Kernel mode: sync netmap rings by ioctl per batch, or through netmap's sync kernel loop (CSB + eventfds); a port's sync= overrides it.")
    var netmapSync: NetmapSyncMode = .ioctl

    @Flag(name: .customLong("busy-poll"), help: "Switch workers poll without sleeping (benchmarks).")
    var busyPoll = false

    @Option(name: .customLong("worker-cpu"), help: "Pin the switch workers to these CPUs, in order of the switches (repeatable).")
    var workerCPUs: [Int] = []

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical")
    var logLevel: Logger.Level = .info

    func validate() throws {
        if socketPath != nil && fd != nil { throw ValidationError("--socket-path and --fd are mutually exclusive") }
        if !printCapabilities && ports.isEmpty && hostPorts.isEmpty && socketPath == nil && fd == nil {
            throw ValidationError("give at least one --port or --host-port (or --socket-path / --fd)")
        }
        if !(1...PortSpec.maxQueuePairs).contains(queues) { throw ValidationError("--queues must be 1...\(PortSpec.maxQueuePairs)") }
    }

    func run() throws {
        if printCapabilities {
            print(#"{"type": "net", "features": []}"#)
            return
        }
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "vhost-netmap")
        var specs: [PortSpec] = []
        var hostSpecs: [HostPortSpec] = []
        do {
            for h in hostPorts { hostSpecs.append(try HostPortSpec.parse(h)) }
            for p in ports { specs.append(try PortSpec.parse(p)) }
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
        var options = DaemonOptions(ports: specs, controlSocket: control.isEmpty ? nil : control)
        options.busyPoll = busyPoll
        options.hostPorts = hostSpecs
        options.switchMode = switchMode
        options.netmapSync = netmapSync
        options.workerCPUs = workerCPUs
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
    do {
        FileHandle.standardOutput.write(Data(try ControlClient.request(command, socket: control)))
    } catch {
        throw ValidationError("cannot reach the daemon at \(control): \(error)")
    }
}

/// The running daemon's control socket, for the commands that talk to it.
struct ControlSocketOption: ParsableArguments {
    static let defaultPath = "/run/vhost-netmap/control.sock"

    @Option(name: .customLong("control"), help: "The daemon's control socket.")
    var path: String = ControlSocketOption.defaultPath
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

struct QemuArgs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qemu-args",
        abstract: "Print the QEMU options that connect a VM to a port's vhost-user socket.",
        discussion: """
        The socket is --socket, or SOCKET_DIR/<switch>/<port>.sock for --port valeX:Y. By default
        QEMU connects and reconnects (reconnect-ms=1000 from QEMU 9.2, reconnect=1 before; the
        version is read from qemu-system-x86_64 unless --qemu-version is given): serve the port
        in server mode. With --qemu-listens QEMU listens (server=on,wait=off): serve it with ,client.
        """)

    @Option(help: "The port's socket path.") var socket: String?
    @Option(help: "The switch port (valeX:Y); the socket is SOCKET_DIR/<switch>/<port>.sock.") var port: String?
    @Option(help: "Directory of the sockets for --port.") var socketDir: String = "/run/vhost-netmap"
    @Option(help: "Guest memory size, as for -m (e.g. 256M, 1G).") var memory: String = "256M"
    @Option(help: "Queue pairs.") var queues: Int = 1
    @Option(help: "RX and TX queue size (256, 512 or 1024).") var queueSize: Int?
    @Option(help: "Guest MAC address.") var mac: String = "52:54:00:00:00:01"
    @Option(help: "QEMU netdev id.") var id: String = "net0"
    @Option(help: "QEMU version (e.g. 9.2) for the reconnect option; default: ask qemu-system-x86_64.") var qemuVersion: String?
    @Flag(help: "QEMU listens (server=on,wait=off) and the back-end connects.") var qemuListens = false
    @Flag(help: "Bind the memory with -machine memory-backend= instead of -numa node,memdev=.") var machineMemoryBackend = false
    @Flag(help: "Use INTx (vectors=0): Debian's QEMU 7.2 crashes under TCG with vhost-user and MSI-X.")
    var noMsix = false

    func validate() throws {
        if (socket == nil) == (port == nil) { throw ValidationError("give --socket or --port") }
        if let port { do { _ = try PortSpec.parseName(port) } catch { throw ValidationError(error.description) } }
        if !(1...PortSpec.maxQueuePairs).contains(queues) { throw ValidationError("--queues must be 1...\(PortSpec.maxQueuePairs)") }
        if let q = queueSize, ![256, 512, 1024].contains(q) { throw ValidationError("--queue-size must be 256, 512 or 1024") }
    }

    /// (major, minor) of `qemu-system-x86_64 --version`, or nil.
    static func installedQEMUVersion() -> (Int, Int)? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["qemu-system-x86_64", "--version"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        p.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return parseVersion(text.split(separator: " ").first { $0.first?.isNumber == true }.map(String.init) ?? "")
    }

    static func parseVersion(_ s: String) -> (Int, Int)? {
        let parts = s.split(separator: ".").compactMap { Int($0.prefix { $0.isNumber }) }
        return parts.count >= 2 ? (parts[0], parts[1]) : nil
    }

    func run() throws {
        let path: String
        if let socket { path = socket } else {
            let (sw, p) = try PortSpec.parseName(port!)
            path = "\(socketDir)/\(sw)/\(p).sock"
        }
        let version = qemuVersion.flatMap(Self.parseVersion) ?? Self.installedQEMUVersion() ?? (9, 2)
        let chardev: String
        if qemuListens {
            chardev = "-chardev socket,id=chr-\(id),path=\(path),server=on,wait=off"
        } else {
            let reconnect = version >= (9, 2) ? "reconnect-ms=1000" : "reconnect=1"
            chardev = "-chardev socket,id=chr-\(id),path=\(path),\(reconnect)"
        }
        let vectors = noMsix ? 0 : 2 * queues + 2
        var device = "virtio-net-pci,netdev=\(id),mac=\(mac),vectors=\(vectors)"
        if queues > 1 { device += ",mq=on" }
        if let q = queueSize { device += ",rx_queue_size=\(q),tx_queue_size=\(q)" }
        let memoryBinding = machineMemoryBackend ? "-machine memory-backend=mem-\(id)" : "-numa node,memdev=mem-\(id)"
        print("""
        -object memory-backend-memfd,id=mem-\(id),size=\(memory),share=on \(memoryBinding) \
        \(chardev) \
        -netdev vhost-user,id=\(id),chardev=chr-\(id),queues=\(queues) \
        -device \(device)
        """)
    }
}

extension NetmapSyncMode: ExpressibleByArgument {}
extension SwitchMode: ExpressibleByArgument {}
