import ArgumentParser
import Glibc
import Logging
import Netmap
import SystemPackage
import VhostNetmapBackend
import VhostSystem

/// `serve --config FILE` (the systemd unit's /etc/vhost-netmap/vhost-netmap.conf): serve's
/// options, one per line as `NAME VALUE` (`busy-poll` alone), `#` comments. Repeatable options
/// (port, host-port, worker-cpu) add to the command line's; the others apply unless the command
/// line gives them.
struct ServeConfigFile {
    var ports: [String] = []
    var hostPorts: [String] = []
    var workerCPUs: [Int] = []
    var workers: Int?
    var metrics: String?
    var socketDirectory: String?
    var control: String?
    var switchMode: SwitchMode?
    var netmapSync: NetmapSyncMode?
    var logLevel: Logger.Level?
    var busyPoll = false

    static let settings = ["port", "host-port", "worker-cpu", "workers", "metrics", "socket-dir", "control", "switch", "netmap-sync", "log-level", "busy-poll"]

    static func read(_ path: String) throws -> ServeConfigFile {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ValidationError("--config \(path): \(Errno(rawValue: errno))") }
        let file = OwnedDescriptor(adopting: fd)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = Glibc.read(file.rawValue, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            bytes += chunk[..<n]
            guard bytes.count <= 1 << 20 else { throw ValidationError("--config \(path): larger than 1 MiB") }
        }
        return try parse(String(decoding: bytes, as: UTF8.self), path: path)
    }

    static func parse(_ text: String, path: String) throws -> ServeConfigFile {
        var config = ServeConfigFile()
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = (rawLine.firstIndex(of: "#").map { rawLine[..<$0] } ?? rawLine).trimmingWhitespace
            guard !line.isEmpty else { continue }
            let words = line.split(maxSplits: 1, whereSeparator: { $0 == " " || $0 == "\t" })
            let name = String(words[0])
            let value = words.count > 1 ? words[1].trimmingWhitespace : ""
            func problem(_ what: String) -> ValidationError { ValidationError("\(path):\(number + 1): \(what)") }
            func parsed<T: ExpressibleByArgument>(_ type: T.Type) throws -> T {
                guard !value.isEmpty else { throw problem("'\(name)' needs a value") }
                guard let v = T(argument: value) else { throw problem("'\(value)' is not a valid \(name)") }
                return v
            }
            switch name {
            case "port": config.ports.append(try parsed(String.self))
            case "host-port": config.hostPorts.append(try parsed(String.self))
            case "worker-cpu": config.workerCPUs.append(try parsed(Int.self))
            case "workers": config.workers = try parsed(Int.self)
            case "metrics": config.metrics = try parsed(String.self)
            case "socket-dir": config.socketDirectory = try parsed(String.self)
            case "control": config.control = value
            case "switch": config.switchMode = try parsed(SwitchMode.self)
            case "netmap-sync": config.netmapSync = try parsed(NetmapSyncMode.self)
            case "log-level": config.logLevel = try parsed(Logger.Level.self)
            case "busy-poll":
                guard value.isEmpty else { throw problem("busy-poll takes no value") }
                config.busyPoll = true
            default:
                throw problem("unknown setting '\(name)' (expected one of: \(settings.joined(separator: ", ")))")
            }
        }
        return config
    }
}
