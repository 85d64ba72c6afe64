import Glibc
import Logging
import URing
import VALESwitch
import VhostSystem

/// One `vhost-netmap capture` client: the control connection that asked becomes a stream of
/// pcap records (after an `ok` line and the pcap file header). Every 10 ms the records the
/// worker copied are moved into this connection as fast as it takes them; what it does not take
/// waits here (up to `maxPendingBytes`) and, beyond that, in the capture's ring until that is
/// full, and then copies are dropped and counted. The switch never waits for a reader.
package final class CaptureSession {
    static let maxSessions = 8
    static let maxPendingBytes = 1 << 20
    static let tickNanoseconds: UInt64 = 10_000_000

    let vale: VALESwitch
    let index: Int
    let request: Request
    let capture: PortCapture
    let client: OwnedDescriptor
    unowned let loop: EventLoop
    let logger: Logger
    var onEnd: (CaptureSession) -> Void = { _ in }
    private var portName: String { request.port }
    /// Records to send before ending (nil: until the client goes).
    private var limit: Int? { request.count }

    private var pending: [UInt8] = []
    private var sentBytes = 0
    private var records = 0
    private var ended = false
    private var timer: EventLoop.Token?
    private var hangUpWatch: EventLoop.Token?

    init(vale: VALESwitch, index: Int, request: Request, client: OwnedDescriptor, loop: EventLoop, logger: Logger) {
        self.vale = vale
        self.index = index
        self.request = request
        capture = PortCapture(direction: request.direction, snapLength: request.snapLength)
        self.client = client
        self.loop = loop
        self.logger = logger
    }

    /// What a capture request says: `capture PORT [rx|tx|both] [SNAPLEN] [COUNT]`.
    package struct Request: Equatable {
        package var port: String
        package var direction: PortCapture.Direction = .both
        package var snapLength = PortCapture.maxSnapLength
        package var count: Int?

        package static func parse(_ argument: String) -> Result<Request, CaptureRequestError> {
            let words = argument.split(separator: " ").map(String.init)
            guard let port = words.first else { return .failure(.init("capture needs a port name")) }
            var request = Request(port: port)
            if words.count > 1 {
                guard let d = PortCapture.Direction(rawValue: words[1]) else { return .failure(.init("direction '\(words[1])': expected rx, tx or both")) }
                request.direction = d
            }
            if words.count > 2 {
                guard let n = Int(words[2]), (1...PortCapture.maxSnapLength).contains(n) else {
                    return .failure(.init("snap length '\(words[2])': expected 1...\(PortCapture.maxSnapLength)"))
                }
                request.snapLength = n
            }
            if words.count > 3 {
                guard let n = Int(words[3]), n >= 0 else { return .failure(.init("count '\(words[3])': expected a number (0: no limit)")) }
                request.count = n == 0 ? nil : n
            }
            guard words.count <= 4 else { return .failure(.init("capture PORT [rx|tx|both] [SNAPLEN] [COUNT]: too many words")) }
            return .success(request)
        }
    }

    func start() {
        pending = Array("ok capturing \(portName) (\(capture.direction.rawValue), snap length \(capture.snapLength))\n".utf8) + capture.fileHeader
        logger.notice("capture of \(portName) started (\(capture.direction.rawValue), snap length \(capture.snapLength)\(limit.map { ", \($0) frames" } ?? ""))")
        // Anything the client sends, or its hang-up, ends the capture.
        // The handlers hold the session (strongly): ending it from inside one drops the daemon's
        // reference, and the handler still runs to its end.
        hangUpWatch = loop.watchReadable(client.rawValue) { [self] _ in
            end("the client closed the connection")
            return .stop
        }
        schedule()
    }

    private func schedule() {
        timer = loop.after(nanoseconds: Self.tickNanoseconds) { [self] in
            timer = nil
            tick()
            if !ended { schedule() }
        }
    }

    private func tick() {
        let attached = vale.lock.withLock { _ in vale.isCapturing(capture, onPort: index) }
        if pending.count < Self.maxPendingBytes {
            let room = limit.map { $0 - records } ?? .max
            records += capture.drain(into: &pending, limit: room)
        }
        do {
            while sentBytes < pending.count {
                let n = try pending[sentBytes...].withUnsafeBytes { try TCPSocket.sendAvailable(client.rawValue, $0) }
                if n == 0 { break }
                sentBytes += n
            }
        } catch {
            end("the client went away (\(error))")
            return
        }
        if sentBytes == pending.count {
            pending.removeAll(keepingCapacity: true)
            sentBytes = 0
            if let limit, records >= limit { end("\(limit) frames captured"); return }
            if !attached { end("the port was detached"); return }
        } else if sentBytes > Self.maxPendingBytes / 2 {
            pending.removeFirst(sentBytes)
            sentBytes = 0
        }
    }

    /// This session's figures so far.
    var report: CaptureReport {
        CaptureReport(port: portName, active: !ended, framesSent: UInt64(records), copiesDropped: UInt64(capture.dropped))
    }

    func end(_ why: String) {
        guard !ended else { return }
        ended = true
        vale.lock.withLock { _ in
            if vale.isCapturing(capture, onPort: index) { vale.stopCapture(onPort: index) }
        }
        for token in [timer, hangUpWatch].compactMap({ $0 }) { loop.cancel(token) }
        timer = nil
        hangUpWatch = nil
        let dropped = capture.dropped
        logger.notice("capture of \(portName) ended: \(why); \(records) frames sent, \(dropped) copies dropped\(dropped > 0 ? " (the reader was slower than the port)" : "")")
        onEnd(self)
    }
}

/// A port's captures, for `/metrics`: running or not, copies sent to readers, copies dropped
/// because a reader was slower than the port.
package struct CaptureReport: Equatable {
    package var port: String
    package var active = false
    package var framesSent: UInt64 = 0
    package var copiesDropped: UInt64 = 0

    package init(port: String, active: Bool = false, framesSent: UInt64 = 0, copiesDropped: UInt64 = 0) {
        self.port = port
        self.active = active
        self.framesSent = framesSent
        self.copiesDropped = copiesDropped
    }

    mutating func add(_ other: CaptureReport) {
        active = active || other.active
        framesSent += other.framesSent
        copiesDropped += other.copiesDropped
    }
}

package struct CaptureRequestError: Error, CustomStringConvertible {
    package let description: String
    init(_ description: String) { self.description = description }
}
