import ArgumentParser
import FoundationEssentials
import Glibc
import VhostSystem
import VhostNetmapBackend

/// The running daemon's control socket, for the commands that talk to it.
struct ControlSocketOption: ParsableArguments {
    @Option(name: .customLong("control"), help: "The daemon's control socket (default: $VHOST_NETMAP_DIR/control.sock, /run/vhost-netmap/control.sock).")
    var explicitPath: String?

    var path: String { explicitPath ?? RunDirectory.controlSocket }
}

/// A failure while running (not a usage mistake): printed as "Error: …" without the usage text,
/// exit status 1. Usage mistakes exit with 64 (EX_USAGE) and show the usage.
struct RuntimeError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Sends one command line to the daemon's control socket and returns the answer.
func controlAnswer(_ command: String, control: String) throws -> String {
    do {
        return String(decoding: try ControlClient.request(command, socket: control), as: UTF8.self)
    } catch {
        let running = FileManager.default.fileExists(atPath: control)
            ? "the socket exists but nothing answers: the daemon stopped, or the socket is another user's."
            : "no socket there: is the daemon running (vhost-netmap serve)?"
        throw RuntimeError("cannot reach the daemon at \(control) (\(error)); \(running) Give --control PATH, or set VHOST_NETMAP_DIR to the daemon's --socket-dir.")
    }
}

/// A memory size as QEMU's -m takes it: a number with an optional K, M, G or T suffix (binary
/// units; a bare number is MiB). `qemu-args` and `libvirt-xml` both take it.
struct MemorySize: ExpressibleByArgument, Equatable, CustomStringConvertible {
    let mebibytes: Int

    init?(argument: String) {
        let text = argument.uppercased().replacing("IB", with: "").replacing("B", with: "")
        let digits = text.prefix { $0.isNumber }
        guard let n = Int(digits), n > 0 else { return nil }
        let scale: Int
        switch text.dropFirst(digits.count) {
        case "", "M": scale = 1
        case "G": scale = 1024
        case "T": scale = 1024 * 1024
        case "K":
            guard n % 1024 == 0 else { return nil }
            self.mebibytes = n / 1024
            return
        default: return nil
        }
        let (value, overflow) = n.multipliedReportingOverflow(by: scale)
        guard !overflow, value <= 16 * 1024 * 1024 else { return nil }
        mebibytes = value
    }

    /// As QEMU writes it: "1G" when whole gibibytes, else "NM".
    var description: String { mebibytes % 1024 == 0 ? "\(mebibytes / 1024)G" : "\(mebibytes)M" }

    static var defaultValueDescription: String { "256M" }
}

/// What the host can run guests with: KVM where the CPU has hardware virtualization and
/// /dev/kvm is there, else TCG (e.g. inside a VM without nested virtualization).
enum HostVirtualization {
    static var kvmUsable: Bool {
        guard access("/dev/kvm", R_OK | W_OK) == 0,
              let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return false }
        return cpuinfo.split(separator: "\n").contains { line in
            line.hasPrefix("flags") && line.split(separator: " ").contains { $0 == "vmx" || $0 == "svm" }
        }
    }
}
