import FoundationEssentials
import Glibc
import Testing
@testable import LibvirtIntegration

/// A daemon's control socket, in memory: ports by name, requests recorded, refusals on demand.
final class FakeDaemon: PortControl {
    var ports: [String: String] = [:]  // name -> attach spec
    var requests: [String] = []
    var refuse: Set<String> = []
    var unreachable = false

    func request(_ line: String) throws -> String {
        if unreachable { throw OwnershipError("connection refused") }
        requests.append(line)
        let words = line.split(separator: " ", maxSplits: 1).map(String.init)
        switch words[0] {
        case "list": return ports.keys.sorted().enumerated().map { "\($1) bridge 0 port \($0)" }.joined(separator: "\n")
        case "attach":
            let name = String(words[1].prefix { $0 != "=" })
            if refuse.contains(name) { return "error: refused \(name)" }
            if ports[name] != nil { return "error: port \(name) exists" }
            ports[name] = words[1]
            return "ok attached \(name) port 1"
        case "detach":
            return ports.removeValue(forKey: words[1]) == nil ? "error: no port \(words[1])" : "ok detached \(words[1])"
        default: return "error: unknown"
        }
    }
}

@Suite struct PortReconciling {
    let state = "/tmp/vn-reconcile-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    let daemon = FakeDaemon()

    func reconciler(log: @escaping (String) -> Void = { _ in }) -> PortReconciler {
        PortReconciler(socketDirectory: "/run/vn", socketGroup: "kvm", control: daemon,
                       ownership: PortOwnership(directory: state), log: log)
    }

    static func domain(_ name: String, _ interfaces: [(String, String, Int)]) -> DomainConfiguration {
        let body = interfaces.map { path, mode, queues in
            "<interface type='vhostuser'><source type='unix' path='\(path)' mode='\(mode)'/><driver queues='\(queues)'/></interface>"
        }.joined()
        return DomainConfiguration(name: name, documents: ["<domain><name>\(name)</name><devices>\(body)</devices></domain>"])
    }

    func cleanUp() { _ = try? FileManager.default.removeItem(atPath: state) }

    @Test func createsWhatDomainsNeedAndRemovesOnlyItsOwn() throws {
        defer { cleanUp() }
        let r = reconciler()
        daemon.ports["vale0:operator"] = "x"
        var domains = [
            Self.domain("a", [("/run/vn/vale0/a.sock", "client", 1), ("/run/vn/vale1/a2.sock", "server", 4), ("/elsewhere/vale0/z.sock", "client", 1)]),
            Self.domain("b", [("/run/vn/vale0/operator.sock", "client", 1)]),
        ]
        var pass = try r.reconcile { domains }
        #expect(pass.created == ["vale0:a", "vale1:a2"])
        #expect(daemon.ports["vale0:a"] == "vale0:a=/run/vn/vale0/a.sock,mode=0660,group=kvm")
        #expect(daemon.ports["vale1:a2"] == "vale1:a2=/run/vn/vale1/a2.sock,client,queues=4")
        #expect(r.ownership.read() == ["vale0:a", "vale1:a2"])
        // Nothing changed: nothing is requested but the list.
        daemon.requests = []
        pass = try r.reconcile { domains }
        #expect(pass == .init() && daemon.requests == ["list"])
        // Domain a goes: its ports go; the operator's port, wanted by b, stays, and stays when b goes.
        domains.removeFirst()
        pass = try r.reconcile { domains }
        #expect(pass.removed == ["vale0:a", "vale1:a2"])
        domains = []
        pass = try r.reconcile { domains }
        #expect(pass == .init())
        #expect(daemon.ports.keys.sorted() == ["vale0:operator"])
        #expect(r.ownership.read().isEmpty)
    }

    @Test func remakesPortsAfterTheDaemonRestarts() throws {
        defer { cleanUp() }
        let r = reconciler()
        let domains = [Self.domain("a", [("/run/vn/vale0/a.sock", "client", 1)])]
        _ = try r.reconcile { domains }
        daemon.ports = [:]  // restarted
        let pass = try r.reconcile { domains }
        #expect(pass.created == ["vale0:a"] && daemon.ports["vale0:a"] != nil)
    }

    @Test func refusalsAndBadInterfacesAreLoggedOnceAndNotOwned() throws {
        defer { cleanUp() }
        var lines: [String] = []
        let r = reconciler { lines.append($0) }
        daemon.refuse = ["vale0:bad"]
        let domains = [
            Self.domain("a", [("/run/vn/vale0/bad.sock", "client", 1), ("/run/vn/vale0/q.sock", "client", 17), ("/run/vn/vale0/q0.sock", "client", 0)]),
            Self.domain("b", [("/run/vn/vale0/bad.sock", "server", 1)]),
            DomainConfiguration(name: "c", documents: ["<domain><devices>"]),
        ]
        for _ in 0..<3 {
            let pass = try r.reconcile { domains }
            #expect(pass.failed == ["vale0:bad"] && pass.created.isEmpty)
        }
        #expect(r.ownership.read().isEmpty && daemon.ports.isEmpty)
        #expect(lines.count == 5, "\(lines)")  // refusal, 17 queues, 0 queues, a/b disagree, c unreadable: once each
    }

    @Test func failuresRemoveNothing() throws {
        defer { cleanUp() }
        let r = reconciler()
        _ = try r.reconcile { [Self.domain("a", [("/run/vn/vale0/a.sock", "client", 1)])] }
        struct ListFailed: Error {}
        #expect(throws: ListFailed.self) { try r.reconcile { throw ListFailed() } }
        daemon.unreachable = true
        #expect(throws: OwnershipError.self) { try r.reconcile { [] } }
        daemon.unreachable = false
        #expect(daemon.ports["vale0:a"] != nil && r.ownership.read() == ["vale0:a"])
    }

    @Test func ownershipFileKeepsNamesOnly() throws {
        defer { cleanUp() }
        let ownership = PortOwnership(directory: state)
        try ownership.update { $0 = ["vale0:b", "vale0:a"] }
        let text = try String(contentsOfFile: "\(state)/owned-ports", encoding: .utf8)
        #expect(text.hasSuffix("vale0:a\nvale0:b\n") && text.hasPrefix("#"))
        #expect(ownership.read() == ["vale0:a", "vale0:b"])
    }
}
