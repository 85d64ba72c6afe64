import CFuzzDriver
import Glibc
import PacketGenerator

// pkt-gen's option parser over arguments split at NUL bytes. It refuses or returns options in
// range; it never crashes.
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, count in
    let arguments = UnsafeBufferPointer(start: data, count: count).split(separator: 0, omittingEmptySubsequences: false)
        .map { String(decoding: $0, as: UTF8.self) }
    if let o = try? Options.parse(arguments) {
        precondition(!o.interface.isEmpty && o.effectiveBurst >= 1 && o.length >= 16)
    }
    return 0
})
