import Synchronization
import Netmap
import VALESwitch
import Virtio

/// A netmap port (a kernel VALE port, a NIC, host rings or a pipe end) as a port of a switch:
/// frames for it are copied into its TX ring's buffers (NS_MOREFRAG across buffers when a frame
/// is larger than one), and the frames in its RX ring are forwarded straight out of the netmap
/// buffers. With a virtio-net header on the port (12 or 10 bytes, set by PORT_HDR_SET on VALE
/// ports), checksum and segmentation offloads pass through; without one, frames that need an
/// offload are refused as they are for a guest that did not negotiate it.
///
/// Used by the switch's workers only: its RX rings by the lane that owns the port, its TX rings
/// by one lane at a time; the sync error counters, written by both, are atomic.
public final class NetmapKernelPort: SwitchPort, @unchecked Sendable {
    public let name: String
    public let headerLength: Int
    /// Bound rings in fixed storage: reading an array property per packet would retain its buffer.
    private let txRings: UnsafeMutableBufferPointer<NetmapRing>
    private let rxRings: UnsafeMutableBufferPointer<NetmapRing>
    /// What this port's header lets through (nothing without a header).
    private let acceptedOffloads: VirtioFeatures
    private let sync: NetmapSync
    private let pollDescriptor: CInt
    private let segments = SegmentList(capacity: NetmapRing.maxFragments)
    private var txDirty = false
    private var rxCursor = 0

    /// Counters the switch does not keep: sync errors and slots the kernel side got wrong.
    /// Sync errors come from both sides (receive sync in `transmit`, transmit sync in
    /// `flushDeliveries`), which two lanes may run at once: atomic.
    private let syncErrorCount = Atomic<UInt64>(0)
    private let lastSyncErrorValue = Atomic<Int32>(0)
    public var syncErrors: UInt64 { syncErrorCount.load(ordering: .relaxed) }
    public var lastSyncError: Int32 { lastSyncErrorValue.load(ordering: .relaxed) }
    public private(set) var badSlots: UInt64 = 0

    public init(name: String, region: NetmapRegion, headerLength: Int, sync: NetmapSync, pollDescriptor: CInt) throws(NetmapRegion.LayoutError) {
        precondition([0, 10, 12].contains(headerLength))
        self.name = name
        self.headerLength = headerLength
        self.sync = sync
        self.pollDescriptor = pollDescriptor
        let (tx, rx, _, _) = try region.portRings()
        txRings = .allocate(capacity: tx.count)
        _ = txRings.initialize(from: tx)
        rxRings = .allocate(capacity: rx.count)
        _ = rxRings.initialize(from: rx)
        acceptedOffloads = headerLength == 0 ? [] : [.netGuestCSUM, .netGuestTSO4, .netGuestTSO6, .netGuestECN, .netGuestUFO]
        super.init()
    }

    deinit {
        txRings.deallocate()
        rxRings.deallocate()
    }

    // MARK: netmap RX → switch

    public override func transmit(into lane: SwitchLane, as portIndex: Int, budget: Int) -> Int {
        guard !rxRings.isEmpty else { return 0 }
        let rc = sync.rxsync()
        if rc != 0 { noteSyncError(rc) }
        var moved = 0
        for k in 0..<rxRings.count where moved < budget {
            let ring = rxRings[(rxCursor &+ k) % rxRings.count]
            moved &+= receive(from: ring, into: lane, as: portIndex, budget: budget &- moved)
        }
        rxCursor &+= 1
        return moved
    }

    @inline(__always)
    private func receive(from ring: NetmapRing, into lane: SwitchLane, as portIndex: Int, budget: Int) -> Int {
        var head = ring.head
        let tail = ring.tail
        guard head < ring.slotCount, tail < ring.slotCount else {
            // Our own head is corrupt (or the kernel's tail is): resynchronise at tail.
            badSlots &+= 1
            ring.head = tail < ring.slotCount ? tail : 0
            ring.cur = ring.head
            return 0
        }
        var moved = 0
        let queuePair = Int(ring.ringID)
        while head != tail && moved < budget {
            // Gather one frame: slots with MOREFRAG, then the last one.
            segments.count = 0
            var slotIndex = head
            var length = 0
            var complete = false
            var valid = true
            while slotIndex != tail {
                let s = ring.slot(slotIndex)
                if segments.count == NetmapRing.maxFragments { valid = false }
                if valid, let buffer = ring.buffer(s.buffer), Int(s.length) <= ring.bufferSize {
                    segments.storage[segments.count] = Segment(base: buffer, length: Int(s.length))
                    segments.count &+= 1
                    length &+= Int(s.length)
                } else {
                    valid = false
                }
                slotIndex = ring.next(slotIndex)
                if s.flags & NetmapRing.moreFragments == 0 { complete = true; break }
            }
            // A frame whose last fragment has not arrived yet stays for the next sync.
            guard complete else { break }
            if !valid || length < headerLength {
                badSlots &+= 1
                lane.countBadDescriptor(from: portIndex)
            } else {
                lane.stage(segments: segments.storage, count: segments.count, offset: headerLength,
                           length: length &- headerLength, queuePair: queuePair, from: portIndex)
            }
            moved &+= 1
            head = slotIndex
        }
        // The slots are read until here; only then are they given back to the kernel.
        lane.forwardStaged(from: portIndex)
        ring.head = head
        ring.cur = head
        return moved
    }

    // MARK: switch → netmap TX

    public override func deliver(_ frame: Frame) -> DeliveryResult {
        guard !txRings.isEmpty else { return .notReady }
        guard acceptedOffloads.isSuperset(of: frame.header.requiredReceiveFeatures) else { return .offloadMismatch }
        let ring = txRings[frame.queuePair % txRings.count]
        let cur = ring.cur
        guard cur < ring.slotCount, ring.tail < ring.slotCount else { badSlots &+= 1; return .notReady }
        let total = headerLength &+ frame.length
        let needed = (total &+ ring.bufferSize &- 1) / ring.bufferSize
        guard needed <= NetmapRing.maxFragments else { return .noRoom }
        if needed > Int(ring.distance(from: cur, to: ring.tail)) {
            // The kernel may have freed slots since the last sync (the kernel loop frees them
            // on its own time): look once more before dropping.
            sync.refreshTransmitSpace()
            guard ring.tail < ring.slotCount, needed <= Int(ring.distance(from: cur, to: ring.tail)) else { return .noRoom }
        }

        var header = frame.header
        header.numBuffers = 0
        var cursor = frame.cursor
        var remaining = total
        var slotIndex = cur
        var headerPending = headerLength
        for n in 0..<needed {
            let s = ring.slot(slotIndex)
            guard let buffer = ring.buffer(s.buffer) else { badSlots &+= 1; return .badDescriptor }
            let chunk = min(remaining, ring.bufferSize)
            var written = 0
            if headerPending > 0 {
                header.store(to: buffer, length: headerLength)
                written = headerLength
                headerPending = 0
            }
            _ = cursor.read(into: buffer + written, length: chunk &- written)
            remaining &-= chunk
            ring.setSlot(slotIndex, length: UInt16(chunk), flags: n == needed &- 1 ? 0 : NetmapRing.moreFragments)
            slotIndex = ring.next(slotIndex)
        }
        ring.cur = slotIndex
        txDirty = true
        return .delivered
    }

    public override func flushDeliveries() {
        guard txDirty else { return }
        txDirty = false
        for ring in txRings { ring.head = ring.cur }
        let rc = sync.txsync()
        if rc != 0 { noteSyncError(rc) }
    }

    private func noteSyncError(_ errno: Int32) {
        syncErrorCount.add(1, ordering: .relaxed)
        lastSyncErrorValue.store(errno, ordering: .relaxed)
    }

    // MARK: Sleeping

    public override func pollDescriptors(for lane: SwitchLane, as portIndex: Int) -> [CInt] { pollDescriptor >= 0 ? [pollDescriptor] : [] }
    public override func wakeDescriptors(for lane: SwitchLane, as portIndex: Int) -> [CInt] { sync.notificationDescriptors }

    /// Frames already reported by the last sync and not yet taken (after asking the kernel loop,
    /// if there is one, for a notification).
    public override func prepareToSleep(for lane: SwitchLane, as portIndex: Int) -> Bool {
        sync.enableNotifications()
        return rxRings.contains { $0.head != $0.tail }
    }

    public override func finishSleeping(for lane: SwitchLane, as portIndex: Int) {
        sync.disableNotifications()
    }
}
