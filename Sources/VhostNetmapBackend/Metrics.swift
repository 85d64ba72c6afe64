import VALESwitch

/// This build, as `/metrics` reports it (`vhost_netmap_build_info`).
public enum BuildInfo {
    public static let version = "0.1.0"
}

/// Metrics in Prometheus' text exposition format (version 0.0.4): one `# HELP` and `# TYPE` per
/// family, its samples together, label values escaped.
package struct MetricsExposition {
    private struct Family {
        let help: String
        let type: String
        var samples: [String] = []
    }

    private var order: [String] = []
    private var families: [String: Family] = [:]

    package init() {}

    /// Adds a sample of family `name` (created with `type` and `help` on first use).
    package mutating func add(_ name: String, _ type: String, _ help: String, _ labels: [(String, String)], _ value: UInt64) {
        if families[name] == nil {
            order.append(name)
            families[name] = Family(help: help, type: type)
        }
        let labelText = labels.isEmpty ? "" : "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
        families[name]!.samples.append("\(name)\(labelText) \(value)")
    }

    package func render() -> String {
        var text = ""
        for name in order {
            let f = families[name]!
            text += "# HELP \(name) \(f.help)\n# TYPE \(name) \(f.type)\n"
            for s in f.samples { text += s + "\n" }
        }
        return text
    }

    /// A label value as the format wants it: backslash, double quote and newline escaped.
    static func escape(_ value: String) -> String {
        var out = ""
        for c in value.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}

extension Daemon {
    /// Every switch's counters, drops by reason, ring states and learned addresses, and the
    /// build, as `/metrics` serves them.
    package static func metrics(of switches: [SwitchReport], captures: [CaptureReport] = []) -> String {
        var m = MetricsExposition()
        m.add("vhost_netmap_build_info", "gauge", "The running build (always 1).", [("version", BuildInfo.version)], 1)
        for s in switches {
            let sw = [("switch", s.name)]
            m.add("vhost_netmap_switch_learned_addresses", "gauge", "MAC addresses in the switch's forwarding table.", sw, UInt64(s.learnedAddresses))
            m.add("vhost_netmap_switch_workers", "gauge", "Worker threads running the switch's data path.", sw, UInt64(s.workers))
            m.add("vhost_netmap_switch_ports", "gauge", "Ports attached to the switch, by kind.", sw + [("kind", "vhost-user")], UInt64(s.ports.count))
            m.add("vhost_netmap_switch_ports", "gauge", "", sw + [("kind", "host")], UInt64(s.hostPorts.count))
            m.add("vhost_netmap_switch_ports", "gauge", "", sw + [("kind", "netmap")], UInt64(s.netmapPorts.count))
        }
        let all: [([(String, String)], PortCounters)] = switches.flatMap { s in
            s.ports.map { ([("switch", s.name), ("port", $0.name), ("kind", "vhost-user")], $0.counters) }
                + s.hostPorts.map { ([("switch", s.name), ("port", $0.name), ("kind", "host")], $0.counters) }
                + s.netmapPorts.map { ([("switch", s.name), ("port", $0.name), ("kind", "netmap")], $0.counters) }
        }
        // One pass per port: the exposition groups each family's samples when it renders.
        for (labels, c) in all {
            m.add("vhost_netmap_port_in_packets_total", "counter", "Frames the port sent into the switch (a guest's TX).", labels, c.inPackets)
            m.add("vhost_netmap_port_in_bytes_total", "counter", "Bytes the port sent into the switch.", labels, c.inBytes)
            m.add("vhost_netmap_port_out_packets_total", "counter", "Frames the switch delivered to the port (a guest's RX).", labels, c.outPackets)
            m.add("vhost_netmap_port_out_bytes_total", "counter", "Bytes the switch delivered to the port.", labels, c.outBytes)
            for (reason, n) in [("short", c.dropShort), ("bad_descriptor", c.dropBadDescriptor), ("no_room", c.dropNoRoom),
                                ("not_ready", c.dropNotReady), ("offload", c.dropOffload), ("same_port", c.dropSamePort)] {
                m.add("vhost_netmap_port_drops_total", "counter",
                      "Frames dropped at the port, by reason: short (< 14 bytes, from it), bad_descriptor (malformed chains or slots), no_room (its ring full), not_ready (no running receive queue), offload (an offload it did not negotiate), same_port (addressed back to it).",
                      labels + [("reason", reason)], n)
            }
        }
        for s in switches {
            for p in s.ports {
                let labels = [("switch", s.name), ("port", p.name)]
                m.add("vhost_netmap_port_front_end_connected", "gauge", "Whether a front-end (QEMU, virtio-user) is connected.", labels, p.connected ? 1 : 0)
                m.add("vhost_netmap_port_front_end_connections_total", "counter", "Front-end connections served.", labels, UInt64(p.frontEnds.connections))
                m.add("vhost_netmap_port_front_ends_refused_total", "counter", "Front-ends refused while another was connected.", labels, UInt64(p.frontEnds.refused))
                m.add("vhost_netmap_port_queue_pairs", "gauge", "Queue pairs the port offers.", labels, UInt64(p.queuePairs))
                m.add("vhost_netmap_port_rings_running", "gauge", "Rings the data path runs, by direction (tx: the guest's transmit rings).",
                      labels + [("direction", "tx")], UInt64(p.device.readyTX))
                m.add("vhost_netmap_port_rings_running", "gauge", "", labels + [("direction", "rx")], UInt64(p.device.readyRX))
                m.add("vhost_netmap_port_rings_broken", "gauge", "Rings stopped because the guest broke a rule (see the log).", labels, UInt64(p.device.brokenRings.count))
                m.add("vhost_netmap_port_guest_memory_bytes", "gauge", "Guest memory mapped for the port.", labels, p.device.memoryMiB << 20)
                m.add("vhost_netmap_port_dirty_logging", "gauge", "Whether writes to guest memory are being logged (a live migration).", labels,
                      p.device.dirtyLog?.logging == true ? 1 : 0)
            }
            for h in s.hostPorts {
                let labels = [("switch", s.name), ("port", h.name), ("interface", h.interface)]
                m.add("vhost_netmap_host_port_errors_total", "counter", "Host port (TAP) I/O errors, by kind: read, write, down (frames for a TAP that was down).",
                      labels + [("error", "read")], h.readErrors)
                m.add("vhost_netmap_host_port_errors_total", "counter", "", labels + [("error", "write")], h.writeErrors)
                m.add("vhost_netmap_host_port_errors_total", "counter", "", labels + [("error", "down")], h.writesWhileDown)
            }
            for k in s.netmapPorts {
                let labels = [("switch", s.name), ("port", k.name)]
                m.add("vhost_netmap_netmap_port_sync_errors_total", "counter", "Failed netmap ring syncs.", labels, k.syncErrors)
                m.add("vhost_netmap_netmap_port_bad_slots_total", "counter", "netmap slots the kernel side got wrong (refused, never followed).", labels, k.badSlots)
            }
        }
        for c in captures {
            let labels = [("switch", String(c.port.prefix { $0 != ":" })), ("port", c.port)]
            m.add("vhost_netmap_capture_active", "gauge", "Whether vhost-netmap capture is copying the port's frames.", labels, c.active ? 1 : 0)
            m.add("vhost_netmap_capture_frames_total", "counter", "Frame copies captures sent to their readers.", labels, c.framesSent)
            m.add("vhost_netmap_capture_dropped_total", "counter",
                  "Frame copies captures dropped because the reader was slower than the port (the frames themselves went on).", labels, c.copiesDropped)
        }
        return m.render()
    }
}
