import Logging
import URing
import VhostSystem

/// What a metrics client asked for, read from the head of its HTTP request.
package enum MetricsRequest: Equatable {
    /// `GET /metrics` (a query string is ignored).
    case metrics
    /// The head has not ended yet.
    case incomplete
    /// Anything else: the status and why.
    case refused(status: Int, reason: String)

    package static let maxHeadBytes = 8192

    /// Parses the request line once the head is complete (a blank line); only the request line
    /// matters, headers are skipped.
    package static func parse(_ bytes: [UInt8]) -> MetricsRequest {
        let end = headEnd(bytes)
        guard let end else {
            return bytes.count > maxHeadBytes ? .refused(status: 431, reason: "request head over \(maxHeadBytes) bytes") : .incomplete
        }
        guard end <= maxHeadBytes else { return .refused(status: 431, reason: "request head over \(maxHeadBytes) bytes") }
        let lineEnd = bytes.firstIndex(of: UInt8(ascii: "\n"))!
        var line = bytes[..<lineEnd]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[1].first == UInt8(ascii: "/") else {
            return .refused(status: 400, reason: "not an HTTP request line")
        }
        let version = String(decoding: parts[2], as: UTF8.self)
        guard version == "HTTP/1.1" || version == "HTTP/1.0" else { return .refused(status: 505, reason: "only HTTP/1.0 and 1.1 are spoken") }
        guard String(decoding: parts[0], as: UTF8.self) == "GET" else { return .refused(status: 405, reason: "only GET is served") }
        let target = parts[1].split(separator: UInt8(ascii: "?"), maxSplits: 1, omittingEmptySubsequences: false)[0]
        guard String(decoding: target, as: UTF8.self) == "/metrics" else { return .refused(status: 404, reason: "only /metrics is served") }
        return .metrics
    }

    /// The index just past the blank line that ends the head (CRLF CRLF, or bare LF LF).
    private static func headEnd(_ bytes: [UInt8]) -> Int? {
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\n") {
                if i + 1 < bytes.count && bytes[i + 1] == UInt8(ascii: "\n") { return i + 2 }
                if i + 2 < bytes.count && bytes[i + 1] == UInt8(ascii: "\r") && bytes[i + 2] == UInt8(ascii: "\n") { return i + 3 }
            }
            i += 1
        }
        return nil
    }

    /// The whole response: the metrics (from `body`, rendered only when asked for) or the refusal.
    package func response(_ body: () -> String) -> [UInt8] {
        let (status, text, extra): (Int, String, String)
        switch self {
        case .metrics: (status, text, extra) = (200, body(), "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n")
        case .refused(let s, let reason): (status, text, extra) = (s, reason + "\n", (s == 405 ? "Allow: GET\r\n" : "") + "Content-Type: text/plain; charset=utf-8\r\n")
        case .incomplete: (status, text, extra) = (400, "incomplete request\n", "")
        }
        let payload = Array(text.utf8)
        let head = "HTTP/1.1 \(status) \(Self.statusText[status] ?? "Error")\r\n\(extra)Content-Length: \(payload.count)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + payload
    }

    private static let statusText = [200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                                     408: "Request Timeout", 431: "Request Header Fields Too Large",
                                     503: "Service Unavailable", 505: "HTTP Version Not Supported"]
}

/// `--metrics ADDR:PORT`: serves `GET /metrics` on the control thread's event loop, one request
/// per connection. The data path never waits on it: the counters are read under each switch's
/// lock for as long as `stats` takes, a response is sent as the client's socket takes it (never
/// blocking), and a client gets 5 s in all; at most `maxClients` are served at once.
final class MetricsServer {
    static let maxClients = 16
    static let clientNanoseconds: UInt64 = 5_000_000_000
    static let sendBufferBytes = 32 << 10

    unowned let loop: EventLoop
    let logger: Logger
    let render: () -> String
    private(set) var clients = 0
    private var refusals = RateLimitedLog(interval: 10)

    init(loop: EventLoop, logger: Logger, render: @escaping () -> String) {
        self.loop = loop
        self.logger = logger
        self.render = render
    }

    /// One client: its socket, what it sent, what is left to send, and its pending requests.
    private final class Client {
        let socket: OwnedDescriptor
        var received: [UInt8] = []
        var unsent: [UInt8] = []
        var sent = 0
        var read: EventLoop.Token?
        var write: EventLoop.Token?
        var timer: EventLoop.Token?
        var done = false
        init(_ socket: OwnedDescriptor) { self.socket = socket }
    }

    func serve(_ socket: OwnedDescriptor) {
        guard clients < Self.maxClients else {
            let busy = MetricsRequest.refused(status: 503, reason: "\(Self.maxClients) metrics clients are connected; try again").response { "" }
            _ = busy.withUnsafeBytes { try? TCPSocket.sendAvailable(socket.rawValue, $0) }
            refusals.note { suppressed in
                logger.warning("metrics: refused a client, \(Self.maxClients) already connected\(suppressed > 0 ? " (\(suppressed) more since the last line)" : "")")
            }
            return
        }
        clients += 1
        // A client that stops reading holds at most this much of the kernel's memory; the rest
        // of its response waits here, and goes with it after 5 s.
        TCPSocket.limitSendBuffer(socket.rawValue, bytes: Self.sendBufferBytes)
        let client = Client(socket)
        client.read = loop.readRepeatedly(socket.rawValue, length: 1024) { [unowned self] bytes, error in
            guard error == nil, bytes.count > 0 else {
                finish(client)
                return .stop
            }
            client.received += bytes
            let request = MetricsRequest.parse(client.received)
            if request == .incomplete { return .keepWatching }
            respond(client, request.response(render))
            return .stop
        }
        client.timer = loop.after(nanoseconds: Self.clientNanoseconds) { [unowned self] in
            client.timer = nil
            if client.unsent.isEmpty {
                let timeout = MetricsRequest.refused(status: 408, reason: "no complete request within 5 s").response { "" }
                _ = timeout.withUnsafeBytes { try? TCPSocket.sendAvailable(client.socket.rawValue, $0) }
            }
            finish(client)
        }
    }

    private func respond(_ client: Client, _ bytes: [UInt8]) {
        client.unsent = bytes
        guard sendMore(client) else {
            client.write = loop.watchWritable(client.socket.rawValue) { [unowned self] _ in
                if sendMore(client) {
                    client.write = nil
                    finish(client)
                    return .stop
                }
                return client.done ? .stop : .keepWatching
            }
            return
        }
        finish(client)
    }

    /// Sends what the socket takes; true once everything was sent (or the client went away).
    private func sendMore(_ client: Client) -> Bool {
        do {
            let n = try client.unsent[client.sent...].withUnsafeBytes { try TCPSocket.sendAvailable(client.socket.rawValue, $0) }
            client.sent += n
            return client.sent == client.unsent.count
        } catch {
            return true
        }
    }

    private func finish(_ client: Client) {
        guard !client.done else { return }
        client.done = true
        clients -= 1
        for token in [client.read, client.write, client.timer].compactMap({ $0 }) { loop.cancel(token) }
        client.read = nil
        client.write = nil
        client.timer = nil
    }
}
