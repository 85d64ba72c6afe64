import DataPath
import Foundation
import Glibc
import Netmap
import Synchronization
import Testing
import TestSupport
import VhostSystem
@testable import VhostNetmapBackend

/// Opens every netmap port on a `KernelModel` of its own, remembering which names were opened.
/// The port's poll descriptor is the model's readiness eventfd, so the worker sleeps and is woken
/// by the "kernel" as it is by /dev/netmap.
final class ModelOpener: NetmapPortOpening, @unchecked Sendable {
    private let models = Lock<[String: KernelModel]>([:])
    /// The sync mode the daemon asked for, per port (the model syncs like ioctls either way).
    let requestedSync = Lock<[String: NetmapSyncMode]>([:])

    func open(_ name: NetmapPortName, sync: NetmapSyncMode) throws -> OpenedNetmapPort {
        let model = KernelModel(slots: 256)
        models.withLock { $0[name.kernelName] = model }
        requestedSync.withLock { $0[name.kernelName] = sync }
        let port = try NetmapKernelPort(name: name.text, region: model.region, headerLength: 12, sync: model, pollDescriptor: model.readiness)
        return OpenedNetmapPort(name: name, port: port, memoryID: 7, sync: sync, owner: model)
    }

    func model(_ kernelName: String) -> KernelModel? { models.withLock { $0[kernelName] } }
}

/// The daemon in kernel mode, with the kernel played by `KernelModel`: each guest is
/// cross-connected to the netmap port of its own name, frames go both ways through a running
/// daemon, and the statistics describe the cross-connect.
@Suite(.serialized) struct DaemonInKernelMode {
    @Test func eachGuestIsCrossConnectedToItsNetmapPort() throws {
        let opener = ModelOpener()
        let d = try RunningDaemon(ports: ["vale0:a", "vale1:b"]) { o in
            o.netmapOpener = opener
        }
        defer { _ = d.stop() }
        let a = try SocketGuest(path: d.socket("a"), mac: 1)
        try a.start()
        a.postReceiveBuffers(32)
        guard let model = opener.model("vale0:a") else { Issue.record("vale0:a was not opened on netmap"); return }
        #expect(opener.model("vale1:b") != nil, "every port gets its own netmap port")

        let frames = (0..<3).map { ethernet(to: [2, 0, 0, 0, 0, 9], from: a.mac, payload: 100 + $0, seed: UInt8($0)) }
        a.send(frames)
        var sent: [[UInt8]] = []
        for _ in 0..<500 where sent.count < 3 { usleep(10_000); sent = model.transmittedFrames() }
        #expect(sent.map { Array($0.dropFirst(12)) } == frames, "the guest's frames reach the netmap TX ring, 12-byte header first")

        let back = ethernet(to: a.mac, from: [2, 0, 0, 0, 0, 9], payload: 200)
        model.enqueueReceive([UInt8](repeating: 0, count: 12) + back)
        #expect(a.receive(1) == [back], "a frame from the netmap RX ring reaches the guest")

        let switches = try d.stats()["switches"] as! [[String: Any]]
        let cross = switches.first { ($0["name"] as? String) == "vale0:a" }
        #expect(cross?["kind"] as? String == "netmap-cross-connect")
        let netmap = (cross?["netmapPorts"] as? [[String: Any]])?.first
        #expect(netmap?["name"] as? String == "vale0:a")
        #expect(netmap?["headerLength"] as? Int == 12 && netmap?["badSlots"] as? Int == 0)
        #expect((netmap?["counters"] as? [String: Any])?["outPackets"] as? Int == 3)
    }

    /// The worker sleeps on the netmap descriptor and every frame the kernel reports wakes it
    /// again: frames handed over one at a time, each after the worker has gone back to sleep
    /// (a poll that is not re-armed after its first completion loses all but the first).
    @Test func everyFrameFromTheKernelWakesTheSleepingWorker() throws {
        let opener = ModelOpener()
        let d = try RunningDaemon(ports: ["vale0:a"]) { o in o.netmapOpener = opener }
        defer { _ = d.stop() }
        let a = try SocketGuest(path: d.socket("a"), mac: 1)
        try a.start()
        a.postReceiveBuffers(64)
        guard let model = opener.model("vale0:a") else { Issue.record("vale0:a was not opened on netmap"); return }
        let rounds = 12
        var received: [[UInt8]] = []
        var sent: [[UInt8]] = []
        for round in 0..<rounds {
            // Idle first: a sleeping worker makes no more syncs.
            usleep(100_000)
            let before = model.syncCallCounts().rx
            usleep(100_000)
            let idleSyncs = model.syncCallCounts().rx - before
            #expect(idleSyncs <= 2, "round \(round): the worker made \(idleSyncs) rxsyncs while idle (busy-polling?)")
            let frame = ethernet(to: a.mac, from: [2, 0, 0, 0, 0, 9], payload: 60 + round, seed: UInt8(round))
            sent.append(frame)
            model.enqueueReceive([UInt8](repeating: 0, count: 12) + frame)
            received += a.receive(1, waitMilliseconds: 3_000)
        }
        #expect(received.count == rounds, "all \(rounds) frames reach the guest, each after a sleep")
        #expect(received == sent, "byte for byte")
        #expect((try d.port("vale0:a")["counters"] as? [String: Any])?["outPackets"] as? Int == rounds)
    }

    /// `--netmap-sync` is the default; a port's `sync=` overrides it; stats say which.
    @Test func eachPortGetsTheSyncModeItAsksFor() throws {
        let opener = ModelOpener()
        let spec = try PortSpec.parse("vale0:b=/x.sock,sync=ioctl")
        let d = try RunningDaemon(ports: ["vale0:a", "vale0:b"]) { o in
            o.netmapOpener = opener
            o.netmapSync = .kloop
            o.ports[1].netmapSync = spec.netmapSync
        }
        defer { _ = d.stop() }
        #expect(opener.requestedSync.withLock { $0 } == ["vale0:a": .kloop, "vale0:b": .ioctl])
        let modes = (try d.stats()["switches"] as! [[String: Any]]).compactMap { ($0["netmapPorts"] as? [[String: Any]])?.first?["sync"] as? String }
        #expect(modes.sorted() == ["ioctl", "kloop"])
        #expect(throws: PortSpec.ParseError.self) { try PortSpec.parse("vale0:c=/x.sock,sync=poll") }
    }

    @Test func detachingAKernelPortStopsItsWorkerAndReleasesTheBinding() throws {
        let opener = ModelOpener()
        let d = try RunningDaemon(ports: ["vale0:a"]) { o in
            o.netmapOpener = opener
        }
        defer { _ = d.stop() }
        let attached = String(decoding: try ControlClient.request("attach vale0:c=\(d.directory)/c.sock", socket: "\(d.directory)/control.sock"), as: UTF8.self)
        #expect(attached.hasPrefix("ok attached vale0:c"))
        #expect(opener.model("vale0:c") != nil)
        let detached = String(decoding: try ControlClient.request("detach vale0:c", socket: "\(d.directory)/control.sock"), as: UTF8.self)
        #expect(detached.hasPrefix("ok detached"))
        let names = (try d.stats()["switches"] as! [[String: Any]]).map { $0["name"] as! String }
        #expect(!names.contains("vale0:c"), "its cross-connect switch is gone")
        #expect(names.contains("vale0:a"))
    }
}
