import Foundation
import Glibc
import Testing
import VALESwitch
@testable import VhostNetmapBackend
import VhostSystem
import VhostUser
import Virtio

/// A guest that reaches the daemon through its socket, like QEMU or DPDK virtio-user.
final class SocketGuest {
    let memory: DriverMemory
    let frontEnd: VhostUserFrontEnd
    var rx: DriverQueue!
    var tx: DriverQueue!
    let kicks = [try! EventFD.make(), try! EventFD.make()]
    let calls = [try! EventFD.make(), try! EventFD.make()]
    var features: UInt64 = 0
    let mac: [UInt8]

    init(path: String, mac last: UInt8) throws {
        memory = try DriverMemory(size: 8 << 20)
        frontEnd = try VhostUserFrontEnd(path: path)
        mac = [0x52, 0x54, 0, 0, 1, last]
    }

    /// Split rings only (its rings are DriverQueues): everything else the device offers.
    func start(queueSize: Int = 256, wanted: UInt64 = ~VirtioFeatures.ringPacked.rawValue) throws {
        features = try frontEnd.negotiate(wanted: wanted, protocol: ProtocolFeatures([.mq, .replyAck, .rarp, .mtu]).rawValue)
        let s = memory.regionSpec
        try frontEnd.setMemoryTable([MemoryRegionDescription(guestPhysicalAddress: s.guestPhysicalAddress.value, size: s.size,
                                                             userAddress: s.userAddress.value, mmapOffset: 0)], descriptors: [memory.descriptor.rawValue])
        rx = DriverQueue(size: queueSize, memory: memory)
        tx = DriverQueue(size: queueSize, memory: memory)
        rx.inOrder = features & VirtioFeatures.inOrder.rawValue != 0
        tx.inOrder = rx.inOrder
        for (i, q) in [rx!, tx!].enumerated() {
            let a = q.addresses
            try frontEnd.startRing(index: UInt32(i), size: UInt32(queueSize),
                                   address: VringAddress(index: UInt32(i), flags: 0, descriptorTable: a.descriptorTable.value, usedRing: a.usedRing.value, availRing: a.availRing.value, log: 0),
                                   kick: kicks[i].rawValue, call: calls[i].rawValue, enable: true)
        }
    }

    func postReceiveBuffers(_ n: Int) {
        for _ in 0..<n { _ = rx.add([.writable(memory.allocate(2048), length: 2048)]) }
        rx.publish()
        EventFD.signal(kicks[0].rawValue)
    }

    func send(_ frames: [[UInt8]]) {
        _ = tx.reapUsed()
        for f in frames {
            let b = memory.allocate(12 + f.count)
            memset(memory.host(b), 0, 12)
            f.withUnsafeBytes { memory.host(b + 12).copyMemory(from: $0.baseAddress!, byteCount: f.count) }
            _ = tx.add([.readable(b, length: UInt32(12 + f.count))])
        }
        tx.publish()
        // A real driver kicks unless the device asked it not to; kicking always is also legal.
        EventFD.signal(kicks[1].rawValue)
    }

    /// Waits (bounded) for receive interrupts until `count` frames arrived; returns the frames.
    func receive(_ count: Int, waitMilliseconds: Int32 = 10_000) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var waited: Int32 = 0
        while out.count < count && waited < waitMilliseconds {
            var pfd = pollfd(fd: calls[0].rawValue, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 50) > 0 { EventFD.drain(calls[0].rawValue) } else { waited += 50 }
            for (address, length) in rx.reapUsedWithAddresses() {
                out.append(Array(UnsafeRawBufferPointer(start: memory.host(address) + 12, count: Int(length) - 12)))
            }
        }
        return out
    }
}

final class RunningDaemon: @unchecked Sendable {
    let directory: String
    let daemon: Daemon
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)
    private(set) var exitCode: Int32 = -1

    init(ports: [String], clientPorts: [String] = [], configure: (inout DaemonOptions) -> Void = { _ in }) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vhost-netmap-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        directory = dir
        var specs = try ports.map { try PortSpec.parse("\($0)=\(dir)/\($0.split(separator: ":")[1]).sock") }
        specs += try clientPorts.map { try PortSpec.parse("\($0)=\(dir)/peer-\($0.split(separator: ":")[1]).sock,client") }
        var options = DaemonOptions(ports: specs, controlSocket: "\(dir)/control.sock")
        options.reconnectInitialNanoseconds = 20_000_000
        options.reconnectMaxNanoseconds = 100_000_000
        configure(&options)
        daemon = try Daemon(options: options, logger: quietLogger)
        let t = Thread { [self] in
            exitCode = daemon.run()
            finished.signal()
        }
        thread = t
        t.start()
    }

    func socket(_ port: String) -> String { "\(directory)/\(port).sock" }

    func stop() -> Int32 {
        daemon.requestStop()
        _ = finished.wait(timeout: .now() + 30)
        thread = nil  // the thread's block holds this object: break the cycle once it ran
        try? FileManager.default.removeItem(atPath: directory)
        return exitCode
    }

    func stats() throws -> [String: Any] {
        let answer = try ControlClient.request("stats", socket: "\(directory)/control.sock")
        return try JSONSerialization.jsonObject(with: Data(answer)) as! [String: Any]
    }

    func port(_ portName: String) throws -> [String: Any] {
        let sw = (try stats()["switches"] as! [[String: Any]])[0]
        return (sw["ports"] as! [[String: Any]]).first { ($0["name"] as! String) == portName }!
    }

    func isConnected(_ portName: String) throws -> Bool { try port(portName)["connected"] as! Bool }

    /// Polls a condition on the daemon's state, up to `milliseconds`.
    func waitUntil(milliseconds: Int = 10_000, _ condition: () throws -> Bool) -> Bool {
        for _ in 0..<(milliseconds / 20) {
            if (try? condition()) == true { return true }
            usleep(20_000)
        }
        return false
    }

    func counters(_ portName: String) throws -> [String: Int] {
        let sw = (try stats()["switches"] as! [[String: Any]])[0]
        let port = (sw["ports"] as! [[String: Any]]).first { ($0["name"] as! String) == portName }!
        return port["counters"] as! [String: Int]
    }
}

@Suite(.serialized) struct DaemonOverSockets {
    @Test func framesFlowBetweenTwoFrontEndsAndCountersAgree() throws {
        let d = try RunningDaemon(ports: ["vale0:a", "vale0:b"])
        defer { #expect(d.stop() == 0) }
        let a = try SocketGuest(path: d.socket("a"), mac: 1)
        let b = try SocketGuest(path: d.socket("b"), mac: 2)
        try a.start()
        try b.start()
        a.postReceiveBuffers(64)
        b.postReceiveBuffers(200)
        b.send([ethernet(to: a.mac, from: b.mac, payload: 50)])
        #expect(a.receive(1).count == 1)
        var sent: [[UInt8]] = []
        for round in 0..<5 {
            let frames = (0..<32).map { ethernet(to: b.mac, from: a.mac, payload: 46 + $0 * 7, seed: UInt8(round)) }
            sent += frames
            a.send(frames)
        }
        let got = b.receive(sent.count)
        #expect(got.count == sent.count)
        let intact = got == sent
        #expect(intact)
        let ca = try d.counters("vale0:a")
        let cb = try d.counters("vale0:b")
        #expect(ca["inPackets"] == 160 && ca["outPackets"] == 1)
        #expect(cb["outPackets"] == 160 && cb["inPackets"] == 1)
        #expect(cb["outBytes"] == sent.reduce(0) { $0 + $1.count })
    }

    @Test func hostileConnectionsAreClosedAndTheSocketServesAgain() throws {
        let d = try RunningDaemon(ports: ["vale0:a", "vale0:b", "vale0:c"])
        defer { #expect(d.stop() == 0) }
        let a = try SocketGuest(path: d.socket("a"), mac: 1)
        let b = try SocketGuest(path: d.socket("b"), mac: 2)
        try a.start()
        try b.start()
        b.postReceiveBuffers(64)
        let hostile: [(String, [UInt8], Int)] = [
            ("bad version", MessageHeader(request: 1, flags: 0, size: 0).encoded(), 0),
            ("reply flag", MessageHeader(request: 1, flags: 5, size: 0).encoded(), 0),
            ("unknown request", MessageHeader(request: 4242, flags: 1, size: 0).encoded(), 0),
            ("oversized", MessageHeader(request: 5, flags: 1, size: 1 << 20).encoded(), 0),
            ("memory table without fds", MessageHeader(request: 5, flags: 1, size: 40).encoded() + [1, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 32), 0),
            ("payload size lies", MessageHeader(request: 2, flags: 1, size: 4).encoded() + [1, 2, 3, 4], 0),
            ("kick with three fds", MessageHeader(request: 12, flags: 1, size: 8).encoded() + u64(0), 3),
            ("ring before memory", MessageHeader(request: 9, flags: 1, size: 40).encoded() + [UInt8](repeating: 0, count: 40), 0),
        ]
        for (name, bytes, fdCount) in hostile {
            let evil = try VhostUserFrontEnd(path: d.socket("c"))
            let fds = try (0..<fdCount).map { _ in try EventFD.make() }
            try? evil.sendRaw(bytes, descriptors: fds.map(\.rawValue))
            #expect(evil.waitForClose(), "\(name): connection was not closed")
        }
        // Truncated: a header that promises a payload, then silence, then close.
        let stall = try VhostUserFrontEnd(path: d.socket("c"))
        try stall.sendRaw(MessageHeader(request: 2, flags: 1, size: 8).encoded() + [1, 2])
        // Meanwhile the other ports still work (the control thread is not stuck on the stall).
        let f = ethernet(to: b.mac, from: a.mac, payload: 99)
        a.send([f])
        #expect(b.receive(1) == [f])
        _ = stall
        // The stalled connection still holds the port; once it closes, the port serves again.
        #expect(try d.isConnected("vale0:c"))
        shutdown(stall.socket.rawValue, Int32(SHUT_RDWR))
        #expect(d.waitUntil { !(try d.isConnected("vale0:c")) })
        let c2 = try SocketGuest(path: d.socket("c"), mac: 3)
        try c2.start()
        c2.postReceiveBuffers(8)
        a.send([ethernet(to: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], from: a.mac, payload: 60)])
        #expect(c2.receive(1).count == 1)
    }

    @Test func serverModeAcceptsANewFrontEndAfterDisconnect() throws {
        let d = try RunningDaemon(ports: ["vale0:a", "vale0:b"])
        defer { #expect(d.stop() == 0) }
        let b = try SocketGuest(path: d.socket("b"), mac: 2)
        try b.start()
        b.postReceiveBuffers(128)
        for generation in 0..<3 {
            let a = try SocketGuest(path: d.socket("a"), mac: 1)
            try a.start()
            let frames = (0..<10).map { ethernet(to: b.mac, from: a.mac, payload: 60, seed: UInt8($0 + generation * 10)) }
            a.send(frames)
            #expect(b.receive(10) == frames)
            // a goes away (front-end crash or VM shutdown): the daemon resets the device.
        }
        #expect(try d.counters("vale0:a")["inPackets"] == 30)
    }

    @Test func clientModeConnectsAndReconnects() throws {
        let d = try RunningDaemon(ports: ["vale0:a"], clientPorts: ["vale0:q"])
        defer { #expect(d.stop() == 0) }
        let peerPath = "\(d.directory)/peer-q.sock"
        let listener = try UnixSocket.listen(path: peerPath)
        var pfd = pollfd(fd: listener.rawValue, events: Int16(POLLIN), revents: 0)
        for generation in 0..<2 {
            #expect(poll(&pfd, 1, 10_000) == 1, "daemon did not connect (generation \(generation))")
            guard let conn = try UnixSocket.accept(listener.rawValue) else { Issue.record("no connection"); return }
            _ = fcntl(conn.rawValue, F_SETFL, fcntl(conn.rawValue, F_GETFL) & ~O_NONBLOCK)
            let fe = VhostUserFrontEnd(socket: conn)
            let offered = try fe.callU64(.getFeatures)
            #expect(offered == VhostNetDevice.offeredFeatures.rawValue)
            // Dropping `fe` closes the connection; the daemon reconnects with back-off.
        }
    }

    /// A second daemon on the same socket paths refuses to start, naming the path, and leaves the
    /// first one's sockets alone (it still answers); a stale socket (nobody listening) is reused.
    @Test func liveSocketsAreNeverTakenOver() throws {
        let first = try RunningDaemon(ports: ["vale0:a"])
        defer { _ = first.stop() }
        let dir = first.directory
        let port = try PortSpec.parse("vale0:a=\(dir)/a.sock")
        #expect { try Daemon(options: DaemonOptions(ports: [port]), logger: quietLogger) } throws: {
            "\($0)".contains("\(dir)/a.sock is in use")
        }
        #expect { try Daemon(options: DaemonOptions(ports: [], controlSocket: "\(dir)/control.sock"), logger: quietLogger) } throws: {
            "\($0)".contains("\(dir)/control.sock is in use")
        }
        #expect(FileManager.default.fileExists(atPath: "\(dir)/a.sock"))
        // The first daemon still serves its port (once the refused daemons' probe connections,
        // which it saw come and go, are torn down).
        var answered = false
        for _ in 0..<100 where !answered {
            let fe = VhostUserFrontEnd(socket: try UnixSocket.connect(path: "\(dir)/a.sock", nonBlocking: false))
            answered = (try? fe.callU64(.getQueueNum)) == 1
            if !answered { usleep(20_000) }
        }
        #expect(answered)
        // A stale socket file: bound, never listened on, closed.
        let stalePath = "\(dir)/stale.sock"
        _ = try UnixSocket.listen(path: stalePath)
        let stale = try Daemon(options: DaemonOptions(ports: [try PortSpec.parse("vale1:s=\(stalePath)")]), logger: quietLogger)
        _ = stale
    }

    /// Two ports (or a port and the control socket) on one path are refused before anything starts.
    @Test func oneSocketPathServesOnePort() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vn-dup-\(getpid())").path
        let a = try PortSpec.parse("vale0:a=\(dir)/x.sock"), b = try PortSpec.parse("vale0:b=\(dir)/x.sock")
        #expect { try Daemon(options: DaemonOptions(ports: [a, b]), logger: quietLogger) } throws: { "\($0)".contains("given twice") }
        #expect { try Daemon(options: DaemonOptions(ports: [a], controlSocket: "\(dir)/x.sock"), logger: quietLogger) } throws: {
            "\($0)".contains("given twice")
        }
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/x.sock"))
    }

    @Test func stopRemovesSocketsAndReturnsZero() throws {
        let d = try RunningDaemon(ports: ["vale0:a"])
        #expect(FileManager.default.fileExists(atPath: d.socket("a")))
        let dir = d.directory
        #expect(d.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/a.sock"))
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/control.sock"))
    }
}

@Suite struct InheritedConnection {
    /// `--fd N`: the daemon serves an already-connected socket and stops when it closes.
    @Test func servesAnInheritedSocketAndStopsWhenItCloses() throws {
        let (ours, theirs) = try UnixSocket.pair()
        var spec = PortSpec(switchName: "vale0", portName: "fd", socketPath: nil)
        spec.inheritedDescriptor = dup(theirs.rawValue)
        let daemon = try Daemon(options: DaemonOptions(ports: [spec]), logger: quietLogger)
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var code: Int32 = -1
        Thread { code = daemon.run(); done.signal() }.start()
        let fe = VhostUserFrontEnd(socket: ours)
        #expect(try fe.callU64(.getFeatures) == VhostNetDevice.offeredFeatures.rawValue)
        #expect(try fe.callU64(.getQueueNum) == 1)
        shutdown(ours.rawValue, Int32(SHUT_RDWR))
        #expect(done.wait(timeout: .now() + 10) == .success)
        #expect(code == 0)
    }
}
