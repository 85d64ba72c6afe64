import CVhostShim
import Glibc
import SystemPackage

/// AF_UNIX stream sockets as vhost-user uses them: listen/accept/connect, and messages that
/// carry descriptors (SCM_RIGHTS).
public enum UnixSocket {
    public static func listen(path: String, backlog: CInt = 16, mode: mode_t? = nil) throws(Errno) -> OwnedDescriptor {
        let fd = OwnedDescriptor(adopting: try Posix.check(socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0)))
        var addr = sockaddr_un()
        let len = try Posix.checkShim(cvh_sockaddr_un(&addr, path))
        // A stale socket file from an earlier run would make bind fail; only a socket nobody
        // listens on is removed. One that answers a connect belongs to a live process: taking
        // it over would leave that process unreachable, so the caller is told (EADDRINUSE).
        var st = stat()
        if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK {
            if isListening(path) { throw .addressInUse }
            unlink(path)
        }
        _ = try Posix.check(withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd.rawValue, $0, socklen_t(len)) }
        })
        if let mode { chmod(path, mode) }
        _ = try Posix.check(Glibc.listen(fd.rawValue, backlog))
        return fd
    }

    /// Whether a process listens on the socket at `path`.
    public static func isListening(_ path: String) -> Bool { probe(path) != nil }

    /// Probes the socket at `path`: nil when nobody listens on it (stale or absent, or its
    /// listener's process has exited), else the
    /// listener's process id when the kernel tells it (SO_PEERCRED; not while its backlog is full).
    /// The probe never blocks: a listener whose backlog is full (EAGAIN) is still a listener;
    /// only ECONNREFUSED and the like mean stale.
    public static func probe(_ path: String) -> Listener? {
        guard let fd = try? Posix.check(socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0)) else {
            return nil
        }
        let probe = OwnedDescriptor(adopting: fd)
        var addr = sockaddr_un()
        guard let len = try? Posix.checkShim(cvh_sockaddr_un(&addr, path)) else { return nil }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(probe.rawValue, $0, socklen_t(len)) }
        }
        if rc == 0 {
            let pid = cvh_peer_pid(probe.rawValue)
            // A process killed with SIGKILL leaves its listener answering for a moment: its
            // io_uring (a multishot accept) holds the socket until the kernel tears the ring
            // down. The listener's process is gone, so the socket is stale.
            if pid > 0 && kill(pid, 0) == -1 && errno == ESRCH { return nil }
            return Listener(processID: pid > 0 ? pid : nil)
        }
        return errno == EAGAIN || errno == EINPROGRESS ? Listener(processID: nil) : nil
    }

    /// A process listening on a socket path (or holding a device open).
    public struct Listener: Sendable, Equatable {
        public var processID: pid_t?

        /// "process 1234 (vhost-netmap)", or "another process" when the id is unknown.
        public var owner: String {
            guard let pid = processID else { return "another process" }
            return "process \(pid)" + (Self.commandName(of: pid).map { " (\($0))" } ?? "")
        }

        /// The process's command name from /proc, or nil.
        static func commandName(of pid: pid_t) -> String? {
            let name = readSmallFile("/proc/\(pid)/comm")?.split(separator: "\n").first.map(String.init)
            return name?.isEmpty == false ? name : nil
        }
    }

    /// A non-blocking accepted connection, or nil when none is pending.
    public static func accept(_ listener: CInt) throws(Errno) -> OwnedDescriptor? {
        let fd = cvh_accept_nonblocking(listener)
        if fd < 0 {
            if [EAGAIN, EWOULDBLOCK, EINTR, ECONNABORTED].contains(-fd) { return nil }
            throw Errno(rawValue: -fd)
        }
        return OwnedDescriptor(adopting: fd)
    }

    /// Connects (blocking connect on a local socket completes at once), then makes it non-blocking.
    public static func connect(path: String, nonBlocking: Bool = true) throws(Errno) -> OwnedDescriptor {
        let fd = OwnedDescriptor(adopting: try Posix.check(socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)))
        var addr = sockaddr_un()
        let len = try Posix.checkShim(cvh_sockaddr_un(&addr, path))
        var rc: CInt
        repeat {
            rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd.rawValue, $0, socklen_t(len)) }
            }
        } while rc < 0 && errno == EINTR
        _ = try Posix.check(rc)
        if nonBlocking { try Posix.setNonBlocking(fd.rawValue) }
        return fd
    }

    public static func pair() throws(Errno) -> (OwnedDescriptor, OwnedDescriptor) {
        var fds: [CInt] = [-1, -1]
        _ = try Posix.check(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &fds))
        return (OwnedDescriptor(adopting: fds[0]), OwnedDescriptor(adopting: fds[1]))
    }

    public struct Received {
        public var byteCount: Int
        public var descriptors: [OwnedDescriptor]
        /// Descriptors beyond what we accept per read; already closed.
        public var droppedDescriptors: Int
        public var controlTruncated: Bool
    }

    /// One non-blocking recvmsg. Returns nil on EAGAIN; byteCount 0 means the peer closed.
    public static func receive(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, maxDescriptors: Int = 8) throws(Errno) -> Received? {
        var fds = [CInt](repeating: -1, count: 8)
        var nfds: CInt = 0
        var dropped: CInt = 0
        var truncated: CInt = 0
        let limit = CInt(min(maxDescriptors, 8))
        let n = fds.withUnsafeMutableBufferPointer {
            cvh_recv_with_fds(fd, buffer.baseAddress, buffer.count, $0.baseAddress, limit, &nfds, &dropped, &truncated)
        }
        if n < 0 {
            if n == -Int(EAGAIN) || n == -Int(EWOULDBLOCK) { return nil }
            throw Errno(rawValue: CInt(-n))
        }
        let owned = (0..<Int(nfds)).map { OwnedDescriptor(adopting: fds[$0]) }
        return Received(byteCount: n, descriptors: owned, droppedDescriptors: Int(dropped), controlTruncated: truncated != 0)
    }

    /// Sends all of `bytes` (the first chunk carrying `descriptors`); local sockets rarely split.
    public static func send(_ fd: CInt, _ bytes: UnsafeRawBufferPointer, descriptors: [CInt] = []) throws(Errno) {
        var offset = 0
        var first = true
        var stalls = 0
        while offset < bytes.count {
            let n = descriptors.withUnsafeBufferPointer { fdsBuf in
                cvh_send_with_fds(fd, bytes.baseAddress! + offset, bytes.count - offset,
                                  first ? fdsBuf.baseAddress : nil, first ? CInt(fdsBuf.count) : 0)
            }
            if n < 0 {
                // A peer that stops reading must not stall the control thread: wait briefly, then give up.
                if (n == -Int(EAGAIN) || n == -Int(EWOULDBLOCK)) && stalls < 3 {
                    stalls += 1
                    var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&pfd, 1, 100)
                    continue
                }
                throw Errno(rawValue: CInt(-n))
            }
            first = false
            offset += n
        }
    }
}

/// A process that holds something (a socket path, a tap queue).
public typealias Listener = UnixSocket.Listener

/// The first 4 KiB of a small file (/proc, /sys), or nil.
func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let n = read(fd, &buffer, buffer.count)
    return n > 0 ? String(decoding: buffer[..<n], as: UTF8.self) : nil
}
