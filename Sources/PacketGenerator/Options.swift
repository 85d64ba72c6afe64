/// pkt-gen's command line, parsed the way netmap's pkt-gen parses it (getopt: `-f tx`, `-ftx`,
/// repeated options), so scripts written for pkt-gen run unchanged. swift-argument-parser does
/// not give getopt's semantics (a second `-l` meaning a size range, attached values), hence
/// this small parser.
public struct Options: Equatable, Sendable {
    public enum Function: String, Sendable { case tx, rx, ping, pong }

    public var interface = ""
    public var function: Function = .rx
    public var count: UInt64 = 0
    public var length = 60
    public var minimumLength: Int?
    public var burst: Int?
    public var rate: UInt64 = 0
    public var reportMilliseconds = 1000
    public var source = Endpoint(address: [10, 0, 0, 1], port: 1234)
    public var destination = Endpoint(address: [10, 1, 0, 1], port: 1234)
    public var sourceMAC: [UInt8]?
    public var destinationMAC: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
    public var waitSeconds = 2
    public var rawNumbers = false
    public var cpus = 1
    public var threads = 1
    public var exitWhenIdle = false
    public var virtioHeaderLength = 0

    public struct Endpoint: Equatable, Sendable {
        public var address: [UInt8]
        public var port: UInt16
    }

    public init() {}

    public struct Failure: Error, CustomStringConvertible, Equatable {
        public let description: String
        /// -h or --help: the usage was asked for (printed on standard output, exit 0).
        public var helpRequested = false
    }

    /// Batch size: pkt-gen's default 512, 1 for ping/pong, and at most rate/300 with -R.
    public var effectiveBurst: Int {
        var b = burst ?? ((function == .ping || function == .pong) ? 1 : 512)
        if rate > 0 { b = max(1, min(b, Int(rate / 300))) }
        return b
    }

    static let takesValue: Set<Character> = Set("afFnilldsDSbcoptTwRCHPM")

    public static func parse(_ arguments: [String]) throws(Failure) -> Options {
        var o = Options()
        var i = 0
        var sawLength = false
        func fail(_ s: String) -> Failure { Failure(description: s) }
        while i < arguments.count {
            let arg = arguments[i]
            i += 1
            if arg == "--help" || arg == "-h" { throw Failure(description: usage, helpRequested: true) }
            if arg.hasPrefix("--") { throw fail("unknown option \(arg) (pkt-gen takes netmap pkt-gen's one-letter options)\n\(usage)") }
            guard arg.hasPrefix("-"), arg.count >= 2 else { throw fail("unexpected argument '\(arg)'") }
            var chars = Array(arg.dropFirst())
            while !chars.isEmpty {
                let flag = chars.removeFirst()
                var value: String?
                if takesValue.contains(flag) {
                    if !chars.isEmpty { value = String(chars); chars = [] }
                    else if i < arguments.count { value = arguments[i]; i += 1 }
                    else { throw fail("option -\(flag) needs a value") }
                }
                let v = value ?? ""
                func int(_ lo: Int, _ hi: Int) throws(Failure) -> Int {
                    guard let n = Int(v), n >= lo, n <= hi else { throw fail("-\(flag) \(v): expected a number \(lo)...\(hi)") }
                    return n
                }
                switch flag {
                case "i": o.interface = v
                case "f":
                    guard let f = Function(rawValue: v) else { throw fail("-f \(v): tx, rx, ping or pong (txseq/rxseq are not supported)") }
                    o.function = f
                case "n": guard let n = UInt64(v) else { throw fail("-n \(v): expected a count") }; o.count = n
                case "l":
                    let n = try int(16, 65536)
                    if sawLength { o.minimumLength = min(n, o.length); o.length = max(n, o.length) } else { o.length = n; sawLength = true }
                case "b": o.burst = try int(1, 8192)
                case "R": guard let n = UInt64(v) else { throw fail("-R \(v): expected packets per second") }; o.rate = n
                case "T": o.reportMilliseconds = try int(1, 3_600_000)
                case "s": o.source = try parseEndpoint(v, default: o.source)
                case "d": o.destination = try parseEndpoint(v, default: o.destination)
                case "S": o.sourceMAC = try parseMAC(v)
                case "D": o.destinationMAC = try parseMAC(v)
                case "w": o.waitSeconds = try int(0, 3600)
                case "c":
                    o.cpus = try int(0, 1024)
                    if o.cpus > 1 { throw fail("-c \(o.cpus): this pkt-gen runs one thread (use -c 1, or several pkt-gen processes)") }
                case "p": o.threads = try int(1, 1024)
                case "H":
                    let h = try int(0, 12)
                    guard [0, 10, 12].contains(h) else { throw fail("-H \(v): 0, 10 or 12") }
                    o.virtioHeaderLength = h
                case "N": o.rawNumbers = true
                case "W": o.exitWhenIdle = true
                case "a", "F", "o", "C", "P", "M": throw fail("-\(flag) is not supported by this pkt-gen")
                case "h": throw Failure(description: usage, helpRequested: true)
                default: throw fail("unknown option -\(flag)\n\(usage)")
                }
            }
        }
        guard !o.interface.isEmpty else { throw fail("-i is required\n\(usage)") }
        if o.threads != 1 { throw fail("-p \(o.threads): this pkt-gen runs one thread per interface") }
        return o
    }

    /// `ip[:port]` (a range `ip:port-ip:port` uses its first address).
    static func parseEndpoint(_ text: String, default d: Endpoint) throws(Failure) -> Endpoint {
        let first = text.split(separator: "-").first.map(String.init) ?? text
        let parts = first.split(separator: ":").map(String.init)
        let octets = parts.first?.split(separator: ".").compactMap { UInt8($0) } ?? []
        guard octets.count == 4 else { throw Failure(description: "'\(text)': expected an IPv4 address[:port]") }
        var e = Endpoint(address: octets, port: d.port)
        if parts.count > 1 {
            guard let p = UInt16(parts[1]) else { throw Failure(description: "'\(text)': bad port") }
            e.port = p
        }
        return e
    }

    static func parseMAC(_ text: String) throws(Failure) -> [UInt8] {
        let bytes = text.split(separator: ":").compactMap { UInt8($0, radix: 16) }
        guard bytes.count == 6 else { throw Failure(description: "'\(text)': expected a MAC address aa:bb:cc:dd:ee:ff") }
        return bytes
    }

    public static let usage = """
        usage: pkt-gen -i IFACE [-f tx|rx|ping|pong] [-n COUNT] [-l LEN [-l MINLEN]] [-b BURST] [-R PPS]
                       [-s IP[:PORT]] [-d IP[:PORT]] [-S MAC] [-D MAC] [-T MS] [-w SECS] [-N] [-W] [-H 0|10|12]
          IFACE: vhost-user:/path.sock (a vhost-user front-end of our own; vhost-user-packed: for packed
                 rings; ,reconnect after the path: reconnect when the back-end goes, keeping the
                 rings and the back-end's inflight buffer), tap:NAME or tapNAME (TAP),
                 valeX:Y or netmap:IF (netmap, needs /dev/netmap), anything else: AF_PACKET (PACKET_MMAP)
        """
}
