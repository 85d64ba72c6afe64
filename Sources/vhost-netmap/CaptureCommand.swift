import ArgumentParser
import Glibc
import Synchronization
import SystemPackage
import VALESwitch
import VhostNetmapBackend
import VhostSystem

extension PortCapture.Direction: ExpressibleByArgument {}

/// Set by SIGINT/SIGTERM: the capture ends after the records already received are written.
private let interrupted = Atomic<Bool>(false)

struct Capture: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy the frames of a port to a pcap file (or standard output) while traffic flows.",
        discussion: """
        Any port of the daemon's switches: a vhost-user port, a host port, a netmap port. \
        tx is what the port sent into the switch (its guest's transmit), rx what the switch \
        delivered to it. Copies the reader does not keep up with are dropped and counted \
        (the daemon logs how many); the port's own frames never wait. Ends after -c frames, \
        on Ctrl-C, or when the port goes. Read the file with tcpdump -r or wireshark:
          vhost-netmap capture vale0:vm1 -w vm1.pcap -c 1000
          vhost-netmap capture vale0:vm1 --direction rx | tcpdump -n -r -
        """
    )

    @Argument(help: "The port, SWITCH:PORT.")
    var port: String

    @Option(name: .customShort("w"), help: "Write the pcap file here (- for standard output).")
    var file = "-"

    @Option(name: .customLong("direction"), help: "rx, tx or both.")
    var direction: PortCapture.Direction = .both

    @Option(name: .customShort("c"), help: "Stop after this many frames.")
    var count: Int?

    @Option(name: .customLong("snaplen"), help: "Bytes kept of each frame (1-65535).")
    var snapLength = PortCapture.maxSnapLength

    @OptionGroup var control: ControlSocketOption

    func validate() throws {
        guard (1...PortCapture.maxSnapLength).contains(snapLength) else { throw ValidationError("--snaplen must be 1...\(PortCapture.maxSnapLength)") }
        if let count, count < 1 { throw ValidationError("-c must be at least 1") }
        if file == "-" && isatty(1) == 1 { throw ValidationError("standard output is a terminal: give -w FILE, or pipe it (| tcpdump -r -)") }
    }

    func run() throws {
        let socket: OwnedDescriptor
        do {
            socket = try UnixSocket.connect(path: control.path, nonBlocking: false)
        } catch {
            throw RuntimeError("cannot reach the daemon at \(control.path) (\(error)); is it running? Give --control PATH, or set VHOST_NETMAP_DIR.")
        }
        let request = "capture \(port) \(direction.rawValue) \(snapLength) \(count ?? 0)\n"
        try Array(request.utf8).withUnsafeBytes { try UnixSocket.send(socket.rawValue, $0) }
        for s in [SIGINT, SIGTERM] { signal(s) { _ in interrupted.store(true, ordering: .relaxed) } }

        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        // The first line: "ok capturing ..." or "error: ...".
        while !buffer.contains(UInt8(ascii: "\n")) {
            guard try receive(socket.rawValue, into: &buffer, chunk: &chunk) else { break }
        }
        guard let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) else { throw RuntimeError("the daemon closed the connection without an answer") }
        let answer = String(decoding: buffer[..<newline], as: UTF8.self)
        guard answer.hasPrefix("ok") else { throw RuntimeError(answer.hasPrefix("error: ") ? String(answer.dropFirst(7)) : answer) }
        buffer.removeSubrange(...newline)

        let out: OwnedDescriptor
        if file == "-" {
            out = OwnedDescriptor(adopting: dup(1))
        } else {
            let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw RuntimeError("cannot write \(file): \(Errno(rawValue: errno))") }
            out = OwnedDescriptor(adopting: fd)
        }
        Posix.printError("capturing \(port) (\(direction.rawValue)) into \(file == "-" ? "standard output" : file)\n")
        // Only whole records are written: an interrupted capture is still a valid file.
        var headerWritten = false
        var frames = 0
        var open = true
        while true {
            if !headerWritten && buffer.count >= 24 {
                try write(out.rawValue, buffer[..<24])
                buffer.removeFirst(24)
                headerWritten = true
            }
            var offset = 0
            while headerWritten && buffer.count - offset >= 16 {
                let length = buffer[offset + 8 ..< offset + 12].reversed().reduce(0) { $0 << 8 | Int($1) }
                guard buffer.count - offset >= 16 + length else { break }
                offset += 16 + length
                frames += 1
            }
            if offset > 0 {
                try write(out.rawValue, buffer[..<offset])
                buffer.removeFirst(offset)
            }
            if !open || interrupted.load(ordering: .relaxed) { break }
            open = try receive(socket.rawValue, into: &buffer, chunk: &chunk)
        }
        Posix.printError("\(frames) frame(s) captured\n")
    }

    /// Waits up to 200 ms for bytes; false at end of stream.
    private func receive(_ fd: CInt, into buffer: inout [UInt8], chunk: inout [UInt8]) throws -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 200) > 0 else { return !interrupted.load(ordering: .relaxed) }
        let n = read(fd, &chunk, chunk.count)
        if n < 0 && (errno == EINTR || errno == EAGAIN) { return true }
        guard n > 0 else { return false }
        buffer += chunk[..<n]
        return true
    }

    private func write(_ fd: CInt, _ bytes: ArraySlice<UInt8>) throws {
        var rest = bytes
        while !rest.isEmpty {
            let n = rest.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw RuntimeError("cannot write the capture: \(Errno(rawValue: errno))") }
            rest = rest.dropFirst(n)
        }
    }
}
