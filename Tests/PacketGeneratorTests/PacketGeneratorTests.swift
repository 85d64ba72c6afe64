@testable import PacketGenerator
import Testing

@Suite struct PktGenOptions {
    @Test func getoptStyleLikeNetmapPktGen() throws {
        let o = try Options.parse(["-i", "vhost-user:/x.sock", "-ftx", "-n", "1000", "-l", "128", "-b", "64", "-R", "30000",
                                   "-s", "10.0.0.5:99", "-d", "10.0.0.6", "-D", "02:00:00:00:00:09", "-T", "500", "-w", "0", "-N"])
        #expect(o.function == .tx && o.count == 1000 && o.length == 128 && o.rate == 30000)
        #expect(o.effectiveBurst == 64)  // min(64, 30000/300 = 100)
        #expect(o.source == .init(address: [10, 0, 0, 5], port: 99))
        #expect(o.destination == .init(address: [10, 0, 0, 6], port: 1234))
        #expect(o.destinationMAC == [2, 0, 0, 0, 0, 9])
        #expect(o.reportMilliseconds == 500 && o.waitSeconds == 0 && o.rawNumbers)
        let r = try Options.parse(["-i", "eth0", "-l", "1500", "-l", "64"])
        #expect(r.length == 1500 && r.minimumLength == 64, "a second -l gives a size range")
        #expect(try Options.parse(["-i", "x", "-f", "ping"]).effectiveBurst == 1)
        #expect(try Options.parse(["-i", "x", "-R", "600"]).effectiveBurst == 2)
    }

    @Test(arguments: [["-f", "tx"], ["-i", "x", "-f", "bogus"], ["-i", "x", "-l", "8"], ["-i", "x", "-q"], ["-i", "x", "-p", "2"],
                      ["-i", "x", "-H", "11"], ["-i", "x", "-D", "zz"], ["-i", "x", "-s", "10.0.0"], ["-i", "x", "-n"]])
    func refusedClearly(args: [String]) {
        #expect(throws: Options.Failure.self) { _ = try Options.parse(args) }
    }
}

@Suite struct PktGenOutput {
    @Test func normUsesPktGenUnits() {
        let r = Report(raw: false)
        #expect(r.norm(14_880_952, "pps") == "14.881 Mpps")
        #expect(r.norm(999, "pps") == "999.000 pps")
        #expect(r.norm(7_142_857_000, "bps") == "7.143 Gbps")
        #expect(Report(raw: true).norm(14_880_952, "pps") == "14880952 pps")
    }

    @Test func summaryLinesMatchPktGen() {
        let s = Report(raw: false).summary(sent: true, packets: 1000, bytes: 60000, events: 10, seconds: 0.5)
        let lines = s.split(separator: "\n").map(String.init)
        #expect(lines[0] == "Sent 1000 packets 60000 bytes 10 events 60 bytes each in 0.50 seconds.")
        #expect(lines[1] == "Speed: 2.000 Kpps Bandwidth: 960.000 Kbps (raw 1.344 Mbps). Average batch: 100.00 pkts")
        #expect(Report(raw: false).summary(sent: false, packets: 0, bytes: 0, events: 0, seconds: 1) == "Received nothing.")
    }

    @Test func intervalLine() {
        let line = Report(raw: false).interval(packets: 1000, bytes: 64000, microseconds: 1_000_000, events: 4, minSpace: 12)
        #expect(line.hasSuffix("main_thread [2781] 1.000 Kpps (1.000 Kpkts 512.000 Kbps in 1000000 usec) 250.00 avg_batch 12 min_space"))
    }

    @Test func udpFrameHeadersAreValid() {
        var o = Options()
        o.destinationMAC = [2, 0, 0, 0, 0, 2]
        let f = PacketTemplate(options: o, sourceMAC: [2, 0, 0, 0, 0, 1], length: 60).bytes
        #expect(f.count == 60)
        #expect(Array(f[12..<14]) == [0x08, 0x00] && f[23] == 17)
        #expect(PacketTemplate.checksum(f[14..<34]) == 0, "the IPv4 header checksum verifies")
        #expect(Int(f[16]) << 8 | Int(f[17]) == 46)
    }
}
