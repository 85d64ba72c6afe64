import Foundation
import Logging
import URing
import VhostSystem

/// What the control socket can ask of the daemon.
protocol ControlCommands: AnyObject {
    func statisticsJSON(pretty: Bool) -> String
    func forwardingTableJSON() -> String
    func listPorts(_ filter: String) -> String
    func portExists(_ name: String) -> Bool
    /// Adds a vhost-user port; returns its index on its switch.
    func attachPort(_ spec: PortSpec) throws -> Int
    func attachHostPort(_ spec: HostPortSpec) throws
    /// Removes a port; returns an error text, or nil.
    func detachPort(_ name: String) -> String?
}

/// The control socket: one short request line per connection, read through io_uring; the answer
/// is sent and the connection closed. A client that sends nothing is dropped after 5 s.
struct ControlServer {
    unowned let commands: any ControlCommands
    let loop: EventLoop
    let logger: Logger

    func serve(_ client: OwnedDescriptor) {
        let request = loop.readRepeatedly(client.rawValue, length: 1024) { bytes, _ in
            let line = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            let reply = answer(line)
            Array((reply + "\n").utf8).withUnsafeBytes { _ = try? UnixSocket.send(client.rawValue, $0) }
            return .stop
        }
        loop.after(nanoseconds: 5_000_000_000) { [loop] in loop.cancel(request) }
    }

    /// One request line: `stats`, `fdb`, `ping`, and the switch management that `vhost-netmap
    /// vale` sends: `list`, `attach SPEC` (a vhost-user port, --port syntax), `attach-host SPEC`
    /// (a host port, --host-port syntax), `detach NAME`. Management answers are text: "ok ..." or
    /// "error: ...".
    func answer(_ line: String) -> String {
        let words = line.split(separator: " ", maxSplits: 1).map(String.init)
        let argument = words.count > 1 ? words[1].trimmingCharacters(in: .whitespaces) : ""
        switch words.first ?? "" {
        case "stats": return commands.statisticsJSON(pretty: true)
        case "fdb": return commands.forwardingTableJSON()
        case "ping": return "pong"
        case "list": return commands.listPorts(argument)
        case "attach":
            do {
                let spec = try PortSpec.parse(argument)
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
            return "error: unknown command '\(line.prefix(32))'; try: stats, fdb, ping, list, attach, attach-host, detach"
        }
    }
}
