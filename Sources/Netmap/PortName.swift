/// A netmap port name, parsed with netmap's own syntax (`nm_parse` in netmap_user.h and the
/// kernel's lookup): `prefix:name[mode][/flags][@memid][@option…]`.
///
///     vale0:vm1        a VALE port (ephemeral)           netmap:eth0      all NIC rings of eth0
///     eth0^  eth0^2    the host rings, or host ring 2    eth0*            NIC and host rings
///     eth0-3           NIC ring 3                        x{1  x}1         pipe master / slave
///     vale0:vm1/x      exclusive                         vale0:vm1@2      memory allocator 2
///     vale0:vm1@conf:rings=4,slots=2048
public struct NetmapPortName: Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Equatable, Sendable {
        /// `valeX:port`: the switch name (including "vale") and the port.
        case vale(switchName: String, port: String)
        /// A network interface in netmap mode (`netmap:eth0`, or a bare `eth0`).
        case interface(String)
        /// A pipe end on `base` (`base{id` master, `base}id` slave).
        case pipe(base: String, id: String, master: Bool)
    }

    public enum Mode: Equatable, Sendable {
        case allNIC
        case hostRings
        case oneHostRing(Int)
        case nicAndHost
        case oneNICRing(Int)

        /// The kernel's nr_mode and nr_ringid.
        public var registerMode: (mode: UInt32, ringID: UInt16) {
            switch self {
            case .allNIC: (1, 0)
            case .hostRings: (2, 0)
            case .nicAndHost: (3, 0)
            case .oneNICRing(let k): (4, UInt16(k))
            case .oneHostRing(let k): (8, UInt16(k))
            }
        }
    }

    public struct Flags: OptionSet, Sendable, Hashable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        public static let exclusive = Flags(rawValue: 0x800)
        public static let zeroCopyMonitor = Flags(rawValue: 0x400)
        public static let monitorTX = Flags(rawValue: 0x100)
        public static let monitorRX = Flags(rawValue: 0x200)
        public static let rxRingsOnly = Flags(rawValue: 0x2000)
        public static let txRingsOnly = Flags(rawValue: 0x4000)
    }

    /// `@conf:` ring and slot counts (nil where not given).
    public struct RingConfiguration: Equatable, Sendable {
        public var txRings: Int?
        public var rxRings: Int?
        public var hostRings: Int?
        public var txSlots: Int?
        public var rxSlots: Int?
        public init() {}
    }

    public var kind: Kind
    public var mode: Mode = .allNIC
    public var flags: Flags = []
    public var memoryID: Int?
    public var configuration = RingConfiguration()
    /// Options passed through as written (`@share=…`, `@extmem:…`, `@offset:…`).
    public var otherOptions: [String] = []
    /// The text as given.
    public var text: String

    public init(kind: Kind, text: String) {
        self.kind = kind
        self.text = text
    }

    /// The name the kernel receives in `nr_name` (`netmap:` stripped, suffixes removed).
    public var kernelName: String {
        switch kind {
        case .vale(let s, let p): "\(s):\(p)"
        case .interface(let i): i
        case .pipe(let b, let id, let master): "\(b)\(master ? "{" : "}")\(id)"
        }
    }

    public var description: String { text }

    public var isVALE: Bool { if case .vale = kind { true } else { false } }

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let name: String
        /// Character offset of the problem in `name`.
        public let position: Int
        public let problem: String
        public var description: String {
            "bad netmap port name '\(name)' at character \(position + 1): \(problem)"
        }
    }

    static let nameCharacters = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
    /// Interface names may also use '.' (VLANs); '-' ends the name, as in netmap's own parser,
    /// because it introduces a ring number.
    static let interfaceCharacters = nameCharacters.union(".")
    public static let maxRingIndex = 4094

    public static func parse(_ text: String) throws(ParseError) -> NetmapPortName {
        let chars = Array(text)
        var i = 0
        func fail(_ at: Int, _ problem: String) -> ParseError { ParseError(name: text, position: at, problem: problem) }
        guard !chars.isEmpty else { throw fail(0, "empty name") }

        // Prefix: "netmap:" is stripped; "valeX:" names a switch.
        var kind: Kind
        var nameStart = 0
        if text.hasPrefix("netmap:") {
            i = 7
            nameStart = 7
        }
        let rest = String(chars[i...])
        if rest.hasPrefix("vale") {
            guard let colon = chars[i...].firstIndex(of: ":") else {
                throw fail(i, "a VALE name needs ':' and a port (valeX:port)")
            }
            let sw = String(chars[i..<colon])
            for (k, c) in sw.enumerated() where !nameCharacters.contains(c) {
                throw fail(i + k, "'\(c)' is not allowed in a switch name ([A-Za-z0-9_])")
            }
            guard sw.count <= 15 else { throw fail(i, "switch name '\(sw)' is longer than 15 characters") }
            var j = colon + 1
            while j < chars.count, nameCharacters.contains(chars[j]) { j += 1 }
            let port = String(chars[(colon + 1)..<j])
            guard !port.isEmpty else { throw fail(colon + 1, "missing port name after ':'") }
            guard port.count <= 15 else { throw fail(colon + 1, "port name '\(port)' is longer than 15 characters") }
            if j < chars.count, "-^*".contains(chars[j]) {
                throw fail(j, "'\(chars[j])' is not allowed in a VALE port name: expected [A-Za-z0-9_] after '\(sw):\(port)' (VALE ports have no ring modes)")
            }
            kind = .vale(switchName: sw, port: port)
            i = j
        } else {
            var end = i
            while end < chars.count, interfaceCharacters.contains(chars[end]) { end += 1 }
            let name = String(chars[i..<end])
            guard !name.isEmpty else { throw fail(i, "missing interface name") }
            guard name.count <= 15 else { throw fail(i, "interface name '\(name)' is longer than 15 characters (IFNAMSIZ)") }
            kind = .interface(name)
            i = end
        }
        _ = nameStart

        var spec = NetmapPortName(kind: kind, text: text)
        // Pipe suffix: {id or }id
        if i < chars.count, chars[i] == "{" || chars[i] == "}" {
            let master = chars[i] == "{"
            var j = i + 1
            while j < chars.count, nameCharacters.contains(chars[j]) { j += 1 }
            let id = String(chars[(i + 1)..<j])
            guard !id.isEmpty else { throw fail(i + 1, "missing pipe id after '\(chars[i])'") }
            let base: String
            switch kind {
            case .vale(let s, let p): base = "\(s):\(p)"
            case .interface(let n): base = n
            case .pipe: base = ""
            }
            spec.kind = .pipe(base: base, id: id, master: master)
            i = j
        }
        // Mode suffix.
        if i < chars.count {
            func number(from start: Int) throws(ParseError) -> (Int, Int) {
                var j = start
                while j < chars.count, chars[j].isNumber { j += 1 }
                guard j > start, let k = Int(String(chars[start..<j])) else { throw fail(start, "expected a ring number") }
                guard k <= maxRingIndex else { throw fail(start, "ring \(k) is out of range (0...\(maxRingIndex))") }
                return (k, j)
            }
            switch chars[i] {
            case "^":
                if i + 1 < chars.count, chars[i + 1].isNumber {
                    let (k, j) = try number(from: i + 1)
                    spec.mode = .oneHostRing(k); i = j
                } else {
                    spec.mode = .hostRings; i += 1
                }
            case "*":
                spec.mode = .nicAndHost; i += 1
            case "-":
                let (k, j) = try number(from: i + 1)
                spec.mode = .oneNICRing(k); i = j
            case "+":
                throw fail(i, "'+' is not a mode netmap parses (use '*' for NIC and host rings)")
            default:
                break
            }
        }
        if case .pipe = spec.kind {
            switch spec.mode {
            case .allNIC, .oneNICRing: break
            default: throw fail(i - 1, "pipes take only all rings or one ring (-K)")
            }
        }
        if case .vale = spec.kind, spec.mode != .allNIC {
            throw fail(i - 1, "VALE ports have no host or single-ring modes")
        }
        // Flags.
        if i < chars.count, chars[i] == "/" {
            i += 1
            while i < chars.count, chars[i] != "@" {
                switch chars[i] {
                case "x": spec.flags.insert(.exclusive)
                case "z": spec.flags.insert(.zeroCopyMonitor)
                case "t": spec.flags.insert(.monitorTX)
                case "r": spec.flags.insert(.monitorRX)
                case "R": spec.flags.insert(.rxRingsOnly)
                case "T": spec.flags.insert(.txRingsOnly)
                default: throw fail(i, "unknown flag '\(chars[i])' (x z t r R T)")
                }
                i += 1
            }
        }
        // @memid and @options.
        while i < chars.count {
            guard chars[i] == "@" else {
                if chars[i] == ":", case .interface(let n) = kind {
                    throw fail(i, "':' after '\(n)': a switch name starts with 'vale' (valeX:port, e.g. vale0:vm1); an interface name (eth0) has no ':'")
                }
                throw fail(i, "unexpected '\(chars[i])': expected a pipe ({id, }id), a ring mode (^ * -K), flags (/xztrRT) or @options here")
            }
            var j = i + 1
            while j < chars.count, chars[j] != "@" { j += 1 }
            let item = String(chars[(i + 1)..<j])
            guard !item.isEmpty else { throw fail(i + 1, "empty '@' option") }
            if item.allSatisfy(\.isNumber) {
                guard spec.memoryID == nil else { throw fail(i, "memory id given twice") }
                guard let m = Int(item), m >= 1, m <= 65535 else { throw fail(i + 1, "memory id must be 1...65535") }
                spec.memoryID = m
            } else if item.hasPrefix("conf:") {
                for pair in item.dropFirst(5).split(separator: ",", omittingEmptySubsequences: false) {
                    let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
                    guard kv.count == 2, let v = Int(kv[1]), v >= 1 else {
                        throw fail(i + 1, "@conf: expects key=number pairs, got '\(pair)'")
                    }
                    switch kv[0] {
                    case "rings": spec.configuration.txRings = v; spec.configuration.rxRings = v
                    case "tx-rings": spec.configuration.txRings = v
                    case "rx-rings": spec.configuration.rxRings = v
                    case "host-rings": spec.configuration.hostRings = v
                    case "slots": spec.configuration.txSlots = v; spec.configuration.rxSlots = v
                    case "tx-slots": spec.configuration.txSlots = v
                    case "rx-slots": spec.configuration.rxSlots = v
                    default: throw fail(i + 1, "unknown @conf: key '\(kv[0])' (rings, tx-rings, rx-rings, host-rings, slots, tx-slots, rx-slots)")
                    }
                }
            } else if item.hasPrefix("share=") || item.hasPrefix("extmem:") || item.hasPrefix("offset:") {
                spec.otherOptions.append(item)
            } else {
                throw fail(i + 1, "unknown option '@\(item)' (@N, @conf:, @share=, @extmem:, @offset:)")
            }
            i = j
        }
        return spec
    }
}
