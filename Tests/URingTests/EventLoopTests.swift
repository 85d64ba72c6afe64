import Glibc
import Testing
import URing
import VhostSystem

/// The control-plane operations against real descriptors: what the kernel delivers through
/// io_uring is what the daemon sees.
@Suite struct EventLoopOperations {
    @Test func recvmsgDeliversBytesAndDescriptorsInRequestedPieces() throws {
        let loop = try EventLoop()
        let (a, b) = try UnixSocket.pair()
        let passed = try EventFD.make(initialValue: 7)
        let payload: [UInt8] = Array(0..<20)
        try payload.withUnsafeBytes { try UnixSocket.send(a.rawValue, $0, descriptors: [passed.rawValue]) }

        var pieces: [[UInt8]] = []
        var descriptors: [CInt] = []
        var ended = false
        loop.receiveMessages(on: b.rawValue, capacity: 64, maxDescriptors: 8, firstLength: 12) { r in
            if r.endOfStream { ended = true; return .stop }
            pieces.append(Array(r.bytes))
            descriptors += r.descriptors
            return .receive(8)
        }
        while pieces.count < 2 { loop.runOnce() }
        #expect(pieces == [Array(payload[0..<12]), Array(payload[12..<20])])
        #expect(descriptors.count == 1)
        // The received descriptor is a working copy of the eventfd (counter 7).
        #expect(EventFD.drain(descriptors[0]) == 7)
        close(descriptors[0])
        _ = consume a
        while !ended { loop.runOnce() }
    }

    @Test func surplusDescriptorsAreClosedAndReported() throws {
        let loop = try EventLoop()
        let (a, b) = try UnixSocket.pair()
        let fds = try (0..<3).map { _ in try EventFD.make() }
        try [UInt8](repeating: 1, count: 4).withUnsafeBytes { try UnixSocket.send(a.rawValue, $0, descriptors: fds.map(\.rawValue)) }
        var result: EventLoop.Received?
        var kept: [CInt] = []
        loop.receiveMessages(on: b.rawValue, capacity: 16, maxDescriptors: 1, firstLength: 4) { r in
            result = r
            kept = r.descriptors
            return .stop
        }
        while result == nil { loop.runOnce() }
        #expect(result?.descriptorsTruncated == true)
        #expect(kept.count == 1)
        kept.forEach { close($0) }
    }

    @Test func multishotAcceptTakesEveryConnection() throws {
        let loop = try EventLoop()
        let path = "/tmp/vn-uring-accept-\(getpid()).sock"
        let listener = try UnixSocket.listen(path: path)
        defer { unlink(path) }
        var accepted: [OwnedDescriptor] = []
        loop.acceptConnections(on: listener.rawValue) { result in
            if case .success(let fd) = result { accepted.append(OwnedDescriptor(adopting: fd)) }
            return .keepWatching
        }
        let clients = try (0..<5).map { _ in try UnixSocket.connect(path: path) }
        while accepted.count < 5 { loop.runOnce() }
        #expect(accepted.count == clients.count)
        // Accepted sockets are non-blocking (the daemon relies on it for replies).
        #expect(accepted.allSatisfy { fcntl($0.rawValue, F_GETFL) & O_NONBLOCK != 0 })
    }

    @Test func readsEventFDUntilStoppedAndTimersFireInOrder() throws {
        let loop = try EventLoop()
        let efd = try EventFD.make()
        var values: [UInt64] = []
        loop.readRepeatedly(efd.rawValue, length: 8) { bytes, error in
            #expect(error == nil)
            values.append(bytes.loadUnaligned(as: UInt64.self))
            return values.count < 2 ? .keepWatching : .stop
        }
        var order: [Int] = []
        loop.after(nanoseconds: 2_000_000) { order.append(2) }
        loop.after(nanoseconds: 1_000_000) { order.append(1) }
        EventFD.signal(efd.rawValue)
        while values.count < 1 { loop.runOnce() }
        var five: UInt64 = 5
        #expect(write(efd.rawValue, &five, 8) == 8)
        while values.count < 2 || order.count < 2 { loop.runOnce() }
        #expect(values == [1, 5])
        #expect(order == [1, 2])
    }

    @Test func cancelledReceiveNeverCallsItsHandler() throws {
        let loop = try EventLoop()
        let (a, b) = try UnixSocket.pair()
        var calls = 0
        let token = loop.receiveMessages(on: b.rawValue, capacity: 16, maxDescriptors: 0, firstLength: 16) { _ in
            calls += 1
            return .stop
        }
        loop.runOnce(timeoutNanoseconds: 1_000_000)
        loop.cancel(token)
        try [UInt8](repeating: 9, count: 4).withUnsafeBytes { try UnixSocket.send(a.rawValue, $0) }
        loop.runOnce(timeoutNanoseconds: 5_000_000)
        loop.runOnce(timeoutNanoseconds: 5_000_000)
        #expect(calls == 0)
    }
}
