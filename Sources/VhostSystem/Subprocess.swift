import Glibc

extension Posix {
    /// Runs `arguments` (found on PATH) and returns what it wrote to standard output, or nil if
    /// it could not be started; its standard error is discarded. For short tool queries
    /// (`qemu-system-x86_64 --version`), not for long-running children.
    public static func output(of arguments: [String]) -> String? {
        var pipeEnds: [CInt] = [-1, -1]
        guard pipe(&pipeEnds) == 0 else { return nil }
        // Close-on-exec: the child keeps only its dup2'ed standard output.
        for fd in pipeEnds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let reader = OwnedDescriptor(adopting: pipeEnds[0])
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let rc = posix_spawnp(&pid, arguments[0], &actions, nil, argv, environ)
        close(pipeEnds[1])
        guard rc == 0 else { return nil }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(reader.rawValue, &chunk, chunk.count)
            if n > 0 { bytes += chunk[..<n]; continue }
            if n < 0 && errno == EINTR { continue }
            break
        }
        var status: CInt = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension Posix {
    /// Writes `text` to standard error (unbuffered, as error messages should be).
    public static func printError(_ text: String) {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            bytes = bytes.dropFirst(n)
        }
    }
}
