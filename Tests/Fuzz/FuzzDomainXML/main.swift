import CFuzzDriver
import Glibc
import LibvirtIntegration
import VhostNetmapBackend

// What `libvirt watch` reads from any domain a libvirt user defined: the domain XML (through
// libxml2), socket paths, queue counts. Nothing may crash; every port the reconciler would make
// has a valid VALE name, a queue count the daemon takes, and the socket the convention maps
// back to that name.
struct RefuseEverything: PortControl {
    func request(_ line: String) throws -> String { "error: fuzzing" }
}

let reconciler = PortReconciler(socketDirectory: "/run/vn", socketGroup: "kvm", control: RefuseEverything(),
                                ownership: PortOwnership(directory: "/nonexistent"), log: { _ in })
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, count in
    let text = String(decoding: UnsafeBufferPointer(start: data, count: count), as: UTF8.self)
    let interfaces = (try? DomainInterfaces.parse(text)) ?? []
    for interface in interfaces {
        if let name = SocketConvention.portName(for: interface.socketPath, socketDirectory: "/run/vn") {
            precondition((try? PortSpec.parseName(name)) != nil, "bad name \(name)")
        }
    }
    let wanted = reconciler.wantedPorts([DomainConfiguration(name: "d", documents: [text])])
    for (name, port) in wanted {
        precondition(port.name == name && (1...PortSpec.maxQueuePairs).contains(port.interface.queues))
        precondition(SocketConvention.portName(for: port.interface.socketPath, socketDirectory: "/run/vn") == name)
        // The request the daemon would get parses as a --port specification with that name.
        let line = reconciler.attachLine(port)
        precondition(line.hasPrefix("attach "))
        let spec = try? PortSpec.parse(String(line.dropFirst(7)), socketDirectory: "/run/vn")
        precondition(spec?.fullName == name, "attach line \(line) does not parse back")
    }
    return 0
})
