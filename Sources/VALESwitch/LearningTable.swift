/// MAC learning table: direct-mapped by a hash of the address, like VALE's (1024 buckets;
/// a collision replaces the older entry, which then floods until it is learned again).
public struct LearningTable {
    public static let buckets = 1024
    private static let valid: UInt64 = 1 << 63

    private let keys: UnsafeMutablePointer<UInt64>
    private let ports: UnsafeMutablePointer<Int16>

    public init() {
        keys = .allocate(capacity: Self.buckets)
        keys.initialize(repeating: 0, count: Self.buckets)
        ports = .allocate(capacity: Self.buckets)
        ports.initialize(repeating: -1, count: Self.buckets)
    }

    public func deallocate() {
        keys.deallocate()
        ports.deallocate()
    }

    @inline(__always)
    static func bucket(_ mac: UInt64) -> Int {
        Int(truncatingIfNeeded: (mac &* 0x9E37_79B9_7F4A_7C15) >> 54) & (buckets - 1)
    }

    /// Records that `mac` (48 bits) was seen on `port`.
    @inline(__always)
    public func learn(_ mac: UInt64, port: Int) {
        let b = Self.bucket(mac)
        keys[b] = mac | Self.valid
        ports[b] = Int16(truncatingIfNeeded: port)
    }

    /// The port `mac` was last seen on, or nil.
    @inline(__always)
    public func lookup(_ mac: UInt64) -> Int? {
        let b = Self.bucket(mac)
        return keys[b] == mac | Self.valid ? Int(ports[b]) : nil
    }

    /// Forgets every address learned on `port` (it detached or its guest went away).
    public func forget(port: Int) {
        for b in 0..<Self.buckets where keys[b] & Self.valid != 0 && Int(ports[b]) == port {
            keys[b] = 0
            ports[b] = -1
        }
    }

    /// Every learned (address, port), for display. The address is in wire order (first byte low).
    public var entries: [(mac: UInt64, port: Int)] {
        (0..<Self.buckets).compactMap { keys[$0] & Self.valid != 0 ? (keys[$0] & 0xffff_ffff_ffff, Int(ports[$0])) : nil }
    }

    /// "aa:bb:cc:dd:ee:ff" for an address as stored here.
    public static func format(_ mac: UInt64) -> String {
        (0..<6).map { i in
            let byte = UInt8(truncatingIfNeeded: mac >> (8 * UInt64(i)))
            return (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }.joined(separator: ":")
    }

    public var entryCount: Int {
        (0..<Self.buckets).reduce(0) { $0 + (keys[$1] & Self.valid != 0 ? 1 : 0) }
    }
}
