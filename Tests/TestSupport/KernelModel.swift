import CNetmap
import Netmap
import VhostSystem
import Synchronization

/// A test double for the netmap kernel module's side of the rings: memory laid out as netmap lays
/// it out (a `netmap_if` at an offset inside the region, rings found through `ring_ofs`, slots,
/// buffers by index, indices 0 and 1 reserved), and txsync/rxsync with the kernel's rules:
/// head and cur must satisfy hwcur ≤ head ≤ cur ≤ hwtail (circularly), otherwise the ring is
/// silently reset (head = cur = hwcur, tail = hwtail); a tail changed by user space is
/// overwritten; TX sends [hwcur, head) and frees the slots; RX releases [hwcur, head) and fills
/// new frames after hwtail, with NS_MOREFRAG on every fragment but the last.
public final class KernelModel: NetmapSync, @unchecked Sendable {
    public let memory: UnsafeMutableRawPointer
    public let size: Int
    public let region: NetmapRegion
    public let slots: Int
    public let bufferSize: Int
    public let interfaceOffset = 4096 + 128
    var rings: [UnsafeMutablePointer<vnm_ring>] = []
    var hwcur: [UInt32] = []
    var hwtail: [UInt32] = []
    let txCount: Int
    let rxCount: Int
    var partial: [[UInt8]]

    /// Frames the kernel took from TX rings (fragments joined), in order.
    public var transmitted: [[UInt8]] = []
    /// Frames waiting to be handed to user space at the next rxsync.
    public var pendingReceive: [[UInt8]] = []
    /// Rings reset because of a bad head or cur.
    public var resets = 0
    /// TX slots with a buffer index the kernel would refuse.
    public var badTransmitSlots = 0
    /// When false, txsync sends but does not give slots back (a stalled NIC): the ring fills.
    public var freesTransmitSlots = true
    public private(set) var txsyncCalls = 0
    public private(set) var rxsyncCalls = 0
    /// Serialises the syncs (called by a switch worker) with the accessors below (a test thread).
    let lock = Lock<Void>(())

    /// Polls readable as a netmap descriptor does: while frames wait for user space, either
    /// queued for the next rxsync or reported by the last one and not yet released (level
    /// triggered; an eventfd set and cleared under `lock`).
    private let readinessEventFD: OwnedDescriptor
    public var readiness: CInt { readinessEventFD.rawValue }

    /// How often each sync ran (thread-safe).
    public func syncCallCounts() -> (tx: Int, rx: Int) { lock.withLock { _ in (txsyncCalls, rxsyncCalls) } }
    /// Frames sent so far (thread-safe).
    public func transmittedFrames() -> [[UInt8]] { lock.withLock { _ in transmitted } }
    /// Hands `frame` to user space at a coming rxsync (thread-safe); the readiness descriptor
    /// polls readable from now on.
    public func enqueueReceive(_ frame: [UInt8]) {
        lock.withLock { _ in
            pendingReceive.append(frame)
            updateReadiness()
        }
    }

    func updateReadiness() {
        let waiting = !pendingReceive.isEmpty || (0..<rxCount).contains { rings[txCount + $0].pointee.head != hwtail[txCount + $0] }
        if waiting { EventFD.signal(readiness) } else { EventFD.drain(readiness) }
    }

    public init(txRings: Int = 1, rxRings: Int = 1, slots: Int = 64, bufferSize: Int = 2048) {
        self.slots = slots
        self.bufferSize = bufferSize
        readinessEventFD = try! EventFD.make()
        txCount = txRings
        rxCount = rxRings
        partial = Array(repeating: [], count: txRings)
        let ringBytes = MemoryLayout<vnm_ring>.size + slots * MemoryLayout<vnm_slot>.size
        let ringsStart = interfaceOffset + 1024
        let ringCount = txRings + rxRings
        let buffersStart = ringsStart + ringCount * ringBytes
        let bufferTotal = 2 + ringCount * slots
        size = buffersStart + bufferTotal * bufferSize
        memory = .allocate(byteCount: size, alignment: 4096)
        memory.initializeMemory(as: UInt8.self, repeating: 0xA5, count: size)
        let nifp = (memory + interfaceOffset).assumingMemoryBound(to: vnm_if.self)
        nifp.pointee = vnm_if()
        nifp.pointee.ni_version = 14
        nifp.pointee.ni_tx_rings = UInt32(txRings)
        nifp.pointee.ni_rx_rings = UInt32(rxRings)
        // VALE ports have (unbound) fake host rings: one each way, offset 0.
        nifp.pointee.ni_host_tx_rings = 1
        nifp.pointee.ni_host_rx_rings = 1
        let ofs = (memory + interfaceOffset + MemoryLayout<vnm_if>.size).assumingMemoryBound(to: Int64.self)
        var nextBuffer: UInt32 = 2
        for r in 0..<ringCount {
            let start = ringsStart + r * ringBytes
            let isTX = r < txRings
            // ring_ofs order: NIC TX, host TX, NIC RX, host RX.
            let slotInTable = isTX ? r : txRings + 1 + (r - txRings)
            ofs[slotInTable] = Int64(start - interfaceOffset)
            let ring = (memory + start).assumingMemoryBound(to: vnm_ring.self)
            UnsafeMutableRawPointer(ring).initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<vnm_ring>.size)
            ring.pointee.buf_ofs = Int64(buffersStart - start)
            ring.pointee.num_slots = UInt32(slots)
            ring.pointee.nr_buf_size = UInt32(bufferSize)
            ring.pointee.ringid = UInt16(isTX ? r : r - txRings)
            ring.pointee.dir = isTX ? 0 : 1
            ring.pointee.head = 0
            ring.pointee.cur = 0
            ring.pointee.tail = isTX ? UInt32(slots - 1) : 0
            for s in 0..<slots {
                let slot = (memory + start + MemoryLayout<vnm_ring>.size + s * 16)
                slot.storeBytes(of: nextBuffer, as: UInt32.self)
                slot.storeBytes(of: UInt16(0), toByteOffset: 4, as: UInt16.self)
                slot.storeBytes(of: UInt16(0), toByteOffset: 6, as: UInt16.self)
                nextBuffer += 1
            }
            rings.append(ring)
            hwcur.append(0)
            hwtail.append(isTX ? UInt32(slots - 1) : 0)
        }
        ofs[txRings] = 0
        ofs[txRings + 1 + rxRings] = 0
        region = try! NetmapRegion(base: memory, size: size, interfaceOffset: interfaceOffset)
    }

    deinit { memory.deallocate() }

    public func ring(tx index: Int) -> UnsafeMutablePointer<vnm_ring> { rings[index] }
    public func ring(rx index: Int) -> UnsafeMutablePointer<vnm_ring> { rings[txCount + index] }

    func slotPointer(_ r: Int, _ i: UInt32) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(rings[r]) + MemoryLayout<vnm_ring>.size + Int(i) * 16
    }

    func buffer(_ r: Int, _ index: UInt32) -> UnsafeMutableRawPointer? {
        let ring = rings[r]
        let base = UnsafeMutableRawPointer(ring) + Int(ring.pointee.buf_ofs)
        let count = (memory + size - base) / bufferSize
        guard index >= 2, Int(index) < count else { return nil }
        return base + Int(index) * bufferSize
    }

    func next(_ i: UInt32) -> UInt32 { i + 1 == UInt32(slots) ? 0 : i + 1 }
    /// Whether b lies in [a, c] going forward around the ring.
    func between(_ a: UInt32, _ b: UInt32, _ c: UInt32) -> Bool {
        a <= c ? (a <= b && b <= c) : (b >= a || b <= c)
    }

    /// The kernel's prologue: true if head/cur are acceptable; otherwise the ring is reset.
    func prologue(_ r: Int) -> Bool {
        let ring = rings[r]
        if ring.pointee.tail != hwtail[r] { ring.pointee.tail = hwtail[r] }
        let head = ring.pointee.head, cur = ring.pointee.cur
        let n = UInt32(slots)
        if head >= n || cur >= n || !between(hwcur[r], head, hwtail[r]) || !between(head, cur, hwtail[r]) {
            ring.pointee.head = hwcur[r]
            ring.pointee.cur = hwcur[r]
            ring.pointee.tail = hwtail[r]
            resets += 1
            return false
        }
        return true
    }

    public override func txsync() -> Int32 {
        lock.withLock { _ in txsyncLocked() }
    }

    func txsyncLocked() -> Int32 {
        txsyncCalls += 1
        for r in 0..<txCount {
            guard prologue(r) else { continue }
            let head = rings[r].pointee.head
            var i = hwcur[r]
            while i != head {
                let slot = slotPointer(r, i)
                let idx = slot.load(as: UInt32.self)
                let len = Int(slot.load(fromByteOffset: 4, as: UInt16.self))
                let flags = slot.load(fromByteOffset: 6, as: UInt16.self)
                if let b = buffer(r, idx), len <= bufferSize {
                    partial[r] += Array(UnsafeRawBufferPointer(start: b, count: len))
                } else {
                    badTransmitSlots += 1
                }
                if flags & UInt16(VNM_NS_MOREFRAG) == 0 {
                    transmitted.append(partial[r])
                    partial[r] = []
                }
                i = next(i)
            }
            hwcur[r] = head
            if freesTransmitSlots {
                hwtail[r] = head == 0 ? UInt32(slots - 1) : head - 1
            }
            rings[r].pointee.tail = hwtail[r]
        }
        return 0
    }

    public override func rxsync() -> Int32 {
        lock.withLock { _ in rxsyncLocked() }
    }

    func rxsyncLocked() -> Int32 {
        rxsyncCalls += 1
        for k in 0..<rxCount {
            let r = txCount + k
            guard prologue(r) else { continue }
            hwcur[r] = rings[r].pointee.head
            while let frame = pendingReceive.first {
                let needed = max(1, (frame.count + bufferSize - 1) / bufferSize)
                // Free slots: from hwtail up to (not including) hwcur, one kept empty.
                let used = hwtail[r] >= hwcur[r] ? hwtail[r] - hwcur[r] : hwtail[r] + UInt32(slots) - hwcur[r]
                let free = Int(UInt32(slots) - 1 - used)
                guard needed <= free else { break }
                pendingReceive.removeFirst()
                var offset = 0
                for n in 0..<needed {
                    let slot = slotPointer(r, hwtail[r])
                    let chunk = min(bufferSize, frame.count - offset)
                    let b = buffer(r, slot.load(as: UInt32.self))!
                    frame[offset..<offset + chunk].withUnsafeBytes { b.copyMemory(from: $0.baseAddress!, byteCount: chunk) }
                    slot.storeBytes(of: UInt16(chunk), toByteOffset: 4, as: UInt16.self)
                    slot.storeBytes(of: n == needed - 1 ? 0 : UInt16(VNM_NS_MOREFRAG), toByteOffset: 6, as: UInt16.self)
                    offset += chunk
                    hwtail[r] = next(hwtail[r])
                }
            }
            rings[r].pointee.tail = hwtail[r]
        }
        updateReadiness()
        return 0
    }

    /// Corrupts a slot the kernel hands out (a buggy module, or memory shared with a hostile peer).
    public func setReceiveSlotBuffer(ring k: Int, slot: UInt32, bufferIndex: UInt32) {
        slotPointer(txCount + k, slot).storeBytes(of: bufferIndex, as: UInt32.self)
    }
}
