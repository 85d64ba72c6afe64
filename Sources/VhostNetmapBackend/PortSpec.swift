import FoundationEssentials
import Netmap

/// How one vhost-user device is exposed: which switch port, which socket, which mode.
public struct PortSpec: Sendable, Equatable {
    public enum Mode: String, Sendable {
        /// We listen; the front-end (QEMU `reconnect-ms`, DPDK virtio-user default) connects.
        case server
        /// We connect, and reconnect with back-off (QEMU `server=on`, virtio-user `server=1`).
        case client
    }

    public var switchName: String
    public var portName: String
    public var socketPath: String?
    /// An already-connected socket inherited from the parent (`--fd`).
    public var inheritedDescriptor: Int32? = nil
    public var mode: Mode = .server
    public var queuePairs = 1
    /// Socket file permissions (server mode), e.g. 0o660 for a group shared with QEMU.
    public var socketMode: UInt32?
    /// Group to give the socket file (server mode), e.g. the group QEMU runs with under libvirt.
    public var socketGroup: String?
    /// The port's netmap name, as the kernel path registers it.
    public var netmapName: NetmapPortName?
    /// Kernel mode: how this port's netmap rings are synced (nil: the daemon's default).
    public var netmapSync: NetmapSyncMode?

    /// The rest starts at its default (server mode, one queue pair) and is set by the parser.
    public init(switchName: String, portName: String, socketPath: String?) {
        self.switchName = switchName
        self.portName = portName
        self.socketPath = socketPath
    }

    public var fullName: String { switchName.isEmpty ? portName : "\(switchName):\(portName)" }

    /// The netmap port the kernel path registers for this device.
    public var kernelPortName: NetmapPortName {
        netmapName ?? (try? NetmapPortName.parse(fullName)) ?? NetmapPortName(kind: .vale(switchName: switchName, port: portName), text: fullName)
    }

    public enum ParseError: Error, CustomStringConvertible, Equatable {
        case message(String)
        public var description: String { switch self { case .message(let m): m } }
    }

    public static let maxQueuePairs = 16

    /// Where sockets go unless a path is given: `<dir>/<switch>/<port>.sock`, the control socket
    /// at `<dir>/control.sock`. The CLI, the hook, run.sh and the docs share this convention.
    public static let defaultSocketDirectory = "/run/vhost-netmap"

    public static func defaultSocketPath(switchName: String, portName: String, in directory: String = defaultSocketDirectory) -> String {
        "\(directory)/\(switchName)/\(portName).sock"
    }

    static let syntax = "SWITCH:PORT[=SOCKET][,client][,queues=N][,mode=0660][,group=G][,sync=ioctl|kloop]"

    /// Parses `valeX:Y[=/path/to.sock][,client][,queues=N][,mode=0660][,group=kvm][,sync=ioctl|kloop]`.
    /// Without `=SOCKET` a VALE port's socket is `<socketDirectory>/<switch>/<port>.sock`.
    public static func parse(_ text: String, socketDirectory: String = defaultSocketDirectory) throws(ParseError) -> PortSpec {
        let name: String
        var path: String?
        let rest: [String]
        if let eq = text.firstIndex(of: "="), !text[..<eq].contains(",") {
            name = String(text[..<eq])
            let fields = text[text.index(after: eq)...].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard let p = fields.first, !p.isEmpty else { throw .message("'\(text)': missing socket path after '=' (\(syntax))") }
            path = p
            rest = fields
        } else {
            let fields = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            name = fields[0]
            rest = fields
        }
        guard !name.isEmpty else { throw .message("'\(text)': expected \(syntax)") }
        let parsed: NetmapPortName
        do { parsed = try NetmapPortName.parse(name) } catch { throw .message(error.description) }
        var spec: PortSpec
        if case .vale(let sw, let port) = parsed.kind, parsed.text == "\(sw):\(port)" {
            spec = PortSpec(switchName: sw, portName: port, socketPath: path ?? defaultSocketPath(switchName: sw, portName: port, in: socketDirectory))
        } else {
            // A netmap port other than a plain VALE one (a NIC, host rings, a pipe, or flags and
            // options): only the kernel serves it, and its socket path is given.
            guard let path else { throw .message("'\(name)': a non-VALE netmap port needs its socket path: \(name)=SOCKET") }
            spec = PortSpec(switchName: "", portName: parsed.text, socketPath: path)
        }
        spec.netmapName = parsed
        for option in rest.dropFirst() {
            if option == "client" { spec.mode = .client }
            else if option == "server" { spec.mode = .server }
            else if option.hasPrefix("queues=") {
                guard let n = Int(option.dropFirst(7)), n >= 1, n <= maxQueuePairs else {
                    throw .message("'\(option)': queues must be 1...\(maxQueuePairs)")
                }
                spec.queuePairs = n
            } else if option.hasPrefix("group=") {
                let g = String(option.dropFirst(6))
                guard !g.isEmpty else { throw .message("'\(option)': group= needs a group name") }
                spec.socketGroup = g
            } else if option.hasPrefix("mode=") {
                guard let m = UInt32(option.dropFirst(5), radix: 8), m <= 0o777 else {
                    throw .message("'\(option)': mode must be octal, e.g. mode=0660")
                }
                spec.socketMode = m
            } else if option.hasPrefix("sync=") {
                guard let mode = NetmapSyncMode(rawValue: String(option.dropFirst(5))) else {
                    throw .message("'\(option)': sync must be ioctl or kloop")
                }
                spec.netmapSync = mode
            } else {
                throw .message("'\(option)': unknown option (client, server, queues=N, mode=OCTAL, group=NAME, sync=ioctl|kloop)")
            }
        }
        return spec
    }

    /// Splits `valeX:Y`, with VALE's naming rules (netmap's parser: names of [0-9a-zA-Z_],
    /// switch and port at most 15 characters each).
    public static func parseName(_ name: String) throws(ParseError) -> (String, String) {
        let parsed: NetmapPortName
        do { parsed = try NetmapPortName.parse(name) } catch { throw .message(error.description) }
        guard case .vale(let sw, let port) = parsed.kind, parsed.text == "\(sw):\(port)" else {
            throw .message("'\(name)': expected valeX:Y (e.g. vale0:vm1)")
        }
        return (sw, port)
    }
}

/// A host port: a TAP interface attached to a switch (`valeX:TAP[,queues=N][,mtu=N]`); the
/// port's name on the switch is the interface's name.
public struct HostPortSpec: Sendable, Equatable {
    public var switchName: String
    public var interfaceName: String
    public var queues: Int
    public var mtu: Int?

    public init(switchName: String, interfaceName: String, queues: Int = 1, mtu: Int? = nil) {
        self.switchName = switchName
        self.interfaceName = interfaceName
        self.queues = queues
        self.mtu = mtu
    }

    public var fullName: String { "\(switchName):\(interfaceName)" }

    public static func parse(_ text: String) throws(PortSpec.ParseError) -> HostPortSpec {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let (sw, tap) = try PortSpec.parseName(parts[0])
        var spec = HostPortSpec(switchName: sw, interfaceName: tap)
        for option in parts.dropFirst() {
            if option.hasPrefix("queues=") {
                guard let n = Int(option.dropFirst(7)), n >= 1, n <= PortSpec.maxQueuePairs else {
                    throw .message("'\(option)': queues must be 1...\(PortSpec.maxQueuePairs)")
                }
                spec.queues = n
            } else if option.hasPrefix("mtu=") {
                guard let m = Int(option.dropFirst(4)), m >= 68, m <= 65535 else {
                    throw .message("'\(option)': mtu must be 68...65535")
                }
                spec.mtu = m
            } else {
                throw .message("'\(option)': unknown host-port option (queues=N, mtu=N)")
            }
        }
        return spec
    }
}

/// Where the daemon's sockets are, for every command: `$VHOST_NETMAP_DIR`, else
/// /run/vhost-netmap. Ports default to `<dir>/<switch>/<port>.sock`, the control socket to
/// `<dir>/control.sock`: `serve`, `stats`, `fdb`, `vale`, `qemu-args`, `libvirt-xml`, the libvirt
/// hook, the libvirt watcher and scripts/run.sh all find each other without flags.
public enum RunDirectory {
    public static var path: String {
        let value = ProcessInfo.processInfo.environment["VHOST_NETMAP_DIR"] ?? ""
        return value.isEmpty ? PortSpec.defaultSocketDirectory : value
    }

    public static var controlSocket: String { "\(path)/control.sock" }
}
