import Testing
import FoundationEssentials
import Glibc
import VhostNetmapBackend
@testable import LibvirtIntegration

/// Reading vhost-user interfaces out of domain XML, and which of them are the daemon's.
@Suite struct DomainXMLReading {
    static let domain = """
        <domain type='qemu' id='3'>
          <name>vm</name>
          <devices>
            <interface type='network'><source network='default'/><model type='virtio'/></interface>
            <interface type='vhostuser'>
              <mac address='52:54:00:00:00:01'/>
              <source type='unix' path='/run/vhost-netmap/vale0/a.sock' mode='client'>
                <reconnect enabled='yes' timeout='1'/>
              </source>
              <model type='virtio'/>
            </interface>
            <interface type='vhostuser'>
              <source type='unix' path='/run/vhost-netmap/vale1/b.sock' mode='server'/>
              <driver queues='4'/>
            </interface>
            <interface type='vhostuser'><mac address='52:54:00:00:00:03'/></interface>
            <interface type='vhostuser'><source type='unix' path='/x/c.sock'/><driver queues='many'/></interface>
          </devices>
        </domain>
        """

    @Test func readsEachVhostUserInterface() throws {
        let found = try DomainInterfaces.parse(Self.domain)
        #expect(found == [
            VhostUserInterface(socketPath: "/run/vhost-netmap/vale0/a.sock", qemuListens: false, queues: 1, mac: "52:54:00:00:00:01"),
            VhostUserInterface(socketPath: "/run/vhost-netmap/vale1/b.sock", qemuListens: true, queues: 4, mac: nil),
            // A queue count that does not parse is kept as 0, which the mapping refuses.
            VhostUserInterface(socketPath: "/x/c.sock", qemuListens: false, queues: 0, mac: nil),
        ])
    }

    @Test func refusesWhatIsNotADomain() {
        #expect(throws: DomainXMLError.unreadable) { try DomainInterfaces.parse("<domain><devices>") }
        #expect(throws: DomainXMLError.unreadable) { try DomainInterfaces.parse("") }
        #expect(throws: DomainXMLError.notADomain("network")) { try DomainInterfaces.parse("<network/>") }
    }

    @Test func externalEntitiesAreNotRead() throws {
        let xml = """
            <?xml version="1.0"?>
            <!DOCTYPE domain [<!ENTITY leak SYSTEM "file:///etc/hostname">]>
            <domain><devices><interface type='vhostuser'><source type='unix' path='/run/vhost-netmap/vale0/&leak;.sock'/></interface></devices></domain>
            """
        let paths = ((try? DomainInterfaces.parse(xml)) ?? []).map(\.socketPath)
        let hostname = (try? String(contentsOfFile: "/etc/hostname", encoding: .utf8))?.trimmingWhitespace ?? "\u{1}"
        #expect(!paths.contains { $0.contains(hostname) })
    }

    @Test func mapsSocketsByTheConvention() {
        let dir = "/run/vhost-netmap"
        let cases: [(String, String?)] = [
            ("/run/vhost-netmap/vale0/vm1.sock", "vale0:vm1"),
            ("/run//vhost-netmap/./vale0/vm1.sock", "vale0:vm1"),
            ("/run/vhost-netmap/vale0/vm1", nil),                 // no .sock
            ("/run/vhost-netmap/vm1.sock", nil),                  // no switch directory
            ("/run/vhost-netmap/vale0/x/vm1.sock", nil),          // too deep
            ("/run/other/vale0/vm1.sock", nil),                   // another directory
            ("/run/vhost-netmap/../vhost-netmap/vale0/vm1.sock", nil),
            ("/run/vhost-netmap/vale0/../vale1/vm1.sock", nil),
            ("run/vhost-netmap/vale0/vm1.sock", nil),             // relative
            ("/run/vhost-netmap/vale0/vm-1.sock", nil),           // not a VALE name
            ("/run/vhost-netmap/vale0/abcdefghijklmnop.sock", nil), // 16 characters
            ("/run/vhost-netmap/eth0/vm1.sock", nil),             // not a VALE switch
            ("/run/vhost-netmap/vale0/.sock", nil),
        ]
        for (path, name) in cases {
            #expect(SocketConvention.portName(for: path, socketDirectory: dir) == name, "\(path)")
        }
        #expect(SocketConvention.portName(for: "/srv/s/vale2/p.sock", socketDirectory: "/srv/s/") == "vale2:p")
    }

    @Test func qemuGroupComesFromQemuConf() throws {
        let path = "/tmp/vn-qemu-conf-\(getpid())"
        defer { unlink(path) }
        try Data("# group = \"wrong\"\nuser = \"x\"\ngroup = \"qemugroup\"\n".utf8).write(to: URL(fileURLWithPath: path))
        #expect(IntegrationDefaults.qemuGroup(configuration: path) == "qemugroup")
        #expect(IntegrationDefaults.qemuGroup(configuration: "/nonexistent") != "")
    }

    @Test func interfaceElementRoundTrips() throws {
        let element = LibvirtInterfaceXML(socketPath: "/s/vale0/a'b.sock", mac: "52:54:00:00:00:09", queues: 2, qemuListens: true).element
        let parsed = try DomainInterfaces.parse("<domain><devices>\(element)</devices></domain>")
        #expect(parsed == [VhostUserInterface(socketPath: "/s/vale0/a'b.sock", qemuListens: true, queues: 2, mac: "52:54:00:00:00:09")])
        let packed = LibvirtInterfaceXML(socketPath: "/s/vale0/p.sock", mac: "52:54:00:00:00:0a", packed: true).element
        #expect(packed.contains("<driver packed='on'/>"))
        #expect(try DomainInterfaces.parse("<domain><devices>\(packed)</devices></domain>").first?.queues == 1)
    }
}
