import Synchronization
import VALESwitch
import VhostSystem
import Virtio

/// The data path of one vhost-user virtio-net device, seen by the switch as a port.
///
/// Its queues are configured by `VhostNetDevice` on the control thread with the switch lock
/// held (every lane's). Receive queues are the even rings, transmit queues the odd ones
/// (RX = 2i, TX = 2i + 1 for queue pair i). Each transmit queue is read by the lane that owns
/// its pair, with that lane's scratch. Each receive ring, with its scratch (`ReceiveScratch`),
/// is written by one lane at a time: with several lanes, under that ring's own mutex
/// (`receiveLocks`), so lanes fill different rings of one port at once. `dirtyRX`, the rings to
/// publish, is one atomic word.
public final class VirtioNetPort: SwitchPort, @unchecked Sendable {
    /// A receive chain taken for the packet being delivered: (head, bytes written).
    private struct PendingUsed {
        var head: UInt16
        var length: UInt32
    }

    public let queues: [Virtqueue]
    // Set by the device (control thread, switch lock held).
    /// Unretained references to running rings (their owner is `queues`): no ARC per packet.
    struct QueueRef {
        let queue: Unmanaged<Virtqueue>
    }

    /// Running rings, in fixed storage (reading an array property would retain its buffer per packet).
    private let readyTXStorage: UnsafeMutablePointer<QueueRef>
    private let readyRXStorage: UnsafeMutablePointer<QueueRef>
    package private(set) var readyTXCount = 0
    package private(set) var readyRXCount = 0

    /// Sets the running rings (control thread, switch lock held).
    package func setReady(tx: [Virtqueue], rx: [Virtqueue]) {
        for (i, q) in tx.enumerated() { readyTXStorage[i] = QueueRef(queue: .passUnretained(q)) }
        // Receive rings are never waited on (a frame without room is dropped, as VALE does): the
        // guest need not kick when it adds buffers.
        for (i, q) in rx.enumerated() {
            readyRXStorage[i] = QueueRef(queue: .passUnretained(q))
            q.disableKicks()
        }
        readyTXCount = tx.count
        readyRXCount = rx.count
    }

    private var readyTX: UnsafeBufferPointer<QueueRef> { UnsafeBufferPointer(start: readyTXStorage, count: readyTXCount) }
    // Configured by VhostNetDevice (control thread, switch lock held): `package`, the control
    // plane's view of the data path.
    package var callDescriptors: [CInt]
    package var errorDescriptors: [CInt]
    package var kickDescriptors: [CInt]
    package var polledTX = false
    package var features: VirtioFeatures = []
    package var headerLength = 12
    package var mergeable = false

    /// What delivering into one receive ring writes besides the ring: the chain being filled and
    /// the chains taken for the frame (mergeable buffers). One per queue pair.
    private struct ReceiveScratch {
        let segments: Unmanaged<SegmentList>
        let pending: UnsafeMutablePointer<PendingUsed>
    }
    private let pendingCapacity = 1024
    private let receiveSegmentLists: [SegmentList]
    private let receiveScratch: UnsafeMutablePointer<ReceiveScratch>
    /// One mutex per queue pair's receive ring, taken when `sharedReceiveSide`.
    private let receiveLocks: MutexArray
    /// Queue pairs whose receive ring has used entries to publish (bit q: pair q).
    private let dirtyRX = Atomic<UInt64>(0)
    let onBroken: (Virtqueue) -> Void

    package init(queueCount: Int, onBroken: @escaping (Virtqueue) -> Void) {
        queues = (0..<queueCount).map { Virtqueue(index: $0) }
        callDescriptors = Array(repeating: -1, count: queueCount)
        errorDescriptors = Array(repeating: -1, count: queueCount)
        kickDescriptors = Array(repeating: -1, count: queueCount)
        let pairs = (queueCount + 1) / 2
        precondition(pairs <= UInt64.bitWidth, "\(pairs) queue pairs")
        receiveSegmentLists = (0..<pairs).map { _ in SegmentList(capacity: Virtqueue.maxSegmentsPerChain) }
        receiveScratch = .allocate(capacity: pairs)
        for (k, list) in receiveSegmentLists.enumerated() {
            receiveScratch[k] = ReceiveScratch(segments: .passUnretained(list), pending: .allocate(capacity: pendingCapacity))
        }
        receiveLocks = MutexArray(count: pairs)
        readyTXStorage = .allocate(capacity: queueCount)
        readyRXStorage = .allocate(capacity: queueCount)
        self.onBroken = onBroken
        super.init()
    }

    deinit {
        announcementBuffer.deallocate()
        for k in 0..<receiveSegmentLists.count { receiveScratch[k].pending.deallocate() }
        receiveScratch.deallocate()
        receiveLocks.deallocate()
        readyTXStorage.deallocate()
        readyRXStorage.deallocate()
    }

    @inline(__always)
    private func notify(_ q: Virtqueue) {
        if q.needsInterrupt() {
            let fd = callDescriptors[q.index]
            if fd >= 0 { EventFD.signal(fd) }
        }
    }

    private func reportBroken(_ q: Virtqueue) {
        guard !q.brokenReported else { return }
        q.brokenReported = true
        let fd = errorDescriptors[q.index]
        if fd >= 0 { EventFD.signal(fd) }
        onBroken(q)
    }

    // MARK: Guest TX → switch

    public override var spreadsQueuePairs: Bool { true }

    public override func transmit(into lane: SwitchLane, as portIndex: Int, budget: Int) -> Int {
        var moved = 0
        if let announcement = pendingAnnouncement, lane.owns(port: portIndex, queuePair: 0) {
            pendingAnnouncement = nil
            sendAnnouncement(announcement, into: lane, as: portIndex)
            moved = 1
        }
        let count = readyTXCount
        guard count > 0 else { return moved }
        let start = lane.passes
        for k in 0..<count {
            moved &+= readyTXStorage[(start &+ k) % count].queue._withUnsafeGuaranteedRef {
                lane.owns(port: portIndex, queuePair: $0.index >> 1)
                    ? transmit($0, into: lane, as: portIndex, budget: budget &- moved) : 0
            }
            if moved >= budget { break }
        }
        return moved
    }

    /// Takes up to `budget` chains, has the switch forward them as one batch, then uses them.
    @inline(__always)
    private func transmit(_ q: Virtqueue, into lane: SwitchLane, as portIndex: Int, budget: Int) -> Int {
        guard let available = q.availableCount() else {
            if q.broken { reportBroken(q) }
            return 0
        }
        let n = min(available, budget, SwitchLane.transmitHeadCapacity)
        if n == 0 { return 0 }
        q.prefetch(upTo: 2 &* n, writable: false)
        let hdrLen = headerLength
        let queuePair = q.index >> 1
        let txSegments = lane.transmitSegments
        let transmitHeads = lane.transmitHeads
        var taken = 0
        while taken < n {
            guard let result = q.nextChain(writable: false, into: txSegments) else {
                reportBroken(q)
                break
            }
            switch result {
            case .bad(let head, _):
                lane.countBadDescriptor(from: portIndex)
                transmitHeads[taken] = head
            case .chain(let head, let length):
                if length < hdrLen {
                    lane.countBadDescriptor(from: portIndex)
                } else {
                    lane.stage(segments: txSegments.storage, count: txSegments.count, offset: hdrLen,
                               length: length &- hdrLen, queuePair: queuePair, from: portIndex)
                }
                transmitHeads[taken] = head
            }
            taken &+= 1
        }
        // The frames are read from the chains until here; only then are the chains used.
        lane.forwardStaged(from: portIndex)
        // IN_ORDER: the batch's chains share one used element (written at publishUsed).
        if features.contains(.inOrder) {
            for k in 0..<taken { q.foldUsed(head: transmitHeads[k]) }
        } else {
            for k in 0..<taken { q.addUsed(head: transmitHeads[k], length: 0) }
        }
        q.publishUsed()
        notify(q)
        return taken
    }

    /// A RARP frame announcing `mac` (SEND_RARP, after a migration), flooded like any broadcast.
    package var pendingAnnouncement: [UInt8]?
    private let announcementBuffer = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 8)

    private func sendAnnouncement(_ mac: [UInt8], into lane: SwitchLane, as portIndex: Int) {
        let frame = Self.rarpFrame(for: mac)
        frame.withUnsafeBytes { announcementBuffer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        var segment = Segment(base: announcementBuffer, length: frame.count)
        withUnsafePointer(to: &segment) {
            lane.forward(Frame(header: VirtioNetHeader(), segments: $0, segmentCount: 1, offset: 0, length: frame.count, queuePair: 0), from: portIndex)
        }
    }

    /// Ethernet broadcast RARP "reverse request" for `mac`, padded to 60 bytes (what QEMU sends).
    static func rarpFrame(for mac: [UInt8]) -> [UInt8] {
        var f = [UInt8](repeating: 0xff, count: 6) + mac + [0x80, 0x35]
        f += [0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x03]
        f += mac + [0, 0, 0, 0] + mac + [0, 0, 0, 0]
        f += [UInt8](repeating: 0, count: 60 - f.count)
        return f
    }

    // MARK: Switch → guest RX

    public override func deliver(_ frame: Frame) -> DeliveryResult {
        var one = frame
        var result = DeliveryResult.notReady
        var zero: UInt8 = 0
        withUnsafePointer(to: &one) { deliver($0, selection: &zero, count: 1, results: &result) }
        return result
    }

    public override var locksReceiveRings: Bool { true }

    /// A batch's frames for this port: each run of frames for one receive ring takes its
    /// chains in one go (one availability check and one prefetch per run), holding that ring's
    /// mutex when lanes share the receive side.
    public override func deliver(_ frames: UnsafePointer<Frame>, selection: UnsafePointer<UInt8>, count: Int,
                                 results: UnsafeMutablePointer<DeliveryResult>) {
        let rings = readyRXCount
        guard rings > 0 else {
            for k in 0..<count { results[k] = .notReady }
            return
        }
        var k = 0
        while k < count {
            let ring = frames[Int(selection[k])].queuePair % rings
            var end = k &+ 1
            while end < count && frames[Int(selection[end])].queuePair % rings == ring { end &+= 1 }
            readyRXStorage[ring].queue._withUnsafeGuaranteedRef { q in
                let pair = q.index >> 1
                let locked = sharedReceiveSide
                if locked { receiveLocks.lock(pair) }
                deliver(frames, selection: selection + k, count: end &- k, results: results + k, into: q, scratch: receiveScratch[pair])
                if locked { receiveLocks.unlock(pair) }
            }
            k = end
        }
    }

    @inline(__always)
    private func deliver(_ frames: UnsafePointer<Frame>, selection: UnsafePointer<UInt8>, count: Int,
                         results: UnsafeMutablePointer<DeliveryResult>, into q: Virtqueue, scratch: ReceiveScratch) {
        q.prefetch(upTo: 2 &* count, writable: true)
        var delivered = false
        for k in 0..<count {
            let frame = frames[Int(selection[k])]
            guard features.isSuperset(of: frame.header.requiredReceiveFeatures) else {
                results[k] = .offloadMismatch
                continue
            }
            guard let available = q.availableCount() else {
                if q.broken { reportBroken(q) }
                for j in k..<count { results[j] = .notReady }
                break
            }
            if available == 0 {
                results[k] = .noRoom
                continue
            }
            let result = scratch.segments._withUnsafeGuaranteedRef { segments in
                mergeable ? deliverMergeable(frame, to: q, available: available, segments: segments, pending: scratch.pending)
                          : deliverSingle(frame, to: q, available: available, segments: segments)
            }
            if result == .delivered { delivered = true }
            results[k] = result
        }
        if delivered || q.usedIndexDirty {
            // Set under the ring's mutex, before a flush (which takes it) can publish the ring.
            let bit: UInt64 = 1 << UInt64(q.index >> 1)
            if dirtyRX.load(ordering: .relaxed) & bit == 0 { dirtyRX.bitwiseOr(bit, ordering: .relaxed) }
        }
    }

    /// Without MRG_RXBUF: the whole packet goes into one chain.
    @inline(__always)
    private func deliverSingle(_ frame: Frame, to q: Virtqueue, available: Int, segments rxSegments: SegmentList) -> DeliveryResult {
        let hdrLen = headerLength
        let total = hdrLen &+ frame.length
        guard let result = q.nextChain(writable: true, into: rxSegments) else {
            reportBroken(q)
            return .notReady
        }
        switch result {
        case .bad(let head, _):
            q.addUsed(head: head, length: 0)
            q.usedIndexDirty = true
            return .badDescriptor
        case .chain(let head, let length):
            guard length >= total else {
                q.rewind(1)
                return .noRoom
            }
            var header = frame.header
            header.numBuffers = 1
            var writer = SegmentWriter(segments: rxSegments.storage, count: rxSegments.count)
            writeHeader(header, length: hdrLen, into: &writer)
            var source = frame.cursor
            _ = writer.copy(from: &source, length: frame.length)
            q.logWritten(rxSegments, length: total)
            q.addUsed(head: head, length: UInt32(total))
            return .delivered
        }
    }

    /// With MRG_RXBUF: as many chains as the packet needs; num_buffers tells the guest how many.
    @inline(__always)
    private func deliverMergeable(_ frame: Frame, to q: Virtqueue, available: Int, segments rxSegments: SegmentList,
                                  pending: UnsafeMutablePointer<PendingUsed>) -> DeliveryResult {
        let hdrLen = headerLength
        var source = frame.cursor
        var remaining = frame.length
        var buffers = 0
        var numBuffersLow: UnsafeMutableRawPointer?
        var numBuffersHigh: UnsafeMutableRawPointer?
        var header = frame.header
        header.numBuffers = 1
        while buffers == 0 || remaining > 0 {
            guard buffers < available, buffers < pendingCapacity else {
                q.rewind(buffers)
                return .noRoom
            }
            guard let result = q.nextChain(writable: true, into: rxSegments) else {
                reportBroken(q)
                return .notReady
            }
            switch result {
            case .bad(let head, _):
                // Give back everything taken for this packet, unwritten, and drop it.
                for k in 0..<buffers { q.addUsed(head: pending[k].head, length: 0) }
                q.addUsed(head: head, length: 0)
                q.usedIndexDirty = true
                return .badDescriptor
            case .chain(let head, let length):
                var writer = SegmentWriter(segments: rxSegments.storage, count: rxSegments.count)
                var written = 0
                if buffers == 0 && length >= hdrLen &+ remaining {
                    // The common case: the whole frame fits the first buffer (num_buffers = 1).
                    writeHeader(header, length: hdrLen, into: &writer)
                    _ = writer.copy(from: &source, length: remaining)
                    q.logWritten(rxSegments, length: hdrLen &+ remaining)
                    q.addUsed(head: head, length: UInt32(hdrLen &+ remaining))
                    return .delivered
                }
                if buffers == 0 {
                    guard length >= hdrLen else {
                        q.addUsed(head: head, length: 0)
                        q.usedIndexDirty = true
                        return .badDescriptor
                    }
                    numBuffersLow = writer.address(ahead: 10)
                    numBuffersHigh = writer.address(ahead: 11)
                    writeHeader(header, length: hdrLen, into: &writer)
                    written = hdrLen
                }
                let n = writer.copy(from: &source, length: remaining)
                remaining &-= n
                written &+= n
                q.logWritten(rxSegments, length: written)
                pending[buffers] = PendingUsed(head: head, length: UInt32(written))
                buffers &+= 1
            }
        }
        if buffers > 1 && hdrLen >= 12, let low = numBuffersLow, let high = numBuffersHigh {
            low.storeBytes(of: UInt8(truncatingIfNeeded: buffers), as: UInt8.self)
            high.storeBytes(of: UInt8(truncatingIfNeeded: buffers >> 8), as: UInt8.self)
            // Written after the first chain was logged: logged again, or a migration that
            // copied the page in between would keep num_buffers = 1.
            q.logWritten(at: low, length: 1)
            q.logWritten(at: high, length: 1)
        }
        for k in 0..<buffers { q.addUsed(head: pending[k].head, length: pending[k].length) }
        return .delivered
    }

    @inline(__always)
    private func writeHeader(_ header: VirtioNetHeader, length: Int, into writer: inout SegmentWriter) {
        let first = writer.first
        if first.length >= length {
            header.store(to: first.base, length: length)
            _ = writer.skip(length)
        } else {
            var raw: (UInt64, UInt64) = (0, 0)
            withUnsafeMutableBytes(of: &raw) { buf in
                header.store(to: buf.baseAddress!, length: length)
                _ = writer.write(buf.baseAddress!, length: length)
            }
        }
    }

    /// Publishes the receive rings written since the last flush, by this lane or (under the
    /// same ring mutex) by another.
    public override func flushDeliveries() {
        var mask = dirtyRX.exchange(0, ordering: .relaxed)
        let locked = sharedReceiveSide
        while mask != 0 {
            let pair = mask.trailingZeroBitCount
            mask &= mask &- 1
            let q = queues[pair << 1]
            if locked { receiveLocks.lock(pair) }
            if q.isAttached {
                q.publishUsed()
                q.usedIndexDirty = false
                notify(q)
            }
            if locked { receiveLocks.unlock(pair) }
        }
    }

    // MARK: Sleeping and waking

    /// The running transmit rings that `lane` reads.
    private func transmitQueues(of lane: SwitchLane, as portIndex: Int) -> [Virtqueue] {
        readyTX.compactMap { r in
            r.queue._withUnsafeGuaranteedRef { lane.owns(port: portIndex, queuePair: $0.index >> 1) ? $0 : nil }
        }
    }

    public override func wakeDescriptors(for lane: SwitchLane, as portIndex: Int) -> [CInt] {
        transmitQueues(of: lane, as: portIndex).compactMap { kickDescriptors[$0.index] >= 0 ? kickDescriptors[$0.index] : nil }
    }

    /// A transmit ring of this lane set up without a kick descriptor (polled by the front-end's
    /// choice) keeps the lane awake; another lane's does not.
    public override func needsPolling(for lane: SwitchLane, as portIndex: Int) -> Bool {
        polledTX && transmitQueues(of: lane, as: portIndex).contains { kickDescriptors[$0.index] < 0 }
    }

    public override func prepareToSleep(for lane: SwitchLane, as portIndex: Int) -> Bool {
        var pendingWork = false
        for q in transmitQueues(of: lane, as: portIndex) {
            q.enableKicks()
            if let n = q.refreshAvailable(), n > 0 { pendingWork = true }
        }
        return pendingWork
    }

    public override func finishSleeping(for lane: SwitchLane, as portIndex: Int) {
        for q in transmitQueues(of: lane, as: portIndex) { q.disableKicks() }
    }
}
