import DataPath
import Logging
import Netmap
import Testing
import VALESwitch
@testable import VhostNetmapBackend

/// The daemon's topology without sockets or front-ends: which switch a port lands on, what a
/// removal takes with it, how the ports are listed, and the host-offload policy.
@Suite struct DaemonTopology {
    let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

    func embedded() throws -> Topology {
        var o = DaemonOptions(ports: [])
        o.switchMode = .embedded
        return try Topology(options: o, logger: logger)
    }

    @Test func embeddedPortsShareTheirSwitchAndItsWorker() throws {
        let t = try embedded()
        #expect(!t.usesKernel)
        let (a, wa) = try t.switchFor(try PortSpec.parse("vale0:a=/x/a.sock"))
        let (b, wb) = try t.switchFor(try PortSpec.parse("vale0:b=/x/b.sock"))
        let (c, _) = try t.switchFor(try PortSpec.parse("vale1:c=/x/c.sock"))
        #expect(a === b && wa === wb, "one switch, one worker per VALE name")
        #expect(a !== c && t.switches.count == 2)
        #expect(throws: DaemonError.self, "netmap names need the kernel") { try t.switchFor(try PortSpec.parse("netmap:eth0=/x/e.sock")) }
    }

    @Test func kernelModeCrossConnectsEachPortAndRemovalTakesItAway() throws {
        let opener = ModelOpener()
        var o = DaemonOptions(ports: [])
        o.netmapOpener = opener
        o.netmapSync = .kloop
        let t = try Topology(options: o, logger: logger)
        #expect(t.usesKernel)
        let (a, _) = try t.switchFor(try PortSpec.parse("vale0:a=/x/a.sock"))
        let (b, _) = try t.switchFor(try PortSpec.parse("vale0:b=/x/b.sock,sync=ioctl"))
        #expect(a !== b && t.switches.count == 2 && t.kernelBindings.count == 2, "a switch and a binding per port")
        #expect(t.kernelBindings.map(\.opened.sync) == [.kloop, .ioctl])
        #expect(t.listPorts("") == "", "a cross-connect's netmap side is not listed")
        t.portRemoved(from: a)
        #expect(t.switches.count == 1 && t.switches[0].vale === b)
        #expect(t.kernelBindings.count == 1 && t.kernelBindings[0].vale === b)
    }

    @Test func listingFollowsValeCtl() throws {
        let t = try embedded()
        let (vale, _) = try t.switchFor(try PortSpec.parse("vale0:a=/x/a.sock"))
        _ = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(SwitchPort(), named: "a") }
        _ = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(SwitchPort(), named: "b") }
        #expect(t.listPorts("") == "vale0:a bridge 0 port 0\nvale0:b bridge 0 port 1")
        #expect(t.listPorts("vale0:b") == "vale0:b bridge 0 port 1")
        #expect(t.listPorts("vale9:z") == "error: no port vale9:z")
    }
}
