import Glibc
import DataPath
import Testing
import VALESwitch
@testable import VhostNetmapBackend
import VhostSystem
import Virtio

/// TAP host ports against the real kernel: a guest's frames reach the host stack through the
/// TAP (seen by an AF_PACKET socket on it, which sits where the stack receives), and the host's
/// frames reach the guest. Needs root and /dev/net/tun.
private let tapAvailable = geteuid() == 0 && access("/dev/net/tun", R_OK | W_OK) == 0

@Suite(.enabled(if: tapAvailable, "needs root and /dev/net/tun for TAP devices"), .serialized)
struct HostPortOverTap {
    static func tapName(_ tag: String) -> String { "vnt\(getpid() % 100_000)\(tag)" }

    /// Ethernet + IPv4 + TCP (no options) + `payload` bytes, IPv4 header checksum filled, TCP
    /// checksum left to whoever completes it (it holds garbage here, as nobody checks it).
    static func tcpFrame(payload: Int, from src: [UInt8], to dst: [UInt8]) -> [UInt8] {
        var f = dst + src + [0x08, 0x00]
        let total = 40 + payload
        var ip: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0x12, 0x34, 0x40, 0, 64, 6, 0, 0,
                           10, 99, 0, 1, 10, 99, 0, 2]
        var sum: UInt32 = 0
        for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(ip[i]) << 8 | UInt32(ip[i + 1]) }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        ip[10] = UInt8((~sum >> 8) & 0xff); ip[11] = UInt8(~sum & 0xff)
        f += ip
        f += [0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]
        f += (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        return f
    }

    static func tsoHeader(segment: UInt16) -> VirtioNetHeader {
        var h = VirtioNetHeader()
        h.flags = VirtioNetHeader.needsChecksum
        h.gsoType = VirtioNetHeader.gsoTCPv4
        h.headerLength = 54
        h.gsoSize = segment
        h.checksumStart = 34
        h.checksumOffset = 16
        return h
    }

    /// Reads frames from a packet socket (10-byte header first) until one matches, or gives up
    /// after `attempts` empty polls of 10 ms.
    static func receive(on socket: OwnedDescriptor, attempts: Int = 300, where matches: ([UInt8]) -> Bool) -> (VirtioNetHeader, [UInt8])? {
        var buffer = [UInt8](repeating: 0, count: 70000)
        for _ in 0..<attempts {
            var pfd = pollfd(fd: socket.rawValue, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 10) == 1 else { continue }
            let n = buffer.withUnsafeMutableBytes { recv(socket.rawValue, $0.baseAddress, $0.count, 0) }
            guard n > 10 else { continue }
            let frame = Array(buffer[10..<n])
            if matches(frame) { return (buffer.withUnsafeBytes { VirtioNetHeader(bytes: $0.baseAddress!, length: 10) }, frame) }
        }
        return nil
    }

    @Test func guestTSOSegmentReachesTheHostStackWhole() throws {
        let vale = VALESwitch(name: "vale0")
        let guest = try TestGuest("g", on: vale, mac: 1)
        try guest.start()
        let name = Self.tapName("a")
        let tap = try TapPort(name: name, queues: 1, mtu: nil, logger: quietLogger)
        _ = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(tap, named: name) }
        let capture = try PacketSocket.open(interface: name, virtioNetHeader: true)

        let frame = Self.tcpFrame(payload: 20000, from: guest.mac, to: [2, 0, 0, 0, 0, 0xfe])
        guest.send(frame, header: Self.tsoHeader(segment: 1448))
        pump(vale)
        tap.flushDeliveries()
        let got = Self.receive(on: capture) { $0.count > 1000 }
        #expect(got?.1.count == frame.count)
        #expect(got?.1 == frame, "the 20 054-byte frame arrives whole, byte for byte")
        #expect(got?.0.gsoType == VirtioNetHeader.gsoTCPv4)
        #expect(got?.0.gsoSize == 1448)
        #expect(tap.writeErrors == 0)
        vale.lock.withLock { _ in #expect(vale.counters(of: 1).outPackets >= 1) }
    }

    @Test func hostSegmentsReachTheGuestWholeOrSegmentedByTheOffloadsSet() throws {
        let vale = VALESwitch(name: "vale0")
        let guest = try TestGuest("g", on: vale, mac: 1)
        try guest.start()
        guest.postReceiveBuffers(200)
        let name = Self.tapName("b")
        let tap = try TapPort(name: name, queues: 1, mtu: nil, logger: quietLogger)
        let tapIndex = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(tap, named: name) }
        let inject = try PacketSocket.open(interface: name, virtioNetHeader: true)
        let frame = Self.tcpFrame(payload: 20000, from: [2, 0, 0, 0, 0, 0xfe], to: guest.mac)

        func sendFromHost() throws {
            var bytes = [UInt8](repeating: 0, count: 10)
            bytes.withUnsafeMutableBytes { Self.tsoHeader(segment: 1448).store(to: $0.baseAddress!, length: 10) }
            bytes += frame
            let n = bytes.withUnsafeBytes { send(inject.rawValue, $0.baseAddress, $0.count, 0) }
            #expect(n == bytes.count, "packet socket send: errno \(errno)")
        }
        func collect(until enough: ([TestGuest.Received]) -> Bool) -> [TestGuest.Received] {
            var frames: [TestGuest.Received] = []
            for _ in 0..<300 {
                vale.lock.withLock { _ in _ = vale.runPass(budget: 32) }
                frames += guest.receive().filter { $0.frame.count > 34 && $0.frame[12] == 0x08 && $0.frame[23] == 6 }
                if enough(frames) { break }
                usleep(10_000)
            }
            return frames
        }

        // With TSO allowed, the host hands over the 20 000-byte segment whole.
        tap.setOffloads(.all)
        try sendFromHost()
        let whole = collect { !$0.isEmpty }
        #expect(whole.count == 1)
        #expect(whole.first?.frame.count == frame.count)
        #expect(whole.first?.frame == frame, "byte for byte")
        #expect(whole.first?.header.gsoType == VirtioNetHeader.gsoTCPv4)

        // Without offloads (a guest that cannot take them), the host stack segments and
        // checksums in software: the guest gets MTU-sized frames carrying the same payload.
        tap.setOffloads([])
        guest.postReceiveBuffers(200)
        try sendFromHost()
        let segments = collect { $0.reduce(0) { $0 + $1.frame.count - 54 } >= 20000 }
        #expect(segments.count == (20000 + 1447) / 1448)
        #expect(segments.allSatisfy { $0.frame.count <= 1514 && $0.header.gsoType == VirtioNetHeader.gsoNone })
        #expect(Array(segments.map { $0.frame[54...] }.joined()) == Array(frame[54...]))
        vale.lock.withLock { _ in #expect(vale.counters(of: tapIndex).inPackets >= UInt64(1 + segments.count)) }
        #expect(tap.readErrors == 0)
    }

    @Test func multiQueueTapCarriesEveryGuestQueuePair() throws {
        let vale = VALESwitch(name: "vale0")
        let guest = try TestGuest("g", on: vale, mac: 1, queuePairs: 2)
        try guest.start(pairs: 2)
        let name = Self.tapName("c")
        let tap = try TapPort(name: name, queues: 2, mtu: 9000, logger: quietLogger)
        _ = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(tap, named: name) }
        #expect(try Tap.mtu(name) == 9000)
        let capture = try PacketSocket.open(interface: name, virtioNetHeader: true)
        for pair in 0..<2 {
            guest.send(ethernet(to: [2, 0, 0, 0, 0, 0xfe], from: guest.mac, payload: 100, seed: UInt8(pair)), pair: pair)
        }
        pump(vale)
        tap.flushDeliveries()
        var seeds: Set<UInt8> = []
        for _ in 0..<2 {
            if let (_, f) = Self.receive(on: capture, where: { $0.count == 114 && $0[0..<6] == [2, 0, 0, 0, 0, 0xfe] }) { seeds.insert(f[14]) }
        }
        #expect(seeds == [0, 1], "a frame from each queue pair reached the host")
    }

    @Test func anExistingPersistentTapIsAttachedAndOutlivesThePort() throws {
        let name = Self.tapName("d")
        #expect(system("ip tuntap add dev \(name) mode tap") == 0)
        defer { _ = system("ip link del \(name) 2>/dev/null") }
        do {
            _ = try TapPort(name: name, queues: 2, mtu: nil, logger: quietLogger)
            Issue.record("two queues on a tap made without multi_queue should be refused")
        } catch {
            #expect("\(error)".contains("created with multi_queue"))
        }
        do {
            let port = try TapPort(name: name, queues: 1, mtu: 1400, logger: quietLogger)
            #expect(try Tap.mtu(name) == 1400)
            _ = port
        }
        #expect(Tap.exists(name), "a persistent tap stays when the port closes")
    }
}
