import ArgumentParser
import FoundationEssentials
import Glibc
import VhostSystem
import VhostNetmapBackend

/// QEMU options (or a whole command line) that attach a VM to a port's vhost-user socket.
struct QemuArgs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qemu-args",
        abstract: "Print the QEMU options that connect a VM to a port's vhost-user socket.",
        discussion: """
        The socket is --socket, or SOCKET_DIR/<switch>/<port>.sock for --port valeX:Y. \
        The options include -m (the guest memory, which vhost-user shares through a memfd) \
        and a MAC derived from the port's name unless --mac is given.

        By default QEMU connects and reconnects (reconnect-ms=1000 from QEMU 9.2, \
        reconnect=1 before; the version is read from qemu-system-x86_64 unless \
        --qemu-version is given): serve the port in server mode. With --qemu-listens QEMU \
        listens (server=on,wait=off): serve it with ,client.

        --msix auto turns MSI-X off (vectors=0) where QEMU is older than 8.0 and runs guests \
        under TCG: Debian 12's QEMU 7.2 crashes there with vhost-user and MSI-X.

        --command prints a whole qemu-system-x86_64 command line (accelerator, -m, -smp) \
        to which a boot disk or kernel is appended.
        """)

    enum MSIX: String, ExpressibleByArgument { case auto, on, off }
    enum Accelerator: String, ExpressibleByArgument { case auto, kvm, tcg }

    @Option(help: "The port's socket path.") var socket: String?
    @Option(help: "The switch port (valeX:Y); the socket is SOCKET_DIR/<switch>/<port>.sock.") var port: String?
    @Option(help: "Directory of the sockets for --port (default: $VHOST_NETMAP_DIR, else /run/vhost-netmap).") var socketDir: String?
    @Option(help: "Guest memory size, as for -m: 256M, 1G, or MiB.") var memory = MemorySize(argument: "256M")!
    @Option(help: "Queue pairs.") var queues: Int = 1
    @Option(help: "RX and TX queue size (256, 512 or 1024).") var queueSize: Int?
    @Option(help: "Guest MAC address (default: derived from the port's name or socket path).") var mac: String?
    @Option(help: "QEMU netdev id.") var id: String = "net0"
    @Option(help: "QEMU version (e.g. 9.2) for the reconnect option; default: ask qemu-system-x86_64.") var qemuVersion: String?
    @Flag(help: "QEMU listens (server=on,wait=off) and the back-end connects.") var qemuListens = false
    @Flag(help: "Packed virtqueues (virtio-net-pci packed=on; the back-end offers VIRTIO_F_RING_PACKED).") var packed = false
    @Flag(help: "Bind the memory with -machine memory-backend= instead of -numa node,memdev=.") var machineMemoryBackend = false
    @Option(help: "MSI-X: auto (off under TCG with QEMU < 8.0), on, off.") var msix: MSIX = .auto
    @Flag(help: "Same as --msix off (vectors=0).") var noMsix = false
    @Flag(help: "Print a whole qemu-system-x86_64 command line (append a disk or -kernel).") var command = false
    @Option(help: "With --command: auto (kvm where the CPU has VMX/SVM and /dev/kvm opens, else tcg), kvm, tcg.") var accel: Accelerator = .auto
    @Option(help: "With --command: virtual CPUs (more than one queue pair wants as many).") var smp: Int?

    func validate() throws {
        if (socket == nil) == (port == nil) { throw ValidationError("give --socket or --port") }
        if let port { do { _ = try PortSpec.parseName(port) } catch { throw ValidationError(error.description) } }
        if !(1...PortSpec.maxQueuePairs).contains(queues) { throw ValidationError("--queues must be 1...\(PortSpec.maxQueuePairs)") }
        if let q = queueSize, ![256, 512, 1024].contains(q) { throw ValidationError("--queue-size must be 256, 512 or 1024") }
        if let mac, !DerivedMAC.isValid(mac) { throw ValidationError("--mac '\(mac)': expected six hex bytes of a unicast address, e.g. 52:54:00:12:34:56") }
        if let smp, !(1...256).contains(smp) { throw ValidationError("--smp must be 1...256") }
    }

    /// (major, minor) of `qemu-system-x86_64 --version`, or nil.
    static func installedQEMUVersion() -> (Int, Int)? {
        guard let text = Posix.output(of: ["qemu-system-x86_64", "--version"]) else { return nil }
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
            path = PortSpec.defaultSocketPath(switchName: sw, portName: p, in: socketDir ?? RunDirectory.path)
        }
        let version = qemuVersion.flatMap(Self.parseVersion) ?? Self.installedQEMUVersion() ?? (9, 2)
        let kvm: Bool
        switch accel {
        case .kvm: kvm = true
        case .tcg: kvm = false
        case .auto: kvm = HostVirtualization.kvmUsable
        }
        let msixOn: Bool
        switch noMsix ? .off : msix {
        case .on: msixOn = true
        case .off: msixOn = false
        case .auto: msixOn = kvm || version >= (8, 0)
        }
        let chardev: String
        if qemuListens {
            chardev = "-chardev socket,id=chr-\(id),path=\(path),server=on,wait=off"
        } else {
            let reconnect = version >= (9, 2) ? "reconnect-ms=1000" : "reconnect=1"
            chardev = "-chardev socket,id=chr-\(id),path=\(path),\(reconnect)"
        }
        let vectors = msixOn ? 2 * queues + 2 : 0
        var device = "virtio-net-pci,netdev=\(id),mac=\(mac ?? DerivedMAC.forName(port ?? path)),vectors=\(vectors)"
        if queues > 1 { device += ",mq=on" }
        if packed { device += ",packed=on" }
        if let q = queueSize { device += ",rx_queue_size=\(q),tx_queue_size=\(q)" }
        let memoryBinding = machineMemoryBackend ? "-machine memory-backend=mem-\(id)" : "-numa node,memdev=mem-\(id)"
        let prefix = command
            ? "qemu-system-x86_64 -accel \(kvm ? "kvm" : "tcg") -smp \(smp ?? queues) -nographic "
            : ""
        print("""
        \(prefix)-m \(memory) -object memory-backend-memfd,id=mem-\(id),size=\(memory),share=on \(memoryBinding) \
        \(chardev) \
        -netdev vhost-user,id=\(id),chardev=chr-\(id),queues=\(queues) \
        -device \(device)
        """)
    }
}
