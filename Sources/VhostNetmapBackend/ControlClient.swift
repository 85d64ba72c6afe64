import Glibc
import VhostSystem

/// The client side of the daemon's control socket: one command line, one answer, then the
/// daemon closes the connection (`stats`, `fdb`, `ping`).
public enum ControlClient {
    /// Sends `command` and returns the whole answer.
    public static func request(_ command: String, socket path: String) throws -> [UInt8] {
        let socket = try UnixSocket.connect(path: path, nonBlocking: false)
        try Array("\(command)\n".utf8).withUnsafeBytes { try UnixSocket.send(socket.rawValue, $0) }
        var answer = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(socket.rawValue, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            answer += chunk[0..<n]
        }
        return answer
    }
}
