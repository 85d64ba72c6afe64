import Testing
import TestSupport
import VALESwitch
@testable import VhostNetmapBackend

/// The metrics endpoint's request parsing and exposition text (the endpoint itself runs against
/// curl and promtool in Tests/Integration/metrics.sh).
@Suite struct MetricsEndpoint {
    static func parse(_ text: String) -> MetricsRequest { MetricsRequest.parse(Array(text.utf8)) }

    @Test func getMetricsIsServedAndNothingElse() {
        #expect(Self.parse("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == .metrics)
        #expect(Self.parse("GET /metrics?name=x HTTP/1.0\n\n") == .metrics)
        #expect(Self.parse("GET /metrics HTTP/1.1\r\nHost: x\r\n") == .incomplete)
        #expect(Self.parse("") == .incomplete)
        let refusals: [(String, Int)] = [
            ("POST /metrics HTTP/1.1\r\n\r\n", 405), ("HEAD /metrics HTTP/1.1\r\n\r\n", 405),
            ("GET / HTTP/1.1\r\n\r\n", 404), ("GET /metricsx HTTP/1.1\r\n\r\n", 404), ("GET /metrics/ HTTP/1.1\r\n\r\n", 404),
            ("GET /metrics HTTP/2\r\n\r\n", 505), ("GET /metrics\r\n\r\n", 400), ("GET  /metrics HTTP/1.1\r\n\r\n", 400),
            ("GET metrics HTTP/1.1\r\n\r\n", 400), ("\r\n\r\n", 400), ("GET /metrics HTTP/1.1 extra\r\n\r\n", 400),
        ]
        for (request, status) in refusals {
            guard case .refused(let s, _) = Self.parse(request) else {
                Issue.record("\(request.debugDescription) was not refused")
                continue
            }
            #expect(s == status, "\(request.debugDescription)")
        }
    }

    @Test func anOverlongHeadIsRefusedCompleteOrNot() {
        let pad = String(repeating: "a", count: MetricsRequest.maxHeadBytes)
        #expect(Self.parse("GET /metrics HTTP/1.1\r\nX: \(pad)") == .refused(status: 431, reason: "request head over 8192 bytes"))
        #expect(Self.parse("GET /metrics HTTP/1.1\r\nX: \(pad)\r\n\r\n") == .refused(status: 431, reason: "request head over 8192 bytes"))
    }

    @Test func responsesCarryTheirLengthAndAllowHeader() {
        let ok = String(decoding: MetricsRequest.metrics.response { "a 1\n" }, as: UTF8.self)
        #expect(ok.hasPrefix("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\n"))
        #expect(ok.hasSuffix("\r\n\r\na 1\n"))
        let refused = String(decoding: MetricsRequest.refused(status: 405, reason: "only GET").response { "never rendered" }, as: UTF8.self)
        #expect(refused.contains("HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\n") && !refused.contains("never rendered"))
    }

    @Test func labelValuesAreEscapedAndFamiliesStayTogether() {
        var m = MetricsExposition()
        m.add("x_total", "counter", "X.", [("port", "a\"b\\c\nd")], 3)
        m.add("y", "gauge", "Y.", [], 1)
        m.add("x_total", "counter", "", [("port", "e")], 4)
        #expect(m.render() == """
            # HELP x_total X.
            # TYPE x_total counter
            x_total{port="a\\"b\\\\c\\nd"} 3
            x_total{port="e"} 4
            # HELP y Y.
            # TYPE y gauge
            y 1

            """)
    }

    @Test func aSwitchReportBecomesLabelledSamples() {
        var counters = PortCounters()
        counters.inPackets = 7
        counters.dropNoRoom = 2
        let device = VhostNetDevice.Status(features: 0, protocolFeatures: 0, memoryRegions: 1, memoryMiB: 512, readyTX: 1, readyRX: 1,
                                           brokenRings: [3], mtu: 1500, dirtyLog: nil)
        let port = Daemon.PortReport(name: "vale0:vm1", index: 0, socket: "/s", mode: "server", queuePairs: 2, connected: true,
                                     frontEnds: .init(connections: 4, refused: 1, quickLeavesInARow: 0, lastLeaveReason: nil),
                                     device: device, counters: counters)
        let report = Daemon.SwitchReport(name: "vale0", kind: "embedded", workers: 2, learnedAddresses: 5, ports: [port], hostPorts: [], netmapPorts: [])
        let text = Daemon.metrics(of: [report], captures: [CaptureReport(port: "vale0:vm1", active: true, framesSent: 12, copiesDropped: 3)])
        for line in [
            #"vhost_netmap_port_in_packets_total{switch="vale0",port="vale0:vm1",kind="vhost-user"} 7"#,
            #"vhost_netmap_port_drops_total{switch="vale0",port="vale0:vm1",kind="vhost-user",reason="no_room"} 2"#,
            #"vhost_netmap_port_rings_broken{switch="vale0",port="vale0:vm1"} 1"#,
            #"vhost_netmap_port_guest_memory_bytes{switch="vale0",port="vale0:vm1"} 536870912"#,
            #"vhost_netmap_port_front_end_connections_total{switch="vale0",port="vale0:vm1"} 4"#,
            #"vhost_netmap_switch_learned_addresses{switch="vale0"} 5"#,
            #"vhost_netmap_switch_workers{switch="vale0"} 2"#,
            #"vhost_netmap_build_info{version="\#(BuildInfo.version)"} 1"#,
            #"vhost_netmap_capture_active{switch="vale0",port="vale0:vm1"} 1"#,
            #"vhost_netmap_capture_dropped_total{switch="vale0",port="vale0:vm1"} 3"#,
        ] {
            #expect(text.contains(line + "\n"), "\(line)")
        }
        // Every family is announced once, before its samples.
        let types = text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }
        #expect(Set(types).count == types.count)
    }
}
