import CFuzzDriver
import Glibc
import Netmap
import VhostNetmapBackend

// The port-name parsers: netmap names, --port and --host-port specifications. Nothing may crash;
// what parses must print and re-parse to the same thing.
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, count in
    let text = String(decoding: UnsafeBufferPointer(start: data, count: count), as: UTF8.self)
    if let name = try? NetmapPortName.parse(text) {
        precondition((try? NetmapPortName.parse(name.text))?.kind == name.kind, "re-parse differs: \(text)")
    }
    if let spec = try? PortSpec.parse(text, socketDirectory: "/run/x") {
        precondition(spec.queuePairs >= 1 && spec.queuePairs <= PortSpec.maxQueuePairs)
        precondition(spec.socketPath?.isEmpty == false)
    }
    _ = try? HostPortSpec.parse(text)
    _ = try? PortSpec.parseName(text)
    return 0
})
