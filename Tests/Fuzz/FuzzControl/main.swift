import CFuzzDriver
import Glibc
import Logging
import URing
import VhostNetmapBackend
import VhostSystem

// The control socket's side of a client: bytes cut into lines as they arrive in pieces
// (ControlLines; the first input byte sets the piece sizes), each line answered by
// ControlServer.answer against a recording stand-in for the daemon. Nothing may crash; lines
// must match the newlines sent, every
// answer is one line (clients read answers line by line), and whatever reaches the daemon is a
// parsed, valid specification. The same bytes also go to the metrics endpoint's HTTP request
// parser (MetricsRequest).
final class RecordingCommands: ControlCommands {
    var attached = 0
    var socketDirectory: String { "/run/fuzz" }
    func statisticsJSON(pretty: Bool) -> String { "{}" }
    func forwardingTableJSON() -> String { "[]" }
    func listPorts(_ filter: String) -> String { "vale0:a" }
    func portExists(_ name: String) -> Bool { name == "vale0:a" }
    func attachPort(_ spec: PortSpec) throws -> Int {
        precondition((spec.switchName.hasPrefix("vale") || spec.netmapName != nil) && spec.socketPath?.isEmpty == false, "attach of \(spec)")
        precondition(spec.queuePairs >= 1 && spec.queuePairs <= PortSpec.maxQueuePairs)
        attached += 1
        return attached
    }
    func attachHostPort(_ spec: HostPortSpec) throws {
        precondition(!spec.interfaceName.isEmpty && spec.interfaceName.utf8.count < 16, "host port \(spec)")
    }
    func detachPort(_ name: String) -> String? { name == "vale0:a" ? nil : "no port \(name)" }
    func startCapture(_ argument: String, client: OwnedDescriptor) -> String? { "captures are not run here" }
}

let quiet = Logger(label: "fuzz") { _ in SwiftLogNoOpLogHandler() }
let commands = RecordingCommands()
let loop = try! EventLoop(entries: 8)
let server = ControlServer(commands: commands, loop: loop, logger: quiet)

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, count in
    guard count >= 1, let data else { return 0 }
    let bytes = UnsafeBufferPointer(start: data + 1, count: count - 1)
    let piece = Int(data[0]) * 37 + 1
    var lines = ControlLines()
    var offset = 0
    var answered: [String] = []
    var refused = false
    while offset < bytes.count {
        let chunk = bytes[offset..<min(offset + piece, bytes.count)]
        let (complete, tooLong) = lines.append(chunk)
        answered += complete
        offset += chunk.count
        if tooLong { refused = true; break }
    }
    if !refused, let last = lines.finish() { answered.append(last) }
    let newlines = bytes[..<offset].filter { $0 == UInt8(ascii: "\n") }.count
    precondition(answered.count == newlines || (!refused && answered.count == newlines + 1), "\(answered.count) lines for \(newlines) newlines")
    // The same bytes as an HTTP request to the metrics endpoint, arriving in the same pieces:
    // incomplete until a verdict, then one well-formed response whose length is what it says.
    var received: [UInt8] = []
    var start = 0
    while start < bytes.count {
        received += bytes[start..<min(start + piece, bytes.count)]
        start += piece
        let request = MetricsRequest.parse(received)
        if request == .incomplete {
            precondition(received.count <= MetricsRequest.maxHeadBytes, "a \(received.count)-byte head still incomplete")
            continue
        }
        let response = String(decoding: request.response { "m 1\n" }, as: UTF8.self)
        let parts = response.split(separator: "\r\n\r\n", maxSplits: 1, omittingEmptySubsequences: false)
        precondition(response.hasPrefix("HTTP/1.1 ") && parts.count == 2, "malformed response")
        precondition(parts[0].contains("Content-Length: \(parts[1].utf8.count)\r\n"), "Content-Length differs from the body")
        break
    }
    for line in answered {
        precondition(!line.utf8.contains(UInt8(ascii: "\n")), "a line holds a newline")
        if case .success(let capture) = CaptureSession.Request.parse(line) {
            precondition(capture.snapLength >= 1 && capture.snapLength <= 65_535 && (capture.count ?? 1) >= 1, "capture request \(capture)")
        }
        let answer = server.answer(line)
        precondition(!answer.isEmpty && !answer.utf8.contains(UInt8(ascii: "\n")), "answer to \(line.prefix(40)) is not one line")
    }
    return 0
})
