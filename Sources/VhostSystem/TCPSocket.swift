import Glibc
import SystemPackage

/// TCP listening sockets (the metrics endpoint): numeric addresses only, so that listening
/// never waits on a name server.
public enum TCPSocket {
    /// Where to listen: `HOST:PORT` with an IPv4 address, `[IPv6]:PORT`, or `:PORT` (every IPv4
    /// address). Port 0 asks the kernel for a free one.
    public struct Address: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: UInt16

        public init(host: String, port: UInt16) {
            self.host = host
            self.port = port
        }

        public var isIPv6: Bool { host.contains(":") }
        public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

        /// The address, or why `text` is not one of the forms above.
        public static func parse(_ text: String) -> Result<Address, ParseError> {
            guard let colon = text.lastIndex(of: ":") else { return .failure(.init("expected HOST:PORT, [IPv6]:PORT or :PORT")) }
            var host = String(text[..<colon])
            guard let port = UInt16(text[text.index(after: colon)...]) else {
                return .failure(.init("'\(text[text.index(after: colon)...])' is not a port number (0-65535)"))
            }
            if host.hasPrefix("[") && host.hasSuffix("]") {
                host = String(host.dropFirst().dropLast())
                var a6 = in6_addr()
                guard inet_pton(AF_INET6, host, &a6) == 1 else { return .failure(.init("'\(host)' is not an IPv6 address")) }
            } else {
                if host.isEmpty { host = "0.0.0.0" }
                var a4 = in_addr()
                guard inet_pton(AF_INET, host, &a4) == 1 else {
                    return .failure(.init("'\(host)' is not an IPv4 address (IPv6 goes in brackets; names are not looked up)"))
                }
            }
            return .success(Address(host: host, port: port))
        }
    }

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// A non-blocking, close-on-exec listening socket bound to `address` (SO_REUSEADDR, so a
    /// restarted daemon binds again at once).
    public static func listen(_ address: Address, backlog: CInt = 16) throws(Errno) -> OwnedDescriptor {
        let family = address.isIPv6 ? AF_INET6 : AF_INET
        let fd = OwnedDescriptor(adopting: try Posix.check(socket(family, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0)))
        var one: CInt = 1
        _ = setsockopt(fd.rawValue, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
        if address.isIPv6 {
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = address.port.bigEndian
            _ = inet_pton(AF_INET6, address.host, &sa.sin6_addr)
            try bind(fd.rawValue, &sa)
        } else {
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = address.port.bigEndian
            _ = inet_pton(AF_INET, address.host, &sa.sin_addr)
            try bind(fd.rawValue, &sa)
        }
        _ = try Posix.check(Glibc.listen(fd.rawValue, backlog))
        return fd
    }

    /// bind(2) to a sockaddr_in or sockaddr_in6.
    private static func bind<Address>(_ fd: CInt, _ address: inout Address) throws(Errno) {
        _ = try Posix.check(withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<Address>.size)) }
        })
    }

    /// The port a listening socket is bound to (the kernel's choice for port 0).
    public static func boundPort(_ fd: CInt) -> UInt16? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { return nil }
        let family = storage.ss_family
        return withUnsafePointer(to: &storage) { p -> UInt16 in
            if family == sa_family_t(AF_INET6) {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
            }
            return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
    }

    /// Caps the kernel memory a connection's unsent data may hold (SO_SNDBUF; the kernel
    /// doubles it for its own bookkeeping).
    public static func limitSendBuffer(_ fd: CInt, bytes: Int) {
        var size = CInt(bytes)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<CInt>.size))
    }

    /// Sends what the socket takes now, without waiting: the number of bytes sent (0 when its
    /// buffer is full). A peer that went away is an error (no SIGPIPE).
    public static func sendAvailable(_ fd: CInt, _ bytes: UnsafeRawBufferPointer) throws(Errno) -> Int {
        guard !bytes.isEmpty else { return 0 }
        let n = Glibc.send(fd, bytes.baseAddress, bytes.count, CInt(MSG_NOSIGNAL) | CInt(MSG_DONTWAIT))
        if n >= 0 { return n }
        if errno == EAGAIN || errno == EWOULDBLOCK { return 0 }
        throw Errno(rawValue: errno)
    }
}
