import CVhostShim
import Glibc
import SystemPackage

/// A file descriptor with exactly one owner: it is closed when the owner lets go of it.
/// Everything a front-end hands us (memory fds, kick/call/err eventfds) is wrapped in one of
/// these the moment it is received, so no error path can leak it.
public final class OwnedDescriptor: @unchecked Sendable {
    public let rawValue: CInt

    public init(adopting rawValue: CInt) {
        self.rawValue = rawValue
    }

    public var descriptor: FileDescriptor { FileDescriptor(rawValue: rawValue) }

    deinit {
        _ = Glibc.close(rawValue)
    }
}

/// Thin wrappers over the syscalls the back-end uses, in swift-system's style: typed `Errno`,
/// EINTR retried where that is the only sensible answer.
public enum Posix {
    /// A libc call's result: -1 with errno set on failure.
    @inline(__always)
    static func check(_ result: CInt) throws(Errno) -> CInt {
        if result < 0 { throw Errno(rawValue: errno) }
        return result
    }

    /// A shim's result (CVhostShim, the TAP and netmap shims): -errno on failure.
    @inline(__always)
    public static func checkShim(_ result: CInt) throws(Errno) -> CInt {
        if result < 0 { throw Errno(rawValue: -result) }
        return result
    }

    /// Raises the soft open-file limit toward `wanted` (never above the hard limit, never down).
    /// Returns the soft and hard limits in force afterwards.
    public static func raiseOpenFileLimit(to wanted: UInt64) -> (soft: UInt64, hard: UInt64) {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return (0, 0) }
        let target = min(wanted, UInt64(limit.rlim_max))
        if UInt64(limit.rlim_cur) < target {
            var raised = limit
            raised.rlim_cur = rlim_t(target)
            if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return (UInt64(limit.rlim_cur), UInt64(limit.rlim_max))
    }

    public static func setNonBlocking(_ fd: CInt) throws(Errno) {
        let flags = try check(fcntl(fd, F_GETFL))
        _ = try check(fcntl(fd, F_SETFL, flags | O_NONBLOCK))
    }

    /// `fstat` size of a descriptor (the bytes a mapping of it may touch without SIGBUS).
    /// Creates `path` and its missing parents (mkdir -p), each with `mode`.
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(Errno) {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component + "/"
            if mkdir(prefix, mode) != 0 && errno != EEXIST { throw Errno(rawValue: errno) }
        }
    }

    public static func fileSize(_ fd: CInt) throws(Errno) -> UInt64 {
        var st = stat()
        _ = try check(fstat(fd, &st))
        return UInt64(max(0, st.st_size))
    }

    public static func fileType(_ fd: CInt) throws(Errno) -> mode_t {
        var st = stat()
        _ = try check(fstat(fd, &st))
        return st.st_mode & S_IFMT
    }

    /// Blocks the given signals in the calling thread (and the threads it starts later).
    public static func blockSignals(_ signals: [CInt]) {
        let rc = signals.withUnsafeBufferPointer { cvh_block_signals($0.baseAddress, CInt($0.count)) }
        assert(rc == 0, "pthread_sigmask: \(Errno(rawValue: -rc))")
    }

    public static func setThreadName(_ name: String) {
        _ = cvh_set_thread_name(String(name.prefix(15)))
    }

    public static func pinThread(toCPU cpu: Int) -> Bool {
        cvh_pin_thread(CInt(cpu)) == 0
    }
}

public enum EventFD {
    /// A non-blocking, close-on-exec eventfd.
    public static func make(initialValue: UInt32 = 0) throws(Errno) -> OwnedDescriptor {
        OwnedDescriptor(adopting: try Posix.checkShim(cvh_eventfd(initialValue, CVH_EFD_CLOEXEC | CVH_EFD_NONBLOCK)))
    }

    /// Adds one to the counter. A full counter (EAGAIN) already means "signalled". Every
    /// eventfd we signal is ours or was checked to be an eventfd when a front-end handed it
    /// over (and is kept open while in use), so EBADF or EINVAL is a bug here: it stops debug
    /// builds, and release builds carry on (a lost wake-up, not a crash in the data path).
    @inline(__always)
    public static func signal(_ fd: CInt) {
        var one: UInt64 = 1
        let written = withUnsafeBytes(of: &one) { Glibc.write(fd, $0.baseAddress, 8) }
        assert(written == 8 || errno == EAGAIN, "EventFD.signal(\(fd)): \(Errno(rawValue: errno)) (a closed or foreign descriptor)")
    }

    /// Reads and clears the counter; returns 0 when it was not signalled (or is not an eventfd).
    @discardableResult
    public static func drain(_ fd: CInt) -> UInt64 {
        var value: UInt64 = 0
        let n = withUnsafeMutableBytes(of: &value) { Glibc.read(fd, $0.baseAddress, 8) }
        return n == 8 ? value : 0
    }
}

public enum MemFD {
    public static func make(name: String, size: Int) throws(Errno) -> OwnedDescriptor {
        let fd = OwnedDescriptor(adopting: try Posix.checkShim(cvh_memfd_create(name, CVH_MFD_CLOEXEC)))
        _ = try Posix.check(ftruncate(fd.rawValue, off_t(size)))
        return fd
    }

    /// A memfd whose size is then sealed (F_SEAL_SHRINK|F_SEAL_GROW): whoever else it is shared
    /// with cannot truncate it under a mapping, which would fault.
    public static func makeSealed(name: String, size: Int) throws(Errno) -> OwnedDescriptor {
        let fd = OwnedDescriptor(adopting: try Posix.checkShim(cvh_memfd_create(name, CVH_MFD_CLOEXEC | CVH_MFD_ALLOW_SEALING)))
        _ = try Posix.check(ftruncate(fd.rawValue, off_t(size)))
        _ = try Posix.checkShim(cvh_seal_against_shrinking(fd.rawValue))
        return fd
    }
}

/// A shared mapping of a descriptor, unmapped when released.
public final class MemoryMapping: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let length: Int

    public init(descriptor fd: CInt, length: Int, offset: off_t = 0, populate: Bool = false) throws(Errno) {
        let flags = MAP_SHARED | (populate ? MAP_POPULATE : 0)
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, flags, fd, offset)
        if p == MAP_FAILED || p == nil { throw Errno(rawValue: errno) }
        self.base = p!
        self.length = length
    }

    /// Private anonymous memory (packet buffers of a host port).
    public init(anonymousLength length: Int) throws(Errno) {
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if p == MAP_FAILED || p == nil { throw Errno(rawValue: errno) }
        self.base = p!
        self.length = length
    }

    deinit {
        munmap(base, length)
    }
}
