import Glibc
import Testing
import TestSupport
import VALESwitch
@testable import VhostNetmapBackend
import VhostSystem
import VhostUser
import Virtio

@Suite struct InflightDevice {
    /// A packed guest's back-end "dies" (its device and switch are dropped, nothing stopped) and
    /// a new one serves it; the front-end sends the initial base, as QEMU does for packed rings.
    /// With the inflight buffer handed back, the rings resume where they were; without it, the
    /// transmit ring is refused as stale (the state before INFLIGHT_SHMFD).
    @Test(arguments: [true, false]) func aPackedRingResumesOnARestartedBackEnd(withBuffer: Bool) throws {
        let p = try PackedGuest("p", on: VALESwitch(name: "vale0"), mac: 7)
        p.keepsInflightBuffer = withBuffer
        var vale = VALESwitch(name: "vale0")
        p.device = try VhostNetDevice(name: "vale0:p", queuePairs: 1, vale: vale, logger: quietLogger, wakeWorker: {})
        var b = try TestGuest("b", on: vale, mac: 2)
        try p.start()
        try b.start()
        #expect(p.device.protocolFeatures.contains(.inflightSHMFD))
        b.postReceiveBuffers(64)
        p.postReceiveBuffers(8)
        var sent = 0
        var received = 0
        for restart in 0..<4 {
            // Enough frames that the packed rings are well into a lap (or past one).
            for k in 0..<(7 + restart) {
                p.send(ethernet(to: b.mac, from: p.mac, payload: 60 + k, seed: UInt8(k)))
                sent += 1
                pump(vale)
                received += b.receive().count
            }
            b.postReceiveBuffers(16)
            vale = VALESwitch(name: "vale0")
            p.device = try VhostNetDevice(name: "vale0:p", queuePairs: 1, vale: vale, logger: quietLogger, wakeWorker: {})
            b = try TestGuest("b", on: vale, mac: 2)
            try p.start()
            try b.start()
            b.postReceiveBuffers(64)
            let report = p.device.statusLocked()
            if !withBuffer {
                if !report.brokenRings.isEmpty { return }  // the stale base refused, as documented
                continue
            }
            #expect(report.brokenRings.isEmpty, "restart \(restart): \(report)")
            // Both ways across the restarted back-end.
            let toB = ethernet(to: b.mac, from: p.mac, payload: 99, seed: UInt8(restart))
            p.send(toB)
            sent += 1
            pump(vale)
            let got = b.receive()
            received += got.count
            #expect(got.map(\.frame) == [toB], "restart \(restart): p -> b")
            let toP = ethernet(to: p.mac, from: b.mac, payload: 77, seed: UInt8(restart))
            b.send(toP)
            pump(vale)
            #expect(p.receive() == [toP], "restart \(restart): b -> p")
            p.postReceiveBuffers(1)
        }
        if !withBuffer {
            Issue.record("without the inflight buffer a stale packed base was expected to break a ring")
            return
        }
        #expect(received == sent, "every frame delivered once: \(received) of \(sent)")
        _ = p.tx.reapUsed()
    }

    @Test func inflightRequestsAreValidatedAndBystandersKeepWorking() throws {
        let vale = VALESwitch(name: "vale0")
        let a = try TestGuest("a", on: vale, mac: 1)
        let b = try TestGuest("b", on: vale, mac: 2)
        let h = try TestGuest("h", on: vale, mac: 3)
        try a.start()
        try b.start()
        func d(_ queues: UInt16, _ size: UInt16, mmapSize: UInt64 = 0, offset: UInt64 = 0) -> [UInt8] {
            InflightBufferDescription(mmapSize: mmapSize, mmapOffset: offset, queueCount: queues, queueSize: size).encoded()
        }
        // Before INFLIGHT_SHMFD is negotiated.
        #expect(throws: ProtocolError.refused(.getInflightFD, .notNegotiated(.inflightSHMFD))) { try h.handle(message(.getInflightFD, d(2, 256))) }
        try h.handle(message(.setProtocolFeatures, u64(VhostNetDevice.offeredProtocolFeatures.rawValue)))
        // Sizes: more queues than the device has, none, rings beyond 32768, a payload of 20 bytes.
        for (queues, size) in [(3, 256), (0, 256), (2, 0)] as [(UInt16, UInt16)] {
            #expect(throws: ProtocolError.self) { try h.handle(message(.getInflightFD, d(queues, size))) }
        }
        #expect(throws: ProtocolError.badPayloadSize(.getInflightFD, got: 20, expected: "24")) { try h.handle(message(.getInflightFD, Array(d(2, 256).prefix(20)))) }
        guard case .replyWithDescriptor(let bytes, let fd) = try h.handle(message(.getInflightFD, d(2, 256))) else {
            Issue.record("no descriptor"); return
        }
        let given = bytes.withUnsafeBytes { InflightBufferDescription($0) }
        #expect(bytes.count == 24 && given.queueCount == 2 && given.queueSize == 256 && given.mmapSize == 2 * UInt64(InflightRegion.stride(queueSize: 256)))
        #expect(try Posix.fileSize(fd.rawValue) == given.mmapSize)
        // SET_INFLIGHT_FD: no descriptor, an eventfd, a short file, a size that does not match.
        #expect(throws: ProtocolError.self) { try h.handle(message(.setInflightFD, given.encoded())) }
        #expect(throws: ProtocolError.self) { try h.handle(message(.setInflightFD, given.encoded(), fds: [try EventFD.make()])) }
        #expect(throws: ProtocolError.self) { try h.handle(message(.setInflightFD, given.encoded(), fds: [try MemFD.make(name: "short", size: 4096)])) }
        #expect(throws: ProtocolError.self) { try h.handle(message(.setInflightFD, d(2, 256, mmapSize: 64), fds: [fd])) }
        #expect(throws: ProtocolError.self) { try h.handle(message(.setInflightFD, d(2, 256, mmapSize: given.mmapSize, offset: UInt64.max - 63), fds: [fd])) }
        try h.handle(message(.setInflightFD, given.encoded(), fds: [fd]))
        b.postReceiveBuffers(4)
        let frame = ethernet(to: b.mac, from: a.mac, payload: 70)
        a.send(frame)
        pump(vale)
        #expect(b.receive().map(\.frame) == [frame], "the bystanders still exchange frames")
    }
}
