import DataPath
import FoundationEssentials
import Netmap
import SystemPackage
import VALESwitch

/// What `stats` (and SIGUSR1) report: per switch, its vhost-user ports, host ports and netmap
/// ports with their counters.
extension Daemon {
    public struct PortReport: Codable, Sendable {
        public var name: String
        public var index: Int
        public var socket: String
        public var mode: String
        public var queuePairs: Int
        public var connected: Bool
        public var frontEnds: FrontEndReport
        public var device: VhostNetDevice.Status
        public var counters: PortCounters
    }

    /// A port's front-end connections: how many came, were refused, and why the last one left.
    public struct FrontEndReport: Codable, Sendable {
        public var connections: Int
        /// Extra front-ends refused while one was connected.
        public var refused: Int
        /// Front-ends in a row that left within a second, before choosing features.
        public var quickLeavesInARow: Int
        public var lastLeaveReason: String?
    }

    public struct HostPortReport: Codable, Sendable {
        public var name: String
        public var index: Int
        public var interface: String
        public var queues: Int
        public var offloads: String
        public var readErrors: UInt64
        public var writeErrors: UInt64
        public var writesWhileDown: UInt64
        public var counters: PortCounters
    }

    public struct NetmapPortReport: Codable, Sendable {
        public var name: String
        public var index: Int
        public var headerLength: Int
        public var memoryID: Int
        /// "ioctl" or "kloop".
        public var sync: NetmapSyncMode
        /// kloop: "running", or how netmap's kernel loop ended ("ended: <errno>").
        public var kernelLoop: String?
        public var syncErrors: UInt64
        public var badSlots: UInt64
        public var counters: PortCounters
    }

    public struct SwitchReport: Codable, Sendable {
        public var name: String
        /// "embedded", or "netmap-cross-connect" (a guest and its netmap port, in kernel mode).
        public var kind: String
        /// Worker threads (lanes) running its data path.
        public var workers: Int
        public var learnedAddresses: Int
        public var ports: [PortReport]
        public var hostPorts: [HostPortReport]
        public var netmapPorts: [NetmapPortReport]
    }

    /// Every switch with its ports and their counters, as `stats` reports them.
    public func statistics() -> [SwitchReport] {
        topology.switches.map { s in
            s.vale.lock.withLock { _ in
                let ports = supervisor.endpoints.filter { $0.vale === s.vale }.map { e in
                    PortReport(name: e.spec.fullName, index: e.device.portIndex,
                               socket: e.spec.socketPath ?? "fd:\(e.spec.inheritedDescriptor ?? -1)",
                               mode: e.spec.mode.rawValue, queuePairs: e.spec.queuePairs,
                               connected: e.connection != nil,
                               frontEnds: FrontEndReport(connections: e.connects, refused: e.refused,
                                                         quickLeavesInARow: e.shortSessions, lastLeaveReason: e.lastLeaveReason),
                               device: e.device.statusLocked(),
                               counters: s.vale.counters(of: e.device.portIndex))
                }
                let taps = topology.hostPorts.filter { $0.vale === s.vale }.map { h in
                    HostPortReport(name: h.spec.fullName, index: h.index, interface: h.spec.interfaceName, queues: h.spec.queues,
                                   offloads: h.port.offloads.description, readErrors: h.port.readErrors,
                                   writeErrors: h.port.writeErrors, writesWhileDown: h.port.writesWhileDown, counters: s.vale.counters(of: h.index))
                }
                let netmap = topology.kernelBindings.filter { $0.vale === s.vale }.map { k in
                    NetmapPortReport(name: k.opened.name.text, index: k.index, headerLength: k.opened.headerLength,
                                     memoryID: Int(k.opened.memoryID), sync: k.opened.sync,
                                     kernelLoop: k.opened.kernelLoop.map { loop in loop.ended.map { "ended: \(Errno(rawValue: $0))" } ?? "running" },
                                     syncErrors: k.opened.port.syncErrors,
                                     badSlots: k.opened.port.badSlots, counters: s.vale.counters(of: k.index))
                }
                return SwitchReport(name: s.vale.name, kind: topology.usesKernel ? "netmap-cross-connect" : "embedded",
                                    workers: s.vale.lanes.count, learnedAddresses: s.vale.learning.entryCount, ports: ports, hostPorts: taps,
                                    netmapPorts: netmap)
            }
        }
    }

    public func statisticsJSON(pretty: Bool) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(["switches": statistics()])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

/// What a device reports of itself (the `device` part of a port report).
extension VhostNetDevice {
    public struct Status: Codable, Sendable {
        public var features: UInt64
        public var protocolFeatures: UInt64
        public var memoryRegions: Int
        public var memoryMiB: UInt64
        public var readyTX: Int
        public var readyRX: Int
        public var brokenRings: [Int]
        public var mtu: Int
        /// Present once the front-end gave a dirty log (SET_LOG_BASE).
        var dirtyLog: DirtyLogStatus?
        /// Present once there is an inflight buffer (GET/SET_INFLIGHT_FD).
        var inflight: InflightStatus?
    }

    /// Caller holds the switch lock.
    func statusLocked() -> Status {
        Status(features: features.rawValue, protocolFeatures: protocolFeatures.rawValue,
               memoryRegions: memory?.regions.count ?? 0, memoryMiB: (memory?.totalSize ?? 0) >> 20, readyTX: port.readyTXCount, readyRX: port.readyRXCount,
               brokenRings: port.queues.filter { $0.broken }.map { $0.index }, mtu: mtu, dirtyLog: dirtyLogStatus,
               inflight: inflightStatus)
    }
}
