import Foundation
import Glibc
import Testing
@testable import VhostNetmapBackend
import VhostSystem
import VhostUser

/// How the daemon treats its sockets and the clients on them: it never takes over or removes
/// what is not its own, cleans up after a failed start, serves a front-end that reconnects at
/// once, slows one that keeps leaving and says why, and answers control commands line by line.
@Suite(.serialized) struct FrontEndHygiene {
    @Test func aSocketInUseNamesItsOwnerProcess() throws {
        let first = try RunningDaemon(ports: ["vale0:a"])
        defer { _ = first.stop() }
        let port = try PortSpec.parse("vale0:a=\(first.directory)/a.sock")
        #expect { try Daemon(options: DaemonOptions(ports: [port]), logger: quietLogger) } throws: {
            "\($0)".contains("in use: process \(getpid())")
        }
        // At run time too: a port attached onto a live socket (here another port's) is refused.
        let second = try RunningDaemon(ports: ["vale1:b"])
        defer { _ = second.stop() }
        let answer = String(decoding: try ControlClient.request("attach vale1:c=\(first.directory)/a.sock", socket: "\(second.directory)/control.sock"), as: UTF8.self)
        #expect(answer.hasPrefix("error: ") && answer.contains("\(first.directory)/a.sock is in use: process \(getpid())"), "\(answer)")
        #expect(UnixSocket.isListening("\(first.directory)/a.sock"))
    }

    /// A start that fails at its second port removes the first port's socket file.
    @Test func aFailedStartLeavesNoSocketBehind() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vn-failed-start-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ports = try ["vale0:a=\(dir)/a.sock", "vale0:b=/proc/vn-none/b.sock"].map { try PortSpec.parse($0) }
        #expect(throws: DaemonError.self) { try Daemon(options: DaemonOptions(ports: ports, controlSocket: "\(dir)/control.sock"), logger: quietLogger) }
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/a.sock"))
        let controlFirst = try ["vale0:a=\(dir)/a.sock", "vale0:a=\(dir)/b.sock"].map { try PortSpec.parse($0) }
        #expect(throws: DaemonError.self) { try Daemon(options: DaemonOptions(ports: controlFirst), logger: quietLogger) }
        #expect((try? FileManager.default.contentsOfDirectory(atPath: dir))?.isEmpty ?? true)
    }

    /// A socket file replaced by another process after ours was removed by hand is not ours to
    /// unlink when the daemon stops.
    @Test func onlyItsOwnSocketFilesAreRemoved() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vn-own-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/z.sock"
        let z = try PortSpec.parse("vale0:z=\(path)")
        let d = try RunningDaemon(ports: ["vale0:a"]) { $0.ports.append(z) }
        #expect(UnixSocket.isListening(path))
        unlink(path)
        let other = try UnixSocket.listen(path: path)
        #expect(d.stop() == 0)
        #expect(UnixSocket.isListening(path))
        _ = other
    }

    /// Without a socket path a port listens at `<socket-dir>/<switch>/<port>.sock`.
    @Test func portsWithoutAPathFollowTheConvention() throws {
        let spec = try PortSpec.parse("vale3:web,queues=2", socketDirectory: "/srv/vn")
        #expect(spec.socketPath == "/srv/vn/vale3/web.sock")
        #expect(spec.queuePairs == 2)
        #expect(try PortSpec.parse("vale3:web").socketPath == "/run/vhost-netmap/vale3/web.sock")
        #expect(try PortSpec.parse("vale3:web=/x.sock,client").socketPath == "/x.sock")
        #expect(throws: PortSpec.ParseError.self) { try PortSpec.parse("netmap:eth0") }
        #expect(throws: PortSpec.ParseError.self) { try PortSpec.parse("vale0:x=") }
    }

    /// A front-end that closes and reconnects at once is served every time, even when its old
    /// connection's end of stream was not read yet.
    @Test func aFrontEndThatReconnectsAtOnceIsServed() throws {
        let d = try RunningDaemon(ports: ["vale0:a"])
        defer { #expect(d.stop() == 0) }
        var served = 0
        for _ in 0..<200 {
            let fe = try VhostUserFrontEnd(path: d.socket("a"))
            _ = try fe.negotiate(wanted: 1 << 32, protocol: 0)
            if (try? fe.callU64(.getQueueNum)) == 1 { served += 1 }
        }
        #expect(served == 200)
        #expect(try d.port("vale0:a")["frontEnds"].map { ($0 as! [String: Any])["refused"] as! Int } == 0)
    }

    /// A front-end that asks the queue count and leaves, again and again (QEMU queues=2 against a
    /// one-pair port): the daemon says why and slows it down.
    @Test func aFrontEndInALeaveLoopIsToldWhyAndSlowed() throws {
        let d = try RunningDaemon(ports: ["vale0:a"])
        defer { #expect(d.stop() == 0) }
        for _ in 0..<5 {
            let fe = try VhostUserFrontEnd(path: d.socket("a"))
            _ = try fe.callU64(.getFeatures)
            #expect(try fe.callU64(.getQueueNum) == 1)
        }
        let frontEnds = { try d.port("vale0:a")["frontEnds"] as! [String: Any] }
        #expect(d.waitUntil { try frontEnds()["quickLeavesInARow"] as! Int >= 5 })
        let reason = try frontEnds()["lastLeaveReason"] as? String ?? ""
        #expect(reason.contains("read the queue count (1 pair(s)) and left before choosing features"), "\(reason)")
        // A front-end that goes on to run the device resets the count.
        let g = try SocketGuest(path: d.socket("a"), mac: 1)
        try g.start()
        _ = g
    }

    /// Control commands are lines: one split over two writes is answered, two in one write are
    /// both answered, a last one without its newline counts at end of stream.
    @Test func controlCommandsAreLines() throws {
        let d = try RunningDaemon(ports: ["vale0:a"])
        defer { #expect(d.stop() == 0) }
        let control = "\(d.directory)/control.sock"
        func exchange(_ pieces: [String], shutDownWriting: Bool = false) throws -> String {
            let s = try UnixSocket.connect(path: control, nonBlocking: false)
            for piece in pieces {
                try Array(piece.utf8).withUnsafeBytes { try UnixSocket.send(s.rawValue, $0) }
                usleep(20_000)
            }
            if shutDownWriting { shutdown(s.rawValue, Int32(SHUT_WR)) }
            var answer = [UInt8]()
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(s.rawValue, &chunk, chunk.count)
                if n <= 0 { break }
                answer += chunk[0..<n]
            }
            return String(decoding: answer, as: UTF8.self)
        }
        #expect(try exchange(["pi", "ng\n"]) == "pong\n")
        #expect(try exchange(["ping\nping\n"]) == "pong\npong\n")
        #expect(try exchange(["ping\nping"], shutDownWriting: true) == "pong\npong\n")
        #expect(try exchange(["st", "ats\n"]).contains("\"switches\""))
    }

    /// Idle control clients beyond the cap are told the daemon is busy; the front-ends and a
    /// later client are served.
    @Test func controlClientsAreCapped() throws {
        let d = try RunningDaemon(ports: ["vale0:a"])
        defer { #expect(d.stop() == 0) }
        let control = "\(d.directory)/control.sock"
        var idle: [OwnedDescriptor] = []
        for _ in 0..<ControlServer.maxClients { idle.append(try UnixSocket.connect(path: control, nonBlocking: false)) }
        #expect(String(decoding: try ControlClient.request("ping", socket: control), as: UTF8.self).hasPrefix("error: busy"))
        let g = try SocketGuest(path: d.socket("a"), mac: 1)
        try g.start()
        idle.removeAll()
        #expect(d.waitUntil { String(decoding: try ControlClient.request("ping", socket: control), as: UTF8.self) == "pong\n" })
    }
}
