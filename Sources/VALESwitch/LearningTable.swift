import Synchronization

/// MAC learning table: direct-mapped by a hash of the address, like VALE's (1024 buckets;
/// a collision replaces the older entry, which then floods until it is learned again).
///
/// Each bucket is one atomic word (address, port and a valid bit), so the switch's lanes learn
/// and look up concurrently without a lock: a reader sees an old entry or a new one, never half
/// of each. An entry is stored only when it changes, so lanes that see the same addresses do
/// not pass the line back and forth.
public struct LearningTable {
    public static let buckets = 1024
    private static let valid: UInt64 = 1 << 63
    private static let addressMask: UInt64 = 0xffff_ffff_ffff
    private static let portShift: UInt64 = 48

    private let entries: UnsafeMutablePointer<Atomic<UInt64>>

    public init() {
        entries = .allocate(capacity: Self.buckets)
        for b in 0..<Self.buckets { (entries + b).initialize(to: Atomic(0)) }
    }

    public func deallocate() {
        entries.deinitialize(count: Self.buckets)
        entries.deallocate()
    }

    @inline(__always)
    static func bucket(_ mac: UInt64) -> Int {
        Int(truncatingIfNeeded: (mac &* 0x9E37_79B9_7F4A_7C15) >> 54) & (buckets - 1)
    }

    @inline(__always)
    private func entry(_ b: Int) -> UInt64 { entries[b].load(ordering: .relaxed) }

    /// Records that `mac` (48 bits) was seen on `port` (a slot index, below 256).
    @inline(__always)
    public func learn(_ mac: UInt64, port: Int) {
        let b = Self.bucket(mac)
        let new = mac | UInt64(truncatingIfNeeded: port & 0xff) << Self.portShift | Self.valid
        if entry(b) != new { entries[b].store(new, ordering: .relaxed) }
    }

    /// The port `mac` was last seen on, or nil.
    @inline(__always)
    public func lookup(_ mac: UInt64) -> Int? {
        let e = entry(Self.bucket(mac))
        guard e & Self.valid != 0, e & Self.addressMask == mac else { return nil }
        return Int(truncatingIfNeeded: (e >> Self.portShift) & 0xff)
    }

    /// Forgets every address learned on `port` (it detached or its guest went away). Run with
    /// the switch lock held, so no lane learns meanwhile.
    public func forget(port: Int) {
        for b in 0..<Self.buckets {
            let e = entry(b)
            if e & Self.valid != 0 && Int(truncatingIfNeeded: (e >> Self.portShift) & 0xff) == port {
                entries[b].store(0, ordering: .relaxed)
            }
        }
    }

    /// Every learned (address, port), for display. The address is in wire order (first byte low).
    public var learned: [(mac: UInt64, port: Int)] {
        (0..<Self.buckets).compactMap { b in
            let e = entry(b)
            return e & Self.valid != 0 ? (e & Self.addressMask, Int(truncatingIfNeeded: (e >> Self.portShift) & 0xff)) : nil
        }
    }

    /// "aa:bb:cc:dd:ee:ff" for an address as stored here.
    public static func format(_ mac: UInt64) -> String {
        (0..<6).map { i in
            let byte = UInt8(truncatingIfNeeded: mac >> (8 * UInt64(i)))
            return (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }.joined(separator: ":")
    }

    public var entryCount: Int {
        (0..<Self.buckets).reduce(0) { $0 + (entry($1) & Self.valid != 0 ? 1 : 0) }
    }
}
