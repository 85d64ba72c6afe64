/// The frames pkt-gen sends: Ethernet + IPv4 + UDP, checksums filled, a payload pattern; ping
/// frames carry a sequence number and a send time.
public struct PacketTemplate {
    public let bytes: [UInt8]
    public static let sequenceOffset = 42
    public static let timestampOffset = 46

    public init(options o: Options, sourceMAC: [UInt8], length: Int) {
        let len = max(length, 42)
        var f = [UInt8](repeating: 0, count: len)
        f.replaceSubrange(0..<6, with: o.destinationMAC)
        f.replaceSubrange(6..<12, with: sourceMAC)
        f[12] = 0x08; f[13] = 0x00
        let ipLength = len - 14
        let ip: [UInt8] = [0x45, 0, UInt8(ipLength >> 8), UInt8(ipLength & 0xff), 0, 0, 0x40, 0, 64, 17, 0, 0]
            + o.source.address + o.destination.address
        f.replaceSubrange(14..<34, with: ip)
        let sum = Self.checksum(f[14..<34])
        f[24] = UInt8(sum >> 8); f[25] = UInt8(sum & 0xff)
        let udpLength = ipLength - 20
        f[34] = UInt8(o.source.port >> 8); f[35] = UInt8(o.source.port & 0xff)
        f[36] = UInt8(o.destination.port >> 8); f[37] = UInt8(o.destination.port & 0xff)
        f[38] = UInt8(udpLength >> 8); f[39] = UInt8(udpLength & 0xff)
        for k in 42..<len { f[k] = UInt8(truncatingIfNeeded: k) }
        // UDP checksum 0: "none" for IPv4, so ping sequence numbers can change without redoing it.
        bytes = f
    }

    static func checksum(_ data: ArraySlice<UInt8>) -> UInt16 {
        var sum: UInt32 = 0
        var i = data.startIndex
        while i + 1 < data.endIndex { sum += UInt32(data[i]) << 8 | UInt32(data[i + 1]); i += 2 }
        if i < data.endIndex { sum += UInt32(data[i]) << 8 }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }
}
