internal import CURing
internal import CVhostShim
import Glibc
import SystemPackage

/// An io_uring instance (liburing). Owned by one thread; not thread-safe.
public final class IOURing {
    private let ring: UnsafeMutablePointer<io_uring>
    private var cqeBuffer: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    private let cqeBatch = 64

    public init(entries: UInt32 = 256) throws(Errno) {
        ring = .allocate(capacity: 1)
        ring.initialize(to: io_uring())
        let rc = io_uring_queue_init(entries, ring, 0)
        if rc < 0 {
            ring.deallocate()
            throw Errno(rawValue: -rc)
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
    /// every available completion to `body`.
    public func submitAndWait(timeoutNanoseconds: UInt64? = nil, _ body: (Completion) -> Void) {
        if let t = timeoutNanoseconds {
            var ts = __kernel_timespec(tv_sec: Int64(t / 1_000_000_000), tv_nsec: Int64(t % 1_000_000_000))
            var cqe: UnsafeMutablePointer<io_uring_cqe>? = nil
            _ = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, nil)
        } else {
            _ = io_uring_submit_and_wait(ring, 1)
        }
        reap(body)
    }

    /// Hands every available completion to `body` without a system call.
    @inline(__always)
    public func reap(_ body: (Completion) -> Void) {
        while true {
            let n = Int(io_uring_peek_batch_cqe(ring, cqeBuffer, UInt32(cqeBatch)))
            if n == 0 { return }
            for i in 0..<n {
                let c = cqeBuffer[i]!
                body(Completion(userData: c.pointee.user_data, result: c.pointee.res, flags: c.pointee.flags))
            }
            io_uring_cq_advance(ring, UInt32(n))
        }
    }

    /// Completions waiting to be reaped (no system call).
    public var readyCount: Int { Int(io_uring_cq_ready(ring)) }

    /// Submissions queued but not yet handed to the kernel.
    public var pendingSubmissions: Int { Int(io_uring_sq_ready(ring)) }

    // MARK: Data-path operations

    /// Registers `buffers` as fixed buffers (pinned once; reads and writes then skip the
    /// per-call page mapping). Index i of the array is `bufferIndex` i.
    public func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws(Errno) {
        var iovecs = buffers.map { iovec(iov_base: $0.baseAddress, iov_len: $0.count) }
        let rc = io_uring_register_buffers(ring, &iovecs, UInt32(iovecs.count))
        if rc < 0 { throw Errno(rawValue: -rc) }
    }

    /// Registers `descriptors` as fixed files (no file reference counting per operation);
    /// operations then name them by index with `fixedFile: true`.
    public func registerFiles(_ descriptors: [CInt]) throws(Errno) {
        let rc = io_uring_register_files(ring, descriptors, UInt32(descriptors.count))
        if rc < 0 { throw Errno(rawValue: -rc) }
    }

    /// Signals `eventFD` whenever a completion is posted, so another ring (or poll) can sleep on it.
    public func registerEventFD(_ eventFD: CInt) throws(Errno) {
        let rc = io_uring_register_eventfd(ring, eventFD)
        if rc < 0 { throw Errno(rawValue: -rc) }
    }

    /// Reads into fixed buffer `bufferIndex` (`fd` is a registered file index if `fixedFile`).
    @inline(__always)
    public func readFixed(fd: CInt, fixedFile: Bool, into buffer: UnsafeMutableRawPointer, length: Int, bufferIndex: Int, userData: UInt64) {
        let s = sqe()
        io_uring_prep_read_fixed(s, fd, buffer, UInt32(length), 0, Int32(bufferIndex))
        tag(s, fixedFile: fixedFile, userData: userData)
    }

    /// Writes from fixed buffer `bufferIndex`.
    @inline(__always)
    public func writeFixed(fd: CInt, fixedFile: Bool, from buffer: UnsafeRawPointer, length: Int, bufferIndex: Int, userData: UInt64) {
        let s = sqe()
        io_uring_prep_write_fixed(s, fd, buffer, UInt32(length), 0, Int32(bufferIndex))
        tag(s, fixedFile: fixedFile, userData: userData)
    }

    @inline(__always)
    private func tag(_ s: UnsafeMutablePointer<io_uring_sqe>, fixedFile: Bool, userData: UInt64) {
        if fixedFile { s.pointee.flags |= CUR_SQE_FIXED_FILE }
        io_uring_sqe_set_data64(s, userData)
    }

    /// A plain read (eventfds, signalfd, short control reads) into memory that stays valid
    /// until the completion.
    public func read(fd: CInt, into buffer: UnsafeMutableRawPointer, length: Int, userData: UInt64) {
        let s = sqe()
        io_uring_prep_read(s, fd, buffer, UInt32(length), 0)
        io_uring_sqe_set_data64(s, userData)
    }

    // MARK: Control-plane operations

    /// Multishot accept: one completion per accepted connection (the new descriptor, close-on-exec
    /// and non-blocking) while `Completion.more` is set; re-arm when it is not.
    public func acceptMultishot(fd: CInt, userData: UInt64) {
        let s = sqe()
        cur_prep_multishot_accept(s, fd)
        io_uring_sqe_set_data64(s, userData)
    }

    /// recvmsg into `slot`'s buffer with SCM_RIGHTS room; see `ReceiveSlot`.
    public func receiveMessage(fd: CInt, slot: ReceiveSlot, length: Int, userData: UInt64) {
        precondition(length <= slot.capacity)
        let s = sqe()
        cur_prep_recvmsg(s, fd, slot.raw, slot.buffer, length)
        io_uring_sqe_set_data64(s, userData)
    }
}

/// One completion: the request's user data, its result (bytes, a descriptor, or -errno), flags.
public struct Completion {
    public let userData: UInt64
    public let result: Int32
    public let flags: UInt32
    /// A multishot request stays armed and will complete again.
    public var more: Bool { flags & CUR_CQE_F_MORE != 0 }
}

/// The memory a recvmsg through io_uring writes into: data buffer, msghdr, iovec and control
/// buffer, kept in place until the completion arrives.
public final class ReceiveSlot {
    let raw: UnsafeMutablePointer<cur_recv_slot>
    let buffer: UnsafeMutableRawPointer
    public let capacity: Int

    public init(capacity: Int) {
        self.capacity = capacity
        raw = .allocate(capacity: 1)
        raw.initialize(to: cur_recv_slot())
        buffer = .allocate(byteCount: capacity, alignment: 8)
    }

    deinit {
        raw.deallocate()
        buffer.deallocate()
    }

    public struct Descriptors {
        /// Descriptors received (close-on-exec), now owned by the caller.
        public var received: [CInt]
        /// Descriptors beyond the limit, already closed.
        public var dropped: Int
        /// The kernel cut the control data (more descriptors than the slot has room for).
        public var truncated: Bool
    }

    /// The data of a completed receive of `count` bytes.
    public func bytes(count: Int) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: buffer, count: count) }

    /// Takes the descriptors of the completed receive (call once per completion).
    public func takeDescriptors(max: Int) -> Descriptors {
        var fds = [CInt](repeating: -1, count: max)
        var dropped: CInt = 0
        var truncated: CInt = 0
        let n = fds.withUnsafeMutableBufferPointer { cvh_take_rights(&raw.pointee.msg, $0.baseAddress, CInt(max), &dropped, &truncated) }
        return Descriptors(received: Array(fds[0..<Int(n)]), dropped: Int(dropped), truncated: truncated != 0)
    }
}
