import FoundationEssentials
import Glibc
import VhostSystem

/// The ports the libvirt integration created (and so may remove), kept in
/// `<directory>/owned-ports`, one name a line. The watcher and `libvirt attach` share it under
/// an exclusive lock on `<directory>/lock`, so a port that `attach` has made but not yet plugged
/// into its domain is never taken for a leftover.
public struct PortOwnership: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    var listPath: String { "\(directory)/owned-ports" }

    /// Runs `body` with the owned set under the lock, and stores the set it leaves.
    public func update<T>(_ body: (inout Set<String>) throws -> T) throws -> T {
        try Posix.makeDirectories(directory)
        let fd = open("\(directory)/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw OwnershipError("cannot open \(directory)/lock: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw OwnershipError("cannot lock \(directory)/lock: \(String(cString: strerror(errno)))") }
        }
        var owned = read()
        let before = owned
        let result = try body(&owned)
        if owned != before { try write(owned) }
        return result
    }

    /// The owned set as stored (without the lock: for reports).
    public func read() -> Set<String> {
        guard let text = try? String(contentsOfFile: listPath, encoding: .utf8) else { return [] }
        return Set(text.split(separator: "\n").map { $0.trimmingWhitespace }.filter { !$0.isEmpty && !$0.hasPrefix("#") })
    }

    private func write(_ owned: Set<String>) throws {
        let text = "# ports created by vhost-netmap libvirt (watch, attach); removed when no domain uses them\n"
            + owned.sorted().map { $0 + "\n" }.joined()
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: listPath), options: .atomic)
        } catch {
            throw OwnershipError("cannot write \(listPath): \(error)")
        }
    }
}

public struct OwnershipError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
