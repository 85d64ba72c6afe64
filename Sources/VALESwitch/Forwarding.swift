import Virtio

/// Frames staged by one source port, forwarded together in two phases as VALE does: every
/// frame's header and addresses are read and its destination looked up, then each destination
/// gets all of its frames in one call. Staging a frame also starts loading its first lines, so
/// the reads of phase one overlap instead of stalling one by one.
///
/// Fixed storage, allocated once per lane; only the lane's worker touches it (lane lock held).
final class FrameBatch {
    static let capacity = 32
    /// Segments of all staged frames; a chain with more than what is left forwards the batch first.
    static let segmentCapacity = 2 * Virtqueue.maxSegmentsPerChain

    /// Destination of a staged frame: a port index, or one of these.
    static let flood: UInt16 = 0xFFFF
    static let nowhere: UInt16 = 0xFFFE

    let frames = UnsafeMutablePointer<Frame>.allocate(capacity: capacity)
    /// Whether the frame's virtio-net header (its first `offset` bytes) is still to be read.
    let headerPending = UnsafeMutablePointer<Bool>.allocate(capacity: capacity)
    let destinations = UnsafeMutablePointer<UInt16>.allocate(capacity: capacity)
    let segments = UnsafeMutablePointer<Segment>.allocate(capacity: segmentCapacity)
    /// One destination's frames (indices into `frames`) and what became of each.
    let selection = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
    let results = UnsafeMutablePointer<DeliveryResult>.allocate(capacity: capacity)
    /// Destinations with unicast frames in this batch, in order of first appearance.
    let touched = UnsafeMutablePointer<UInt16>.allocate(capacity: VALESwitch.maxPorts)
    let isTouched = UnsafeMutablePointer<Bool>.allocate(capacity: VALESwitch.maxPorts)
    var count = 0
    var segmentCount = 0
    var touchedCount = 0
    var floods = false
    var source = -1

    init() {
        isTouched.initialize(repeating: false, count: VALESwitch.maxPorts)
    }

    deinit {
        frames.deallocate()
        headerPending.deallocate()
        destinations.deallocate()
        segments.deallocate()
        selection.deallocate()
        results.deallocate()
        touched.deallocate()
        isTouched.deallocate()
    }
}

extension SwitchLane {
    // MARK: Data path (the lane's worker, lane lock held)

    /// Stages a frame of `source` whose first `offset` bytes are its virtio-net header (read
    /// later, by `forwardStaged`). The segments are copied; the bytes stay where they are, so the
    /// caller keeps its buffers until `forwardStaged(from:)` returns. A full batch is forwarded
    /// first.
    @inline(__always)
    public func stage(segments: UnsafePointer<Segment>, count: Int, offset: Int, length: Int, queuePair: Int, from source: Int) {
        let (slot, copy) = append(segments: segments, count: count, from: source)
        segments[0].prefetch(bytes: offset &+ 12)
        batch.frames[slot] = Frame(header: VirtioNetHeader(), segments: copy, segmentCount: count,
                                   offset: offset, length: length, queuePair: queuePair)
        batch.headerPending[slot] = offset > 0
    }

    /// Forwards one frame whose header is already known (a single-frame batch).
    public func forward(_ frame: Frame, from source: Int) {
        let (slot, copy) = append(segments: frame.segments, count: frame.segmentCount, from: source)
        var staged = frame
        staged.segments = copy
        batch.frames[slot] = staged
        batch.headerPending[slot] = false
        forwardStaged(from: source)
    }

    /// Takes the next frame slot and copies `count` segments into the pool; a full batch (or
    /// pool), or one staged by another source, is forwarded first.
    @inline(__always)
    private func append(segments: UnsafePointer<Segment>, count: Int, from source: Int) -> (slot: Int, copy: UnsafePointer<Segment>) {
        precondition(count > 0 && count <= Virtqueue.maxSegmentsPerChain, "a frame of \(count) segments")
        if batch.count != 0 && (batch.source != source || batch.count == FrameBatch.capacity
            || batch.segmentCount &+ count > FrameBatch.segmentCapacity) {
            forwardStaged(from: batch.source)
        }
        batch.source = source
        let slot = batch.count
        batch.count &+= 1
        let copy = batch.segments + batch.segmentCount
        copy.initialize(from: segments, count: count)
        batch.segmentCount &+= count
        return (slot, UnsafePointer(copy))
    }

    /// Forwards every staged frame of `source`: phase one reads headers, learns and looks up
    /// each destination; phase two hands each destination its frames, in order, in one call.
    /// The destinations publish at the next `flushDeliveries()`.
    @inline(never)
    public func forwardStaged(from source: Int) {
        let n = batch.count
        guard n > 0 else { return }
        precondition(batch.source == source, "frames staged by port \(batch.source) forwarded as port \(source)")
        for i in 0..<n { batch.destinations[i] = destination(of: i, from: source) }
        if batch.floods {
            for k in 0..<view.activeCount where view.activeList[k] != source { deliverStaged(to: view.activeList[k]) }
        } else {
            for k in 0..<batch.touchedCount { deliverStaged(to: Int(batch.touched[k])) }
        }
        for k in 0..<batch.touchedCount { batch.isTouched[Int(batch.touched[k])] = false }
        batch.touchedCount = 0
        batch.floods = false
        batch.count = 0
        batch.segmentCount = 0
    }

    /// Phase one for frame `i`: header, counters, capture, learning, lookup.
    @inline(__always)
    private func destination(of i: Int, from source: Int) -> UInt16 {
        let frame = batch.frames + i
        if batch.headerPending[i] {
            frame.pointee.header = VirtioNetHeader(segments: frame.pointee.segments, count: frame.pointee.segmentCount,
                                                   length: frame.pointee.offset)
        }
        guard frame.pointee.length >= 14 else {
            counters[source].dropShort &+= 1
            return FrameBatch.nowhere
        }
        counters[source].inPackets &+= 1
        counters[source].inBytes &+= UInt64(frame.pointee.length)
        if view.captureCount != 0, let c = view.captures[source], c.tx { c.capture._withUnsafeGuaranteedRef { $0.record(frame.pointee) } }

        let (dst, src) = VALESwitch.addresses(of: frame.pointee)
        if src & 1 == 0 { view.learning.learn(src, port: source) }
        if dst & 1 == 0, let d = view.learning.lookup(dst) {
            if d == source {
                counters[source].dropSamePort &+= 1
                return FrameBatch.nowhere
            }
            if !batch.isTouched[d] {
                batch.isTouched[d] = true
                batch.touched[batch.touchedCount] = UInt16(d)
                batch.touchedCount &+= 1
            }
            return UInt16(d)
        }
        batch.floods = true
        return FrameBatch.flood
    }

    /// Phase two for one destination: its unicast frames and the floods, in batch order. With
    /// more than one lane, the destination's receive side is locked for the call (by the slot's
    /// mutex, or by the port itself, per receive ring).
    @inline(__always)
    private func deliverStaged(to d: Int) {
        let slot = view.slots[d]
        guard let port = slot.port else { return }
        let wanted = UInt16(d)
        var selected = 0
        for i in 0..<batch.count where batch.destinations[i] == wanted || batch.destinations[i] == FrameBatch.flood {
            batch.selection[selected] = UInt8(i)
            selected &+= 1
        }
        guard selected > 0 else { return }
        if slot.locked { view.slotLocks.lock(d) }
        port._withUnsafeGuaranteedRef {
            $0.deliver(UnsafePointer(batch.frames), selection: UnsafePointer(batch.selection), count: selected, results: batch.results)
        }
        if slot.locked { view.slotLocks.unlock(d) }
        for k in 0..<selected {
            account(batch.results[k], of: batch.frames[Int(batch.selection[k])], to: d)
        }
    }

    @inline(__always)
    private func account(_ result: DeliveryResult, of frame: Frame, to index: Int) {
        switch result {
        case .delivered:
            counters[index].outPackets &+= 1
            counters[index].outBytes &+= UInt64(frame.length)
            if view.captureCount != 0, let c = view.captures[index], c.rx { c.capture._withUnsafeGuaranteedRef { $0.record(frame) } }
            if !dirty[index] {
                dirty[index] = true
                dirtyList[dirtyCount] = index
                dirtyCount &+= 1
            }
        case .noRoom: counters[index].dropNoRoom &+= 1
        case .notReady: counters[index].dropNotReady &+= 1
        case .offloadMismatch: counters[index].dropOffload &+= 1
        case .badDescriptor: counters[index].dropBadDescriptor &+= 1
        }
    }

    /// Publishes every destination this lane wrote since its last flush (and, with several lanes,
    /// whatever other lanes wrote there: theirs is complete under the same lock).
    @inline(__always)
    public func flushDeliveries() {
        for k in 0..<dirtyCount {
            let i = dirtyList[k]
            dirty[i] = false
            let slot = view.slots[i]
            guard let port = slot.port else { continue }
            if slot.locked { view.slotLocks.lock(i) }
            port._withUnsafeGuaranteedRef { $0.flushDeliveries() }
            if slot.locked { view.slotLocks.unlock(i) }
        }
        dirtyCount = 0
    }
}

extension VALESwitch {
    /// Destination and source MAC (48 bits each, first byte in the low bits: bit 0 is the
    /// group bit). Read once from the frame; it may span segments.
    @inline(__always)
    static func addresses(of frame: Frame) -> (UInt64, UInt64) {
        let first = frame.segments[0]
        if first.length >= frame.offset &+ 12 {
            let p = UnsafeRawPointer(first.base) + frame.offset
            return (mac(p), mac(p + 6))
        }
        var bytes: (UInt64, UInt64) = (0, 0)
        return withUnsafeMutableBytes(of: &bytes) { raw in
            var c = frame.cursor
            _ = c.read(into: raw.baseAddress!, length: 12)
            return (mac(UnsafeRawPointer(raw.baseAddress!)), mac(UnsafeRawPointer(raw.baseAddress!) + 6))
        }
    }

    @inline(__always)
    static func mac(_ p: UnsafeRawPointer) -> UInt64 {
        UInt64(p.loadUnaligned(as: UInt32.self)) | UInt64(p.loadUnaligned(fromByteOffset: 4, as: UInt16.self)) << 32
    }
}
