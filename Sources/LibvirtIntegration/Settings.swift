import FoundationEssentials
import Glibc
import VhostNetmapBackend

/// Where the integration finds the daemon and what it gives QEMU, with the defaults the hook
/// uses too: SOCKET_DIR is $VHOST_NETMAP_DIR, else /run/vhost-netmap; the control socket is
/// SOCKET_DIR/control.sock; sockets QEMU connects to get QEMU's group.
public enum IntegrationDefaults {
    public static var socketDirectory: String {
        let value = ProcessInfo.processInfo.environment["VHOST_NETMAP_DIR"] ?? ""
        return value.isEmpty ? PortSpec.defaultSocketDirectory : value
    }

    /// QEMU's group: `group = "..."` in /etc/libvirt/qemu.conf, else libvirt-qemu's primary
    /// group, else kvm.
    public static func qemuGroup(configuration: String = "/etc/libvirt/qemu.conf") -> String {
        if let text = try? String(contentsOfFile: configuration, encoding: .utf8) {
            for line in text.split(separator: "\n") {
                let words = line.trimmingWhitespace
                guard words.hasPrefix("group"), let equals = words.firstIndex(of: "=") else { continue }
                guard words[..<equals].trimmingWhitespace == "group" else { continue }
                let value = words[words.index(after: equals)...].trimmingWhitespace
                if value.count > 2, value.hasPrefix("\""), value.hasSuffix("\"") { return String(value.dropFirst().dropLast()) }
            }
        }
        if let user = getpwnam("libvirt-qemu"), let group = getgrgid(user.pointee.pw_gid), let name = group.pointee.gr_name {
            return String(cString: name)
        }
        return "kvm"
    }
}
