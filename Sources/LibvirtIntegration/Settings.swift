import FoundationEssentials
import Glibc
import VhostNetmapBackend

/// What the integration gives QEMU, with the default the hook uses too: sockets QEMU connects to
/// get QEMU's group. (Where the daemon is: `RunDirectory`, as for every command.)
public enum IntegrationDefaults {
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
