import Glibc
import PacketGenerator

// pkt-gen: netmap pkt-gen's options and output over netmap ports, AF_PACKET (PACKET_MMAP),
// TAP and vhost-user (a front-end of our own). Lines go out with write(2) so they are never
// buffered away when a test stops the program.
func emit(_ fd: Int32, _ s: String) {
    let bytes = Array((s + "\n").utf8)
    bytes.withUnsafeBytes { _ = write(fd, $0.baseAddress, $0.count) }
}

let options: Options
do {
    options = try Options.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    if error.helpRequested {
        emit(1, error.description)
        exit(0)
    }
    emit(2, error.description)
    exit(2)
}
installStopHandler()
let port: PacketPort
do {
    port = try openPort(options.interface, options: options)
} catch {
    emit(2, "pkt-gen: cannot open \(options.interface): \(error)")
    exit(1)
}
emit(2, "\(Report.stamp()) main [2600] interface is \(options.interface), function \(options.function.rawValue), \(options.count == 0 ? "unlimited" : String(options.count)) packets of \(options.length) bytes, burst \(options.effectiveBurst)")
emit(1, Runner(options: options, port: port, log: { emit(2, $0) }).run())
if let report = port.connectionReport { emit(2, "\(Report.stamp()) main [2600] \(report)") }
