/// libvirt's `<interface type='vhostuser'>` for a port: what `libvirt-xml` prints and what
/// `libvirt attach` hot-plugs. The socket follows the convention SOCKET_DIR/<switch>/<port>.sock
/// that the hook and the watcher read back.
public struct LibvirtInterfaceXML: Sendable {
    public var socketPath: String
    public var mac: String
    public var queues: Int
    /// libvirt mode='server': QEMU listens and the back-end connects.
    public var qemuListens: Bool
    /// Packed virtqueues (`<driver packed='on'/>`, libvirt >= 6.3).
    public var packed: Bool

    public init(socketPath: String, mac: String, queues: Int = 1, qemuListens: Bool = false, packed: Bool = false) {
        self.socketPath = socketPath
        self.mac = mac
        self.queues = queues
        self.qemuListens = qemuListens
        self.packed = packed
    }

    public static func escape(_ s: String) -> String {
        s.replacing("&", with: "&amp;").replacing("'", with: "&apos;").replacing("<", with: "&lt;").replacing(">", with: "&gt;")
    }

    public var element: String {
        let path = Self.escape(socketPath)
        var lines = [
            "<interface type='vhostuser'>",
            "  <mac address='\(Self.escape(mac))'/>",
            // QEMU as the client reconnects when the back-end restarts (libvirt >= 4.1, seconds).
            qemuListens
                ? "  <source type='unix' path='\(path)' mode='server'/>"
                : "  <source type='unix' path='\(path)' mode='client'>\n    <reconnect enabled='yes' timeout='1'/>\n  </source>",
            "  <model type='virtio'/>",
        ]
        let driver = (queues > 1 ? [" queues='\(queues)'"] : []) + (packed ? [" packed='on'"] : [])
        if !driver.isEmpty { lines.append("  <driver\(driver.joined())/>") }
        lines.append("</interface>")
        return lines.joined(separator: "\n")
    }
}

/// A stable, locally administered unicast MAC for a port: 52:54:00 (QEMU's prefix; 0x52 has the
/// locally-administered bit) and three bytes of an FNV-1a hash of the name, so guests on
/// different ports never share the default address.
public enum DerivedMAC {
    public static func forName(_ name: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        let tail = (0..<3).map { (k: UInt64) -> String in
            let byte = String((hash >> (8 * k)) & 0xff, radix: 16)
            return byte.count == 1 ? "0" + byte : byte
        }
        return "52:54:00:" + tail.joined(separator: ":")
    }

    public static func isValid(_ mac: String) -> Bool {
        let parts = mac.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6, parts.allSatisfy({ $0.count == 2 && UInt8($0, radix: 16) != nil }) else { return false }
        return UInt8(parts[0], radix: 16)! & 1 == 0  // unicast
    }
}

