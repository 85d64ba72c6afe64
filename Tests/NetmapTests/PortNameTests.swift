import Netmap
import Testing

@Suite struct PortNames {
    @Test(arguments: [
        ("vale0:vm1", NetmapPortName.Kind.vale(switchName: "vale0", port: "vm1"), NetmapPortName.Mode.allNIC, "vale0:vm1"),
        ("netmap:vale1:a_b", .vale(switchName: "vale1", port: "a_b"), .allNIC, "vale1:a_b"),
        ("vale:x", .vale(switchName: "vale", port: "x"), .allNIC, "vale:x"),
        ("netmap:eth0", .interface("eth0"), .allNIC, "eth0"),
        ("eth0", .interface("eth0"), .allNIC, "eth0"),
        ("eth0^", .interface("eth0"), .hostRings, "eth0"),
        ("eth0^2", .interface("eth0"), .oneHostRing(2), "eth0"),
        ("netmap:eth0*", .interface("eth0"), .nicAndHost, "eth0"),
        ("eth0-3", .interface("eth0"), .oneNICRing(3), "eth0"),
        ("enp0s31f6-12", .interface("enp0s31f6"), .oneNICRing(12), "enp0s31f6"),
        ("x{1", .pipe(base: "x", id: "1", master: true), .allNIC, "x{1"),
        ("netmap:x}1", .pipe(base: "x", id: "1", master: false), .allNIC, "x}1"),
        ("vale0:p{7-1", .pipe(base: "vale0:p", id: "7", master: true), .oneNICRing(1), "vale0:p{7"),
    ])
    func valid(text: String, kind: NetmapPortName.Kind, mode: NetmapPortName.Mode, kernelName: String) throws {
        let n = try NetmapPortName.parse(text)
        #expect(n.kind == kind)
        #expect(n.mode == mode)
        #expect(n.kernelName == kernelName)
    }

    @Test func flagsMemoryAndOptions() throws {
        let n = try NetmapPortName.parse("vale0:vm1/xR@2@conf:rings=4,tx-slots=2048,slots=512")
        #expect(n.flags == [.exclusive, .rxRingsOnly])
        #expect(n.memoryID == 2)
        #expect(n.configuration.txRings == 4 && n.configuration.rxRings == 4)
        #expect(n.configuration.txSlots == 512 && n.configuration.rxSlots == 512)
        let m = try NetmapPortName.parse("eth0^@share=vale0:x@offset:initial=64")
        #expect(m.mode == .hostRings)
        #expect(m.otherOptions == ["share=vale0:x", "offset:initial=64"])
        #expect(NetmapPortName.Mode.oneHostRing(2).registerMode == (8, 2))
        #expect(NetmapPortName.Mode.nicAndHost.registerMode == (3, 0))
    }

    @Test(arguments: [
        ("", 0, "empty name"),
        ("vale0", 0, "needs ':'"),
        ("vale0:", 6, "missing port name"),
        ("vale-0:a", 4, "not allowed in a switch name"),
        ("vale0:averyveryverylongport", 6, "longer than 15"),
        ("abcdefghijklmnopq", 0, "longer than 15"),
        ("eth0+", 4, "'+' is not a mode"),
        ("eth0^99999", 5, "out of range"),
        ("eth0-", 5, "expected a ring number"),
        ("x{", 2, "missing pipe id"),
        ("x{1^", 3, "pipes take only"),
        ("vale0:a^", 7, "VALE ports have no ring modes"),
        ("vale0:vm-1", 8, "'-' is not allowed in a VALE port name"),
        ("sw0:vm1", 3, "a switch name starts with 'vale'"),
        ("eth0/q", 5, "unknown flag 'q'"),
        ("eth0@0", 5, "memory id must be"),
        ("eth0@1@2", 6, "memory id given twice"),
        ("eth0@conf:rings=x", 5, "key=number"),
        ("eth0@conf:bogus=1", 5, "unknown @conf: key 'bogus'"),
        ("eth0@what", 5, "unknown option '@what'"),
        ("eth0@", 5, "empty '@' option"),
        ("eth0 x", 4, "unexpected ' '"),
    ])
    func invalid(text: String, position: Int, problem: String) {
        do {
            let n = try NetmapPortName.parse(text)
            Issue.record("'\(text)' parsed as \(n.kind)")
        } catch {
            #expect(error.position == position, "\(error)")
            #expect(error.problem.contains(problem), "\(error)")
            #expect(error.description.contains("at character \(position + 1)"))
        }
    }
}
