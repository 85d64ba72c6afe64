internal import CNetmap

/// A netmap memory region as mapped by a process: a `netmap_if` at some offset, rings found
/// through `ring_ofs`, buffers by index. The kernel writes it too, so every index read from it is
/// checked before use (a buggy or hostile kernel-side peer must not make us touch memory outside
/// the region).
public struct NetmapRegion: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let size: Int
    public let interfaceOffset: Int

    /// Refuses an interface offset (`nr_offset`, from the kernel) whose `netmap_if` header would
    /// not lie inside the mapping: every later read of the interface relies on it.
    public init(base: UnsafeMutableRawPointer, size: Int, interfaceOffset: Int) throws(LayoutError) {
        guard interfaceOffset >= 0, size >= MemoryLayout<vnm_if>.size, interfaceOffset <= size - MemoryLayout<vnm_if>.size else {
            throw .outside("netmap_if at \(interfaceOffset) of a \(size)-byte region")
        }
        guard interfaceOffset % 8 == 0 else { throw .outside("netmap_if at \(interfaceOffset), not 8-byte aligned") }
        self.base = base
        self.size = size
        self.interfaceOffset = interfaceOffset
    }

    var interface: UnsafeMutablePointer<vnm_if> {
        (base + interfaceOffset).assumingMemoryBound(to: vnm_if.self)
    }

    public var txRingCount: Int { Int(interface.pointee.ni_tx_rings) }
    public var rxRingCount: Int { Int(interface.pointee.ni_rx_rings) }
    public var hostTXRingCount: Int { Int(interface.pointee.ni_host_tx_rings) }
    public var hostRXRingCount: Int { Int(interface.pointee.ni_host_rx_rings) }

    public enum LayoutError: Error, CustomStringConvertible, Equatable {
        case outside(String)
        public var description: String { switch self { case .outside(let s): "netmap region: \(s)" } }
    }

    /// The ring at position `index` of `ring_ofs` (NIC TX, host TX, NIC RX, host RX), checked to
    /// lie inside the region with its slots; nil when this descriptor did not bind it (offset 0).
    public func ring(at index: Int) throws(LayoutError) -> NetmapRing? {
        let total = txRingCount + hostTXRingCount + rxRingCount + hostRXRingCount
        guard index >= 0, index < total else { throw .outside("ring \(index) of \(total)") }
        let ofsField = interfaceOffset + MemoryLayout<vnm_if>.size + index * 8
        guard ofsField + 8 <= size else { throw .outside("ring_ofs[\(index)] beyond the region") }
        // Offsets are bounded by the region before any arithmetic on them (no overflow).
        let offset = base.loadUnaligned(fromByteOffset: ofsField, as: Int64.self)
        if offset == 0 { return nil }
        guard offset > -Int64(size), offset < Int64(size) else { throw .outside("ring \(index) at offset \(offset) from netmap_if") }
        let ringStart = interfaceOffset + Int(offset)
        guard ringStart >= 0, ringStart <= size - MemoryLayout<vnm_ring>.size, ringStart % 8 == 0 else {
            throw .outside("ring \(index) at \(ringStart)")
        }
        let ring = (base + ringStart).assumingMemoryBound(to: vnm_ring.self)
        let slots = Int(ring.pointee.num_slots)
        guard slots >= 2, slots <= (size - ringStart - MemoryLayout<vnm_ring>.size) / MemoryLayout<vnm_slot>.size else {
            throw .outside("ring \(index): \(slots) slots do not fit")
        }
        // A slot's length is 16 bits: a larger buffer could not be described by one.
        let bufferSize = Int(ring.pointee.nr_buf_size)
        guard bufferSize >= 64, bufferSize <= Int(UInt16.max) else { throw .outside("ring \(index): buffer size \(bufferSize)") }
        let bufferOffset = ring.pointee.buf_ofs
        guard bufferOffset > -Int64(size), bufferOffset < Int64(size) else { throw .outside("ring \(index): buffers at offset \(bufferOffset)") }
        let buffersStart = ringStart + Int(bufferOffset)
        guard buffersStart >= 0, buffersStart <= size else { throw .outside("ring \(index): buffers at \(buffersStart)") }
        // Buffers 0 and 1 are reserved; the last usable index is bounded by the region's end.
        let bufferCount = (size - buffersStart) / bufferSize
        return NetmapRing(ring: ring, slotCount: UInt32(slots), buffers: base + buffersStart, bufferSize: bufferSize, bufferCount: bufferCount)
    }

    public func txRing(_ i: Int) throws(LayoutError) -> NetmapRing? { try ring(at: i) }
    public func rxRing(_ i: Int) throws(LayoutError) -> NetmapRing? { try ring(at: txRingCount + hostTXRingCount + i) }
    public func hostTXRing(_ i: Int) throws(LayoutError) -> NetmapRing? { try ring(at: txRingCount + i) }
    public func hostRXRing(_ i: Int) throws(LayoutError) -> NetmapRing? { try ring(at: txRingCount + hostTXRingCount + rxRingCount + i) }

    /// The rings a port moves frames on, per direction: the NIC (or VALE, pipe) rings this
    /// descriptor bound, or its host rings when it bound only those (`eth0^`). The kernel orders
    /// a binding's rings NIC first, then host, so these are always the first `tx.count` and
    /// `rx.count` of the bound ones; `boundTX` counts all bound TX rings (the kernel loop's CSB
    /// has one entry per bound ring, TX first).
    public func portRings() throws(LayoutError) -> (tx: [NetmapRing], rx: [NetmapRing], boundTX: Int, boundRX: Int) {
        var nicTX: [NetmapRing] = [], nicRX: [NetmapRing] = [], hostTX: [NetmapRing] = [], hostRX: [NetmapRing] = []
        for i in 0..<txRingCount { if let r = try txRing(i) { nicTX.append(r) } }
        for i in 0..<rxRingCount { if let r = try rxRing(i) { nicRX.append(r) } }
        for i in 0..<hostTXRingCount { if let r = try hostTXRing(i) { hostTX.append(r) } }
        for i in 0..<hostRXRingCount { if let r = try hostRXRing(i) { hostRX.append(r) } }
        return (nicTX.isEmpty ? hostTX : nicTX, nicRX.isEmpty ? hostRX : nicRX,
                nicTX.count + hostTX.count, nicRX.count + hostRX.count)
    }
}

/// One netmap ring seen from user space: we own slots [head, tail) and move head/cur; the
/// kernel owns the rest and moves tail during a sync.
public struct NetmapRing: @unchecked Sendable {
    let ring: UnsafeMutablePointer<vnm_ring>
    let buffers: UnsafeMutableRawPointer
    public let bufferSize: Int
    /// Buffers addressable from this ring (indices below this stay inside the region).
    public let bufferCount: Int

    init(ring: UnsafeMutablePointer<vnm_ring>, slotCount: UInt32, buffers: UnsafeMutableRawPointer, bufferSize: Int, bufferCount: Int) {
        self.ring = ring
        self.slotCount = slotCount
        self.buffers = buffers
        self.bufferSize = bufferSize
        self.bufferCount = bufferCount
    }

    public static let moreFragments: UInt16 = UInt16(VNM_NS_MOREFRAG)
    public static let bufferChanged: UInt16 = UInt16(VNM_NS_BUF_CHANGED)
    public static let maxFragments = Int(VNM_MAX_FRAGS)

    /// num_slots as validated when the ring was found: the region is writable by the kernel and
    /// by other processes on the same allocator, so a later value is never trusted.
    public let slotCount: UInt32
    /// The ring's index among its port's rings of its direction.
    public var ringID: UInt16 { ring.pointee.ringid }
    public var head: UInt32 {
        get { ring.pointee.head }
        nonmutating set { ring.pointee.head = newValue }
    }
    public var cur: UInt32 {
        get { ring.pointee.cur }
        nonmutating set { ring.pointee.cur = newValue }
    }
    /// Written by the kernel during an ioctl sync; in kernel-loop mode the kernel reports hwtail
    /// through the CSB instead and `KernelLoopSync` copies it here.
    public internal(set) var tail: UInt32 {
        get { ring.pointee.tail }
        nonmutating set { ring.pointee.tail = newValue }
    }

    @inline(__always)
    public func next(_ i: UInt32) -> UInt32 { i &+ 1 == slotCount ? 0 : i &+ 1 }

    /// Slots from `from` up to `tail` (what we own ahead of `from`).
    @inline(__always)
    public func distance(from: UInt32, to: UInt32) -> UInt32 { to >= from ? to &- from : to &+ slotCount &- from }

    /// Slot `i`: buffer index, length, flags.
    @inline(__always)
    public func slot(_ i: UInt32) -> (buffer: UInt32, length: UInt16, flags: UInt16) {
        let p = UnsafeMutableRawPointer(ring).advanced(by: MemoryLayout<vnm_ring>.size + Int(i) &* 16)
        return (p.load(as: UInt32.self), p.load(fromByteOffset: 4, as: UInt16.self), p.load(fromByteOffset: 6, as: UInt16.self))
    }

    @inline(__always)
    public func setSlot(_ i: UInt32, length: UInt16, flags: UInt16) {
        let p = UnsafeMutableRawPointer(ring).advanced(by: MemoryLayout<vnm_ring>.size + Int(i) &* 16)
        p.storeBytes(of: length, toByteOffset: 4, as: UInt16.self)
        p.storeBytes(of: flags, toByteOffset: 6, as: UInt16.self)
    }

    /// The buffer with index `index`, or nil if the index is reserved or outside the region.
    @inline(__always)
    public func buffer(_ index: UInt32) -> UnsafeMutableRawPointer? {
        guard index >= 2, Int(index) < bufferCount else { return nil }
        return buffers + Int(index) &* bufferSize
    }
}

/// The kernel's side of the rings: NIOCTXSYNC / NIOCRXSYNC on a registered descriptor, netmap's
/// sync kernel loop (`KernelLoopSync`), or, in tests, a model of the kernel working on the same
/// memory. Called once per batch.
open class NetmapSync: @unchecked Sendable {
    public init() {}
    /// Sends what is before head on every TX ring; returns 0 or an errno.
    open func txsync() -> Int32 { 0 }
    /// Releases what is before head on every RX ring and reports new slots; 0 or an errno.
    open func rxsync() -> Int32 { 0 }
    /// Refreshes the TX rings' free space (tail) without sending (a full ring, before dropping).
    open func refreshTransmitSpace() {}
    /// Eventfds the kernel signals when frames arrive while notifications are enabled (the
    /// kernel loop's irqfds); an ioctl binding is polled on its descriptor instead.
    open var notificationDescriptors: [CInt] { [] }
    /// Before the worker sleeps: ask for notifications, then refresh the RX rings' tails so a
    /// frame that arrived meanwhile shows.
    open func enableNotifications() {}
    /// After the worker woke: notifications off again while it polls.
    open func disableNotifications() {}
}

/// The real kernel: ioctls on the descriptor that registered the port.
public final class KernelSync: NetmapSync, @unchecked Sendable {
    let fd: CInt
    public init(fd: CInt) { self.fd = fd }
    public override func txsync() -> Int32 { -vnm_txsync(fd) }
    public override func rxsync() -> Int32 { -vnm_rxsync(fd) }
}
