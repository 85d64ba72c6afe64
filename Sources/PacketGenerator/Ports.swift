import CVhostShim
import Glibc
import Netmap
import SystemPackage
import VhostSystem
import VhostUser
import Virtio

/// Where pkt-gen sends and receives: one interface, one queue. Called per batch.
public protocol PacketPort: AnyObject {
    var macAddress: [UInt8]? { get }
    /// Queues up to `count` frames, each written by `fill(buffer, capacity) -> length`.
    func send(count: Int, fill: (UnsafeMutableRawPointer, Int) -> Int) -> Int
    /// Hands queued frames to the peer (kick, sendto, txsync).
    func flush()
    /// Gives up to `max` received frames to `body`; returns how many.
    func receive(max: Int, _ body: (UnsafeRawPointer, Int) -> Void) -> Int
    /// Free transmit slots now.
    var transmitSpace: Int { get }
    /// Sleeps until something may be received, at most `milliseconds`.
    func waitForReceive(milliseconds: Int32)
    /// Frames the interface dropped before pkt-gen could take them, where it can tell (AF_PACKET).
    var receiveDrops: UInt64? { get }
    /// Waits (at most `milliseconds`) until the peer has taken every queued frame, so that
    /// closing the interface loses nothing that was counted as sent.
    func drain(milliseconds: Int)
    /// What the interface's connection went through, printed after the summary (vhost-user).
    var connectionReport: String? { get }
}

extension PacketPort {
    public var receiveDrops: UInt64? { nil }
    public func drain(milliseconds: Int) {}
    public var connectionReport: String? { nil }
}

public struct PortError: Error, CustomStringConvertible {
    public let description: String
}

/// Waits up to `milliseconds` for `fd` to be readable.
func waitReadable(_ fd: CInt, milliseconds: Int32) {
    var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    _ = poll(&pfd, 1, milliseconds)
}

public func openPort(_ name: String, options: Options) throws -> PacketPort {
    for (prefix, packed) in [("vhost-user:", false), ("vhost-user-packed:", true)] where name.hasPrefix(prefix) {
        // PATH[,reconnect]: a front-end that outlives its back-end (QEMU's reconnect=1).
        var path = String(name.dropFirst(prefix.count))
        let reconnect = path.hasSuffix(",reconnect")
        if reconnect { path.removeLast(",reconnect".count) }
        return try VhostUserPort(path: path, packed: packed, reconnect: reconnect)
    }
    if name.hasPrefix("tap:") { return try TapPlainPort(name: String(name.dropFirst(4))) }
    if name.hasPrefix("tap") { return try TapPlainPort(name: name) }
    if name.hasPrefix("vale") || name.hasPrefix("netmap:") {
        guard NetmapAvailability.probe().isAvailable else {
            throw PortError(description: "\(name): netmap ports need the netmap kernel module (/dev/netmap); use an interface name for AF_PACKET")
        }
        return try NetmapPacketPort(name: name, headerLength: options.virtioHeaderLength)
    }
    return try PacketMMapPort(interface: name)
}

// MARK: AF_PACKET with PACKET_MMAP

/// A packet socket on a network interface with TPACKET_V2 receive and transmit rings: what a
/// guest without netmap uses.
public final class PacketMMapPort: PacketPort {
    static let frameSize = 2048
    static let frames = 1024
    let socket: OwnedDescriptor
    var drops: UInt64 = 0
    public var receiveDrops: UInt64? {
        let d = cvh_packet_ring_drops(socket.rawValue)
        if d > 0 { drops += UInt64(d) }
        return drops
    }
    let rings: UnsafeMutableRawPointer
    let dataOffset: Int
    var rxIndex = 0
    var txIndex = 0
    public let macAddress: [UInt8]?

    public init(interface: String) throws {
        do {
            socket = try PacketSocket.open(interface: interface, virtioNetHeader: false)
        } catch {
            throw PortError(description: "\(interface): AF_PACKET socket: \(error)")
        }
        var mapped: UnsafeMutableRawPointer?
        let rc = cvh_packet_rings(socket.rawValue, UInt32(Self.frameSize), UInt32(Self.frames), &mapped)
        guard rc == 0, let p = mapped else {
            throw PortError(description: "\(interface): PACKET_MMAP rings: \(Errno(rawValue: -rc))")
        }
        rings = p
        dataOffset = Int(cvh_tpacket2_data_offset())
        var mac = [UInt8](repeating: 0, count: 6)
        macAddress = cvh_if_mac(interface, &mac) == 0 ? mac : nil
    }

    func rxFrame(_ i: Int) -> UnsafeMutableRawPointer { rings + i * Self.frameSize }
    func txFrame(_ i: Int) -> UnsafeMutableRawPointer { rings + (Self.frames + i) * Self.frameSize }

    public var transmitSpace: Int {
        var free = 0
        for k in 0..<Self.frames where cvh_tpacket2_status(txFrame((txIndex + k) % Self.frames)) == CVH_TP_STATUS_AVAILABLE { free += 1 }
        return free
    }

    public func send(count: Int, fill: (UnsafeMutableRawPointer, Int) -> Int) -> Int {
        var sent = 0
        while sent < count {
            let f = txFrame(txIndex)
            let status = cvh_tpacket2_status(f)
            if status == CVH_TP_STATUS_WRONG_FORMAT { cvh_tpacket2_set_status(f, CVH_TP_STATUS_AVAILABLE) }
            guard cvh_tpacket2_status(f) == CVH_TP_STATUS_AVAILABLE else { break }
            let length = fill(f + dataOffset, Self.frameSize - dataOffset)
            cvh_tpacket2_set_len(f, UInt32(length))
            cvh_tpacket2_set_status(f, CVH_TP_STATUS_SEND_REQUEST)
            txIndex = (txIndex + 1) % Self.frames
            sent += 1
        }
        return sent
    }

    public func flush() { _ = cvh_packet_tx_kick(socket.rawValue) }

    public func drain(milliseconds: Int) {
        for _ in 0..<max(1, milliseconds) {
            if transmitSpace == Self.frames { return }
            flush()
            usleep(1000)
        }
    }

    public func receive(max: Int, _ body: (UnsafeRawPointer, Int) -> Void) -> Int {
        var n = 0
        while n < max {
            let f = rxFrame(rxIndex)
            guard cvh_tpacket2_status(f) & CVH_TP_STATUS_USER != 0 else { break }
            // Frames this host sends out on the interface are seen too: count only arrivals.
            if cvh_tpacket2_pkttype(f) != 4 {
                body(UnsafeRawPointer(f) + Int(cvh_tpacket2_mac(f)), Int(cvh_tpacket2_len(f)))
                n += 1
            }
            cvh_tpacket2_set_status(f, CVH_TP_STATUS_KERNEL)
            rxIndex = (rxIndex + 1) % Self.frames
        }
        return n
    }

    public func waitForReceive(milliseconds: Int32) { waitReadable(socket.rawValue, milliseconds: milliseconds) }
}

// MARK: TAP

/// A TAP interface without a virtio-net header: one read or write per frame.
public final class TapPlainPort: PacketPort {
    let fd: OwnedDescriptor
    var buffer = [UInt8](repeating: 0, count: 65536)
    public var macAddress: [UInt8]? { nil }
    public var transmitSpace: Int { 1 }

    public init(name: String) throws {
        let rc = cvh_tap_open_plain(name)
        guard rc >= 0 else { throw PortError(description: "tap \(name): \(Errno(rawValue: -rc))") }
        fd = OwnedDescriptor(adopting: rc)
        try? Tap.setUp(name)
    }

    public func send(count: Int, fill: (UnsafeMutableRawPointer, Int) -> Int) -> Int {
        var sent = 0
        buffer.withUnsafeMutableBytes { raw in
            while sent < count {
                let n = fill(raw.baseAddress!, raw.count)
                if write(fd.rawValue, raw.baseAddress, n) != n { break }
                sent += 1
            }
        }
        return sent
    }

    public func flush() {}

    public func receive(max: Int, _ body: (UnsafeRawPointer, Int) -> Void) -> Int {
        var n = 0
        buffer.withUnsafeMutableBytes { raw in
            while n < max {
                let r = read(fd.rawValue, raw.baseAddress, raw.count)
                if r <= 0 { break }
                body(raw.baseAddress!, r)
                n += 1
            }
        }
        return n
    }

    public func waitForReceive(milliseconds: Int32) { waitReadable(fd.rawValue, milliseconds: milliseconds) }
}

// MARK: netmap

/// A netmap port through the package's netmap module (needs /dev/netmap).
public final class NetmapPacketPort: PacketPort {
    let registration: NetmapRegistration
    let sync: KernelSync
    let txRing: NetmapRing
    let rxRing: NetmapRing
    let headerLength: Int
    public var macAddress: [UInt8]? { nil }

    public init(name: String, headerLength wanted: Int) throws {
        registration = try NetmapRegistration(try NetmapPortName.parse(name), wantedHeader: wanted)
        sync = KernelSync(fd: registration.descriptor.rawValue)
        guard let t = try registration.region.txRing(0), let r = try registration.region.rxRing(0) else {
            throw PortError(description: "\(name): no rings bound")
        }
        txRing = t
        rxRing = r
        headerLength = registration.headerLength
    }

    public var transmitSpace: Int { Int(txRing.distance(from: txRing.cur, to: txRing.tail)) }

    public func send(count: Int, fill: (UnsafeMutableRawPointer, Int) -> Int) -> Int {
        var sent = 0
        var cur = txRing.cur
        while sent < count && cur != txRing.tail {
            let s = txRing.slot(cur)
            guard let b = txRing.buffer(s.buffer) else { break }
            memset(b, 0, headerLength)
            let n = fill(b + headerLength, txRing.bufferSize - headerLength)
            txRing.setSlot(cur, length: UInt16(n + headerLength), flags: 0)
            cur = txRing.next(cur)
            sent += 1
        }
        txRing.cur = cur
        return sent
    }

    public func flush() {
        txRing.head = txRing.cur
        _ = sync.txsync()
    }

    public func drain(milliseconds: Int) {
        // Transmissions are pending while next(tail) != head.
        for _ in 0..<max(1, milliseconds) {
            if txRing.next(txRing.tail) == txRing.head { return }
            _ = sync.txsync()
            usleep(1000)
        }
    }

    public func receive(max: Int, _ body: (UnsafeRawPointer, Int) -> Void) -> Int {
        if rxRing.head == rxRing.tail { _ = sync.rxsync() }
        var n = 0
        var head = rxRing.head
        while head != rxRing.tail && n < max {
            let s = rxRing.slot(head)
            if let b = rxRing.buffer(s.buffer), Int(s.length) > headerLength {
                body(UnsafeRawPointer(b) + headerLength, Int(s.length) - headerLength)
                n += 1
            }
            head = rxRing.next(head)
        }
        rxRing.head = head
        rxRing.cur = head
        return n
    }

    public func waitForReceive(milliseconds: Int32) { waitReadable(registration.descriptor.rawValue, milliseconds: milliseconds) }
}
