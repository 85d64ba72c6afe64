import FoundationEssentials
import Logging
import URing
import VhostSystem

/// What the control socket can ask of the daemon.
package protocol ControlCommands: AnyObject {
    func statisticsJSON(pretty: Bool) -> String
    func forwardingTableJSON() -> String
    func listPorts(_ filter: String) -> String
    /// Where a port attached without a socket path gets one.
    var socketDirectory: String { get }
    func portExists(_ name: String) -> Bool
    /// Adds a vhost-user port; returns its index on its switch.
    func attachPort(_ spec: PortSpec) throws -> Int
    func attachHostPort(_ spec: HostPortSpec) throws
    /// Removes a port; returns an error text, or nil.
    func detachPort(_ name: String) -> String?
    /// Turns `client` into a capture stream (`capture ARGUMENTS`); returns an error text, or nil.
    func startCapture(_ argument: String, client: OwnedDescriptor) -> String?
}

/// The control socket, read through io_uring. A client sends one or more command lines (a line
/// may arrive in pieces); every complete line is answered in order, and the connection is closed
/// once no partial line is pending (a last line without its newline counts when the client
/// shuts its side down). A client gets 5 s, a line at most 4 KiB, and at most `maxClients`
/// are served at once: the next ones are told so and closed (a local flood cannot starve
/// the front-ends of descriptors).
package final class ControlServer {
    unowned let commands: any ControlCommands
    unowned let loop: EventLoop
    let logger: Logger
    static let maxClients = 32
    static let maxLineLength = 4096
    static let idleNanoseconds: UInt64 = 5_000_000_000
    private(set) var clients = 0
    private var refusals = RateLimitedLog(interval: 10)

    package init(commands: any ControlCommands, loop: EventLoop, logger: Logger) {
        self.commands = commands
        self.loop = loop
        self.logger = logger
    }

    func serve(_ client: OwnedDescriptor) {
        guard clients < Self.maxClients else {
            reply("error: busy: \(Self.maxClients) control clients are connected; try again", to: client)
            refusals.note { suppressed in
                logger.warning("control socket: refused a client, \(Self.maxClients) already connected\(suppressed > 0 ? " (\(suppressed) more refusals since the last line)" : "")")
            }
            return
        }
        clients += 1
        var lines = ControlLines()
        var finished = false
        let finish = { [unowned self] in
            guard !finished else { return }
            finished = true
            clients -= 1
        }
        let request = loop.readRepeatedly(client.rawValue, length: 1024) { [unowned self] bytes, error in
            guard error == nil, bytes.count > 0 else {
                // End of stream: a last line without its newline is still a command.
                if error == nil, let last = lines.finish() { reply(answer(last), to: client) }
                finish()
                return .stop
            }
            let (complete, tooLong) = lines.append(bytes)
            for line in complete {
                // `capture` turns the connection into a stream of pcap records: it leaves here.
                if line == "capture" || line.hasPrefix("capture ") {
                    finish()
                    if let problem = commands.startCapture(String(line.dropFirst(7)).trimmingWhitespace, client: client) {
                        reply("error: \(problem)", to: client)
                    }
                    return .stop
                }
                reply(answer(line), to: client)
            }
            if tooLong {
                reply("error: line longer than \(Self.maxLineLength) bytes", to: client)
                finish()
                return .stop
            }
            if !complete.isEmpty && !lines.hasPartialLine {
                finish()
                return .stop
            }
            return .keepWatching
        }
        loop.after(nanoseconds: Self.idleNanoseconds) { [loop] in
            loop.cancel(request)
            finish()
        }
    }

    private func reply(_ text: String, to client: OwnedDescriptor) {
        Array((text + "\n").utf8).withUnsafeBytes { _ = try? UnixSocket.send(client.rawValue, $0) }
    }

    /// One request line: `stats`, `fdb`, `ping`, and the switch management that `vhost-netmap
    /// vale` sends (`capture PORT ...`, which streams, is taken before this): `list`, `attach SPEC` (a vhost-user port, --port syntax), `attach-host SPEC`
    /// (a host port, --host-port syntax), `detach NAME`. Management answers are text: "ok ..." or
    /// "error: ...".
    package func answer(_ line: String) -> String {
        let words = line.split(separator: " ", maxSplits: 1).map(String.init)
        let argument = words.count > 1 ? words[1].trimmingWhitespace : ""
        switch words.first ?? "" {
        case "stats": return commands.statisticsJSON(pretty: true)
        case "fdb": return commands.forwardingTableJSON()
        case "ping": return "pong"
        case "list": return commands.listPorts(argument)
        case "attach":
            do {
                let spec = try PortSpec.parse(argument, socketDirectory: commands.socketDirectory)
                guard !commands.portExists(spec.fullName) else { return "error: port \(spec.fullName) exists" }
                let index = try commands.attachPort(spec)
                logger.notice("control: attached \(spec.fullName) (\(spec.socketPath ?? "?"))")
                return "ok attached \(spec.fullName) port \(index)"
            } catch {
                return "error: \(error)"
            }
        case "attach-host":
            do {
                let spec = try HostPortSpec.parse(argument)
                guard !commands.portExists(spec.fullName) else { return "error: port \(spec.fullName) exists" }
                try commands.attachHostPort(spec)
                logger.notice("control: attached host port \(spec.fullName)")
                return "ok attached \(spec.fullName)"
            } catch {
                return "error: \(error)"
            }
        case "detach":
            if let problem = commands.detachPort(argument) { return "error: \(problem)" }
            logger.notice("control: detached \(argument)")
            return "ok detached \(argument)"
        default:
            return "error: unknown command '\(line.prefix(32))'; try: stats, fdb, ping, list, attach, attach-host, detach, capture"
        }
    }
}

/// A control client's bytes cut into command lines, as they arrive in pieces: each complete line
/// (without its newline, trimmed), and whether the pending partial line grew past
/// `ControlServer.maxLineLength` (the client is then refused).
package struct ControlLines {
    private var pending: [UInt8] = []

    package init() {}

    package var hasPartialLine: Bool { !pending.isEmpty }

    package mutating func append(_ bytes: some Collection<UInt8>) -> (lines: [String], tooLong: Bool) {
        pending += bytes
        var lines: [String] = []
        var start = pending.startIndex
        while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
            lines.append(Self.line(pending[start..<newline]))
            start = newline + 1
        }
        pending.removeSubrange(..<start)
        return (lines, pending.count > ControlServer.maxLineLength)
    }

    /// The last line, when the client ended its stream without a newline.
    package mutating func finish() -> String? {
        defer { pending = [] }
        return pending.isEmpty ? nil : Self.line(pending)
    }

    private static func line(_ bytes: some Collection<UInt8>) -> String {
        String(decoding: bytes, as: UTF8.self).trimmingWhitespace
    }
}
