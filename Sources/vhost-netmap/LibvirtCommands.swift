import ArgumentParser
import FoundationEssentials
import Glibc
import VhostNetmapBackend

/// libvirt domain XML for a vhost-netmap port: the `<interface type='vhostuser'>` element and
/// the shared `<memoryBacking>` vhost-user needs, or (with --domain) a whole direct-kernel-boot
/// domain. Socket paths follow the convention the libvirt hook reads back:
/// SOCKET_DIR/<switch>/<port>.sock.
struct LibvirtXML: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "libvirt-xml",
        abstract: "Print libvirt XML for a port: <interface> and <memoryBacking>, or a whole domain.")

    @Option(help: "The switch port, valeX:Y.") var port: String
    @Option(help: "Directory of the sockets (the hook's SOCKET_DIR; default: $VHOST_NETMAP_DIR, else /run/vhost-netmap).") var socketDir: String?
    @Option(help: "Guest MAC address (default: derived from the port's name).") var mac: String?
    @Option(help: "Queue pairs.") var queues: Int = 1
    @Flag(help: "QEMU listens and the back-end connects (libvirt mode='server'); default: QEMU connects.") var qemuListens = false
    @Flag(help: "Packed virtqueues (<driver packed='on'/>).") var packed = false
    @Flag(help: "Only the <interface> element (for virsh attach-device).") var interfaceOnly = false
    @Option(help: "Print a whole domain with this name.") var domain: String?
    @Option(help: "Domain memory, as for qemu-args: 256M, 1G, or MiB.") var memory = MemorySize(argument: "256M")!
    @Option(help: "Kernel for direct boot.") var kernel: String?
    @Option(help: "Initramfs for direct boot.") var initrd: String?
    @Option(help: "Kernel command line (pci=nomsi is added: Debian's QEMU 7.2 crashes under TCG with vhost-user and MSI-X).") var cmdline: String = "console=ttyS0 panic=-1"
    @Option(help: "File for the serial console.") var serialLog: String?

    func validate() throws {
        do { _ = try PortSpec.parseName(port) } catch { throw ValidationError(error.description) }
        if !(1...PortSpec.maxQueuePairs).contains(queues) { throw ValidationError("--queues must be 1...\(PortSpec.maxQueuePairs)") }
        if domain != nil && (kernel == nil || initrd == nil) { throw ValidationError("--domain needs --kernel and --initrd") }
        if let mac, !DerivedMAC.isValid(mac) { throw ValidationError("--mac '\(mac)': expected six hex bytes of a unicast address, e.g. 52:54:00:12:34:56") }
    }

    static func escape(_ s: String) -> String { LibvirtInterfaceXML.escape(s) }

    var interfaceElement: String {
        let (sw, p) = try! PortSpec.parseName(port)
        let path = PortSpec.defaultSocketPath(switchName: sw, portName: p, in: socketDir ?? RunDirectory.path)
        return LibvirtInterfaceXML(socketPath: path, mac: mac ?? DerivedMAC.forName(port), queues: queues, qemuListens: qemuListens, packed: packed).element
    }

    static let memoryBacking = """
        <memoryBacking>
          <source type='memfd'/>
          <access mode='shared'/>
        </memoryBacking>
        """

    func run() throws {
        if interfaceOnly {
            print(interfaceElement)
            return
        }
        guard let domain else {
            print(Self.memoryBacking)
            print(interfaceElement)
            return
        }
        let indent = { (s: String) in s.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n") }
        let command = cmdline.contains("pci=nomsi") ? cmdline : cmdline + " pci=nomsi"
        print("""
            <domain type='qemu'>
              <name>\(Self.escape(domain))</name>
              <memory unit='MiB'>\(memory.mebibytes)</memory>
            \(Self.memoryBacking.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
              <vcpu>1</vcpu>
              <os>
                <type arch='x86_64' machine='pc'>hvm</type>
                <kernel>\(Self.escape(kernel!))</kernel>
                <initrd>\(Self.escape(initrd!))</initrd>
                <cmdline>\(Self.escape(command))</cmdline>
              </os>
              <features><acpi/></features>
              <on_poweroff>destroy</on_poweroff>
              <on_reboot>destroy</on_reboot>
              <on_crash>destroy</on_crash>
              <devices>
                <emulator>/usr/bin/qemu-system-x86_64</emulator>
            \(indent(interfaceElement))
                <serial type='\(serialLog == nil ? "pty" : "file")'>
            \(serialLog.map { "      <source path='\(Self.escape($0))'/>\n" } ?? "")      <target port='0'/>
                </serial>
                <memballoon model='none'/>
              </devices>
            </domain>
            """)
    }
}

/// `vhost-netmap libvirt watch|attach`: runs vhost-netmap-libvirt (installed beside this binary,
/// or in /usr/libexec/vhost-netmap), which links libvirt; the daemon's binary does not.
struct Libvirt: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "libvirt through its C API: watch (ports follow domains), attach (hot-plug an interface).",
        discussion: "Runs vhost-netmap-libvirt; see vhost-netmap libvirt --help and docs/operating.md (watcher or hook).")

    @Argument(parsing: .captureForPassthrough, help: "watch or attach, and their options.")
    var arguments: [String] = []

    static func helperPath() -> String? {
        var own = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &own, own.count - 1)
        var candidates: [String] = []
        if n > 0 {
            let path = String(decoding: own[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let slash = path.lastIndex(of: "/") { candidates.append(path[..<slash] + "/vhost-netmap-libvirt") }
        }
        candidates.append("/usr/libexec/vhost-netmap/vhost-netmap-libvirt")
        return candidates.first { access($0, X_OK) == 0 }
    }

    func run() throws {
        guard let helper = Self.helperPath() else {
            throw RuntimeError("vhost-netmap-libvirt is not installed beside this binary nor in /usr/libexec/vhost-netmap (it is built with libvirt-dev: swift build --product vhost-netmap-libvirt)")
        }
        let argv = ([helper] + arguments).map { strdup($0) } + [nil]
        execv(helper, argv)
        throw RuntimeError("cannot run \(helper): \(String(cString: strerror(errno)))")
    }
}
