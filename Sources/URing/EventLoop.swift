import Glibc

/// The control plane's event loop on io_uring: readiness of sockets, signalfd and eventfds
/// (one-shot polls, re-armed while the handler wants more) and timers. One thread runs it.
public final class EventLoop {
    public enum Next { case keepWatching, stop }

    public struct Token: Hashable, Sendable {
        public let rawValue: UInt64
    }

    private enum Registration {
        case readable(fd: CInt, handler: (Int32) -> Next)
        case timer(handler: () -> Void)
    }

    private let ring: IOURing
    private var registrations: [UInt64: Registration] = [:]
    private var nextToken: UInt64 = 1
    private var stopping = false

    public init(entries: UInt32 = 256) throws(URingError) {
        ring = try IOURing(entries: entries)
    }

    /// Calls `handler` with the ready events whenever `fd` is readable (or hung up),
    /// until the handler answers `.stop` or the watch is cancelled.
    @discardableResult
    public func watchReadable(_ fd: CInt, _ handler: @escaping (Int32) -> Next) -> Token {
        let token = nextToken
        nextToken += 1
        registrations[token] = .readable(fd: fd, handler: handler)
        ring.pollAdd(fd: fd, userData: token)
        return Token(rawValue: token)
    }

    /// Runs `handler` once after `nanoseconds`.
    @discardableResult
    public func after(nanoseconds: UInt64, _ handler: @escaping () -> Void) -> Token {
        let token = nextToken
        nextToken += 1
        registrations[token] = .timer(handler: handler)
        ring.timeout(nanoseconds: nanoseconds, userData: token)
        return Token(rawValue: token)
    }

    /// Stops a watch or timer; its handler is not called again.
    public func cancel(_ token: Token) {
        guard let r = registrations.removeValue(forKey: token.rawValue) else { return }
        switch r {
        case .readable: ring.pollRemove(userData: token.rawValue)
        case .timer: ring.cancel(userData: token.rawValue)
        }
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
        var ready: [(UInt64, Int32)] = []
        ring.submitAndWait(timeoutNanoseconds: timeoutNanoseconds) { ready.append(($0, $1)) }
        for (token, result) in ready {
            guard token != IOURing.internalUserData, let r = registrations[token] else { continue }
            switch r {
            case .readable(let fd, let handler):
                if result == -ECANCELED { registrations[token] = nil; continue }
                if handler(result) == .keepWatching, registrations[token] != nil {
                    ring.pollAdd(fd: fd, userData: token)
                } else {
                    registrations[token] = nil
                }
            case .timer(let handler):
                registrations[token] = nil
                if result == -ECANCELED { continue }
                handler()
            }
        }
        ring.submit()
    }
}
