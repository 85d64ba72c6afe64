import CVhostShim
import Glibc
import SystemPackage

/// Offloads the host stack may hand a TAP reader (TUNSETOFFLOAD): checksum left to the reader,
/// and TCP segments larger than the MTU.
public struct TapOffloads: OptionSet, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let checksum = TapOffloads(rawValue: CVH_TUN_F_CSUM)
    public static let tso4 = TapOffloads(rawValue: CVH_TUN_F_TSO4)
    public static let tso6 = TapOffloads(rawValue: CVH_TUN_F_TSO6)
    public static let tsoECN = TapOffloads(rawValue: CVH_TUN_F_TSO_ECN)
    public static let all: TapOffloads = [.checksum, .tso4, .tso6, .tsoECN]

    public var description: String {
        let names = [(TapOffloads.checksum, "csum"), (.tso4, "tso4"), (.tso6, "tso6"), (.tsoECN, "tso-ecn")]
            .filter { contains($0.0) }.map(\.1)
        return names.isEmpty ? "none" : names.joined(separator: ",")
    }
}

/// A TAP interface opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR: one descriptor per queue
/// (IFF_MULTI_QUEUE when there is more than one).
public enum Tap {
    /// Opens `queues` queues of tap `name`, creating it unless it exists (a persistent tap made
    /// with `ip tuntap add ... vnet_hdr [multi_queue]` is attached to as is).
    public static func open(name: String, queues: Int) throws(Errno) -> [OwnedDescriptor] {
        var fds: [OwnedDescriptor] = []
        for _ in 0..<queues {
            fds.append(OwnedDescriptor(adopting: try Posix.checkShim(cvh_tap_open(name, queues > 1 ? 1 : 0))))
        }
        return fds
    }

    public static func exists(_ name: String) -> Bool { cvh_if_exists(name) == 1 }

    /// Whether interface `name` is a TUN/TAP device (it has tun_flags in sysfs).
    public static func isTunTap(_ name: String) -> Bool { access("/sys/class/net/\(name)/tun_flags", F_OK) == 0 }

    /// The processes that hold a queue of tap `name` open: the kernel names the interface in
    /// each /dev/net/tun descriptor's fdinfo ("iff:"). For error messages only: it walks /proc.
    public static func processesAttached(to name: String) -> [Listener] {
        var found: [Listener] = []
        guard let proc = opendir("/proc") else { return [] }
        defer { closedir(proc) }
        while let entry = readdir(proc) {
            let pidText = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let pid = pid_t(pidText), let fdinfo = opendir("/proc/\(pid)/fdinfo") else { continue }
            defer { closedir(fdinfo) }
            while let fdEntry = readdir(fdinfo) {
                let fd = withUnsafeBytes(of: fdEntry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                guard fd.first?.isNumber == true,
                      let text = readSmallFile("/proc/\(pid)/fdinfo/\(fd)"),
                      text.split(separator: "\n").contains(where: { $0 == "iff:\t\(name)" }) else { continue }
                found.append(Listener(processID: pid))
                break
            }
        }
        return found
    }

    public static func setHeaderSize(_ fd: CInt, _ size: Int) throws(Errno) {
        _ = try Posix.checkShim(cvh_tap_set_vnet_header_size(fd, CInt(size)))
    }

    public static func setOffloads(_ fd: CInt, _ offloads: TapOffloads) throws(Errno) {
        _ = try Posix.checkShim(cvh_tap_set_offload(fd, offloads.rawValue))
    }

    public static func setMTU(_ name: String, _ mtu: Int) throws(Errno) {
        _ = try Posix.checkShim(cvh_if_set_mtu(name, CInt(mtu)))
    }

    public static func mtu(_ name: String) throws(Errno) -> Int {
        Int(try Posix.checkShim(cvh_if_get_mtu(name)))
    }

    public static func setUp(_ name: String, _ up: Bool = true) throws(Errno) {
        _ = try Posix.checkShim(cvh_if_set_up(name, up ? 1 : 0))
    }
}

/// An AF_PACKET raw socket on one interface: what the host stack receives from it and sends to it.
public enum PacketSocket {
    /// With `virtioNetHeader`, each frame read or written carries a 10-byte virtio-net header
    /// (PACKET_VNET_HDR), so segmentation offloads stay whole.
    public static func open(interface: String, virtioNetHeader: Bool) throws(Errno) -> OwnedDescriptor {
        OwnedDescriptor(adopting: try Posix.checkShim(cvh_packet_socket(interface, virtioNetHeader ? 1 : 0)))
    }
}
