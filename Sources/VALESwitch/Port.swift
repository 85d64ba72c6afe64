import Virtio

/// A frame on its way through the switch: it stays in the source port's buffers (a guest's
/// TX descriptors, a netmap slot, a TAP buffer) until each destination copies it into its own.
public struct Frame {
    public var header: VirtioNetHeader
    /// The buffers holding the frame; the first `offset` bytes are not part of it (the source's
    /// virtio-net header).
    public var segments: UnsafePointer<Segment>
    public var segmentCount: Int
    public var offset: Int
    /// Ethernet frame length in bytes (no virtio-net header).
    public var length: Int
    /// The source queue pair, so a multi-queue destination can keep flows on one queue.
    public var queuePair: Int

    @inline(__always)
    public init(header: VirtioNetHeader, segments: UnsafePointer<Segment>, segmentCount: Int, offset: Int, length: Int, queuePair: Int) {
        self.header = header
        self.segments = segments
        self.segmentCount = segmentCount
        self.offset = offset
        self.length = length
        self.queuePair = queuePair
    }

    /// A cursor positioned at the first byte of the Ethernet frame.
    @inline(__always)
    public var cursor: SegmentCursor {
        var c = SegmentCursor(segments: segments, count: segmentCount)
        _ = c.skip(offset)
        return c
    }
}

public enum DeliveryResult {
    case delivered
    /// The destination had no buffer large enough (a full ring): dropped, as VALE does.
    case noRoom
    /// The destination has no running receive queue (no front-end, or its rings are stopped).
    case notReady
    /// The header asks for an offload the destination did not negotiate.
    case offloadMismatch
    /// The destination's receive chain was malformed (completed with length 0; frame dropped).
    case badDescriptor
}

/// A port of a switch: a vhost-user device, a netmap kernel port or a TAP host port.
///
/// A class rather than a protocol so the switch can call it through an unretained reference
/// (`Unmanaged`) with no reference counting per packet; subclasses override every method.
///
/// Threading. The switch's lanes call a port; each holds its own lane lock, and the control
/// plane holds every lane's lock while it changes a port, so what the control plane sets is
/// stable for the data path. The transmit side (`transmit` and the sleep calls) is called only
/// by the lane that owns it: the lane that owns queue pair 0, or, for a port that spreads its
/// queue pairs, each lane for the pairs it owns (`SwitchLane.owns`), which is then all it may
/// read. The receive side (`deliver`, `flushDeliveries`) is called by any lane: one at a time
/// (with several lanes the switch locks it per batch), or, for a port that `locksReceiveRings`,
/// one lane at a time per receive ring. It must not share unguarded state with the transmit
/// side. Calls are per batch, except the one-frame `deliver` that the batch `deliver` calls
/// unless a port overrides it.
open class SwitchPort {
    public init() {}

    /// Whether each transmit queue pair is a source of its own, so that lanes read a
    /// multi-queue port in parallel. False: the whole port is one source.
    open var spreadsQueuePairs: Bool { false }
    /// Whether the port serialises its receive side itself, ring by ring, when
    /// `sharedReceiveSide` is set, so that lanes fill different receive rings of one port at
    /// once. False: the switch takes one mutex for the whole receive side.
    open var locksReceiveRings: Bool { false }
    /// Set by the switch on attach (with the switch lock held): whether more than one lane may
    /// call `deliver` and `flushDeliveries`.
    public internal(set) var sharedReceiveSide = false
    /// Moves up to `budget` frames from this port (the queue pairs `lane` owns) into the switch:
    /// stages them (`lane.stage`), has them forwarded (`lane.forwardStaged`), and only then
    /// returns its own buffers. Returns the number of frames taken.
    open func transmit(into lane: SwitchLane, as portIndex: Int, budget: Int) -> Int { 0 }
    /// Copies `frame` into this port's receive buffers.
    open func deliver(_ frame: Frame) -> DeliveryResult { .notReady }
    /// Copies a batch's frames for this port (`frames[selection[k]]`, k < count, in order) into
    /// its receive buffers, one result per frame. One call per batch and destination; a port
    /// whose buffers are taken per batch (a guest's receive ring) overrides it.
    open func deliver(_ frames: UnsafePointer<Frame>, selection: UnsafePointer<UInt8>, count: Int,
                      results: UnsafeMutablePointer<DeliveryResult>) {
        for k in 0..<count { results[k] = deliver(frames[Int(selection[k])]) }
    }
    /// Publishes what `deliver` wrote since the last flush and notifies the peer if it asks.
    open func flushDeliveries() {}

    // Sleeping and waking: called by the lanes that transmit from this port, for what they own.

    /// Eventfds that count when this port has new frames for `lane` (kick eventfds); the worker
    /// consumes them with 8-byte reads.
    open func wakeDescriptors(for lane: SwitchLane, as portIndex: Int) -> [CInt] { [] }
    /// Descriptors that poll readable when this port has new frames (a netmap file descriptor).
    open func pollDescriptors(for lane: SwitchLane, as portIndex: Int) -> [CInt] { [] }
    /// True if frames may be waiting with no wake-up possible (a ring in polling mode).
    open func needsPolling(for lane: SwitchLane, as portIndex: Int) -> Bool { false }
    /// Re-enables wake-ups before the worker sleeps; true if frames arrived meanwhile.
    open func prepareToSleep(for lane: SwitchLane, as portIndex: Int) -> Bool { false }
    /// Suppresses wake-ups again after the worker woke.
    open func finishSleeping(for lane: SwitchLane, as portIndex: Int) {}
}
