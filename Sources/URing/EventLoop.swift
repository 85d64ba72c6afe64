import Glibc
import SystemPackage

/// The control plane's event loop on io_uring. Sockets are accepted with multishot accept,
/// vhost-user messages and their descriptors arrive through recvmsg completions, signalfd and
/// eventfds are read by io_uring reads, and timers are io_uring timeouts: the thread makes one
/// system call per wake-up (`io_uring_submit_and_wait`) and none while idle.
public final class EventLoop {
    public enum Next { case keepWatching, stop }

    /// What a message handler wants next: another receive of up to this many bytes, or nothing.
    public enum ReceiveNext { case receive(Int), stop }

    public struct Token: Hashable, Sendable {
        public let rawValue: UInt64
    }

    /// The outcome of one recvmsg.
    public struct Received {
        /// The data (valid during the handler call); empty at end of stream.
        public let bytes: UnsafeRawBufferPointer
        /// Descriptors that came with the data (close-on-exec); the handler owns them.
        public let descriptors: [CInt]
        /// More descriptors arrived than the receiver allows (the surplus was closed), or the
        /// kernel cut the control data.
        public let descriptorsTruncated: Bool
        /// A receive error, or nil.
        public let error: Errno?
        public var endOfStream: Bool { error == nil && bytes.isEmpty }
    }

    private enum Registration {
        case poll(fd: CInt, events: Int16, handler: (Int32) -> Next)
        case accept(fd: CInt, handler: (Result<CInt, Errno>) -> Next)
        case messages(fd: CInt, slot: ReceiveSlot, maxDescriptors: Int, handler: (Received) -> ReceiveNext)
        case reads(fd: CInt, buffer: UnsafeMutableRawBufferPointer, handler: (UnsafeRawBufferPointer, Errno?) -> Next)
        case timer(handler: () -> Void)
    }

    private let ring: IOURing
    private var registrations: [UInt64: Registration] = [:]
    /// Cancelled requests whose memory (recvmsg slots, read buffers) the kernel may still write:
    /// kept until their last completion arrives.
    private var retiring: [UInt64: Registration] = [:]
    private var nextToken: UInt64 = 1
    private var stopping = false
    /// The request being dispatched when it has no operation in the kernel (a one-shot that
    /// completed): cancelling it from its own handler needs no kernel cancel.
    private var completedToken: UInt64?

    public init(entries: UInt32 = 256) throws(Errno) {
        ring = try IOURing(entries: entries)
    }

    deinit {
        cancelAll()
    }

    /// Cancels every watch, receive, read and timer, and waits (bounded) until the kernel gave
    /// back every buffer it may still write. Handlers are released: what they captured (even
    /// this loop, through an object they hold) goes with them.
    public func cancelAll() {
        for token in Array(registrations.keys) { cancel(Token(rawValue: token)) }
        // Wait (bounded) for the kernel to give back every buffer it may still write.
        var rounds = 0
        while !retiring.isEmpty && rounds < 50 {
            rounds += 1
            ring.submitAndWait(timeoutNanoseconds: 10_000_000) { c in
                guard let r = retiring[c.userData] else { return }
                if case .accept = r, c.result >= 0 { close(c.result) }
                if !c.more { release(retiring.removeValue(forKey: c.userData)) }
            }
        }
        for r in retiring.values { release(r) }
        retiring.removeAll()
    }

    private func release(_ r: Registration?) {
        if case .reads(_, let buffer, _)? = r { buffer.deallocate() }
    }

    private func register(_ r: Registration) -> UInt64 {
        let token = nextToken
        nextToken += 1
        registrations[token] = r
        return token
    }

    /// Calls `handler` with the ready events whenever `fd` is readable (or hung up),
    /// until the handler answers `.stop` or the watch is cancelled.
    @discardableResult
    public func watchReadable(_ fd: CInt, _ handler: @escaping (Int32) -> Next) -> Token {
        watch(fd, events: Int16(POLLIN), handler)
    }

    /// Calls `handler` whenever `fd` can be written to (or hung up, or failed), until the handler
    /// answers `.stop` or the watch is cancelled.
    @discardableResult
    public func watchWritable(_ fd: CInt, _ handler: @escaping (Int32) -> Next) -> Token {
        watch(fd, events: Int16(POLLOUT), handler)
    }

    private func watch(_ fd: CInt, events: Int16, _ handler: @escaping (Int32) -> Next) -> Token {
        let token = register(.poll(fd: fd, events: events, handler: handler))
        ring.pollAdd(fd: fd, events: events, userData: token)
        return Token(rawValue: token)
    }

    /// Accepts connections on listening socket `fd` (multishot accept): `handler` gets each new
    /// descriptor (close-on-exec, non-blocking; the handler owns it) or the error.
    @discardableResult
    public func acceptConnections(on fd: CInt, _ handler: @escaping (Result<CInt, Errno>) -> Next) -> Token {
        let token = register(.accept(fd: fd, handler: handler))
        ring.acceptMultishot(fd: fd, userData: token)
        return Token(rawValue: token)
    }

    /// Receives from stream socket `fd` with recvmsg, `firstLength` bytes at most first, then as
    /// many as the handler asks for each time; at most `maxDescriptors` descriptors per receive.
    @discardableResult
    public func receiveMessages(on fd: CInt, capacity: Int, maxDescriptors: Int, firstLength: Int,
                                _ handler: @escaping (Received) -> ReceiveNext) -> Token {
        let slot = ReceiveSlot(capacity: capacity)
        let token = register(.messages(fd: fd, slot: slot, maxDescriptors: maxDescriptors, handler: handler))
        ring.receiveMessage(fd: fd, slot: slot, length: min(firstLength, capacity), userData: token)
        return Token(rawValue: token)
    }

    /// Reads `length` bytes at a time from `fd` (a signalfd, an eventfd, a short request) while
    /// the handler answers `.keepWatching`. The handler gets the bytes read, or an errno.
    @discardableResult
    public func readRepeatedly(_ fd: CInt, length: Int, _ handler: @escaping (UnsafeRawBufferPointer, Errno?) -> Next) -> Token {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 8)
        let token = register(.reads(fd: fd, buffer: buffer, handler: handler))
        ring.read(fd: fd, into: buffer.baseAddress!, length: length, userData: token)
        return Token(rawValue: token)
    }

    /// Runs `handler` once after `nanoseconds`.
    @discardableResult
    public func after(nanoseconds: UInt64, _ handler: @escaping () -> Void) -> Token {
        let token = register(.timer(handler: handler))
        ring.timeout(nanoseconds: nanoseconds, userData: token)
        return Token(rawValue: token)
    }

    /// Stops a watch, receive, read or timer; its handler is not called again. Memory the kernel
    /// may still write is kept until the request's last completion.
    public func cancel(_ token: Token) {
        guard let r = registrations.removeValue(forKey: token.rawValue) else { return }
        if token.rawValue == completedToken {
            release(r)
            return
        }
        switch r {
        case .poll: ring.pollRemove(userData: token.rawValue)
        default: ring.cancel(userData: token.rawValue)
        }
        retiring[token.rawValue] = r
        ring.submit()
    }

    public func stop() { stopping = true }

    /// Runs until `stop()` is called from a handler.
    public func run() {
        while !stopping {
            runOnce()
        }
    }

    /// Waits for at least one event (or the timeout) and dispatches what is ready.
    public func runOnce(timeoutNanoseconds: UInt64? = nil) {
        var ready: [Completion] = []
        ring.submitAndWait(timeoutNanoseconds: timeoutNanoseconds) { ready.append($0) }
        for c in ready where c.userData != IOURing.internalUserData {
            if let r = retiring[c.userData] {
                // A connection the kernel accepted before the cancel took effect: nobody will
                // serve it, so it is closed rather than leaked (its client sees the close).
                if case .accept = r, c.result >= 0 { close(c.result) }
                if !c.more {
                    retiring[c.userData] = nil
                    release(r)
                }
                continue
            }
            guard let r = registrations[c.userData] else { continue }
            dispatch(r, c)
        }
        ring.submit()
    }

    private func finish(_ token: UInt64) {
        release(registrations.removeValue(forKey: token))
    }

    private func dispatch(_ r: Registration, _ c: Completion) {
        let token = c.userData
        completedToken = c.more ? nil : token
        defer { completedToken = nil }
        switch r {
        case .poll(let fd, let events, let handler):
            if c.result == -ECANCELED { finish(token); return }
            if handler(c.result) == .keepWatching, registrations[token] != nil {
                ring.pollAdd(fd: fd, events: events, userData: token)
            } else {
                finish(token)
            }
        case .accept(let fd, let handler):
            let next = handler(c.result >= 0 ? .success(c.result) : .failure(Errno(rawValue: -c.result)))
            if next == .stop || registrations[token] == nil {
                if c.more { cancel(Token(rawValue: token)) } else { finish(token) }
            } else if !c.more {
                // The kernel ended the multishot (an error, or overflow): arm it again.
                ring.acceptMultishot(fd: fd, userData: token)
            }
        case .messages(let fd, let slot, let maxDescriptors, let handler):
            let received: Received
            if c.result < 0 {
                received = Received(bytes: UnsafeRawBufferPointer(start: nil, count: 0), descriptors: [],
                                    descriptorsTruncated: false, error: Errno(rawValue: -c.result))
            } else {
                let fds = slot.takeDescriptors(max: maxDescriptors)
                received = Received(bytes: slot.bytes(count: Int(c.result)), descriptors: fds.received,
                                    descriptorsTruncated: fds.truncated || fds.dropped > 0, error: nil)
            }
            switch handler(received) {
            case .receive(let length) where registrations[token] != nil && !received.endOfStream && received.error == nil:
                ring.receiveMessage(fd: fd, slot: slot, length: min(length, slot.capacity), userData: token)
            default:
                finish(token)
            }
        case .reads(let fd, let buffer, let handler):
            let next: Next
            if c.result < 0 {
                if c.result == -ECANCELED { finish(token); return }
                next = handler(UnsafeRawBufferPointer(start: buffer.baseAddress, count: 0), Errno(rawValue: -c.result))
            } else {
                next = handler(UnsafeRawBufferPointer(start: buffer.baseAddress, count: Int(c.result)), nil)
            }
            if next == .keepWatching, registrations[token] != nil, c.result > 0 {
                ring.read(fd: fd, into: buffer.baseAddress!, length: buffer.count, userData: token)
            } else {
                finish(token)
            }
        case .timer(let handler):
            finish(token)
            if c.result == -ECANCELED { return }
            handler()
        }
    }
}
