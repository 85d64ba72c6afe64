internal import CURing
import Glibc

/// An io_uring call failed with this errno (the module stays free of swift-system: its C
/// module declares the kernel's io_uring structs, which clash with liburing's copies).
public struct URingError: Error, CustomStringConvertible {
    public let errno: Int32
    public var description: String { "io_uring: \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// An io_uring instance (liburing). Owned by one thread; not thread-safe.
public final class IOURing {
    private let ring: UnsafeMutablePointer<io_uring>
    private var cqeBuffer: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    private let cqeBatch = 64

    public init(entries: UInt32 = 256) throws(URingError) {
        ring = .allocate(capacity: 1)
        ring.initialize(to: io_uring())
        let rc = io_uring_queue_init(entries, ring, 0)
        if rc < 0 {
            ring.deallocate()
            throw URingError(errno: -rc)
        }
        cqeBuffer = .allocate(capacity: cqeBatch)
        cqeBuffer.initialize(repeating: nil, count: cqeBatch)
    }

    deinit {
        io_uring_queue_exit(ring)
        ring.deallocate()
        cqeBuffer.deallocate()
    }

    /// A free submission entry; submits pending ones first if the queue is full.
    private func sqe() -> UnsafeMutablePointer<io_uring_sqe> {
        if let s = io_uring_get_sqe(ring) { return s }
        _ = io_uring_submit(ring)
        return io_uring_get_sqe(ring)!
    }

    /// One-shot poll: completes once with the ready events (res) when `fd` is ready.
    public func pollAdd(fd: CInt, events: Int16 = 1 /* POLLIN */, userData: UInt64) {
        let s = sqe()
        io_uring_prep_poll_add(s, fd, UInt32(UInt16(bitPattern: events)))
        io_uring_sqe_set_data64(s, userData)
    }

    /// Removes an armed poll identified by its user data (the removed poll completes with -ECANCELED).
    public func pollRemove(userData: UInt64) {
        let s = sqe()
        io_uring_prep_poll_remove(s, userData)
        io_uring_sqe_set_data64(s, IOURing.internalUserData)
    }

    /// A timer that completes (res -ETIME) after `nanoseconds`.
    public func timeout(nanoseconds: UInt64, userData: UInt64) {
        var ts = __kernel_timespec(tv_sec: Int64(nanoseconds / 1_000_000_000), tv_nsec: Int64(nanoseconds % 1_000_000_000))
        let s = sqe()
        withUnsafeMutablePointer(to: &ts) { tsp in
            io_uring_prep_timeout(s, tsp, 0, 0)
            io_uring_sqe_set_data64(s, userData)
            // The kernel copies the timespec at submission: submit while it is alive.
            _ = io_uring_submit(ring)
        }
    }

    public func cancel(userData: UInt64) {
        let s = sqe()
        io_uring_prep_cancel64(s, userData, 0)
        io_uring_sqe_set_data64(s, IOURing.internalUserData)
    }

    /// Completions of our own bookkeeping requests (poll removal, cancel) carry this tag.
    public static let internalUserData: UInt64 = .max

    public func submit() {
        _ = io_uring_submit(ring)
    }

    /// Submits what is queued, waits for at least one completion (or the timeout), then hands
    /// every available completion to `body` as (userData, result).
    public func submitAndWait(timeoutNanoseconds: UInt64? = nil, _ body: (UInt64, Int32) -> Void) {
        if let t = timeoutNanoseconds {
            var ts = __kernel_timespec(tv_sec: Int64(t / 1_000_000_000), tv_nsec: Int64(t % 1_000_000_000))
            var cqe: UnsafeMutablePointer<io_uring_cqe>? = nil
            _ = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, nil)
        } else {
            _ = io_uring_submit_and_wait(ring, 1)
        }
        reap(body)
    }

    /// Hands every available completion to `body` without waiting.
    public func reap(_ body: (UInt64, Int32) -> Void) {
        while true {
            let n = Int(io_uring_peek_batch_cqe(ring, cqeBuffer, UInt32(cqeBatch)))
            if n == 0 { return }
            for i in 0..<n {
                let c = cqeBuffer[i]!
                body(c.pointee.user_data, c.pointee.res)
            }
            io_uring_cq_advance(ring, UInt32(n))
        }
    }
}
