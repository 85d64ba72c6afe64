import Glibc
import Synchronization
import VhostSystem
import Virtio

/// Copies of one port's frames for `vhost-netmap capture`: the switch's workers write records
/// into a bounded ring (one at a time: lanes share a port's frames), the control thread takes
/// them out as pcap records. When the ring is full
/// the copy is dropped and counted; the frame itself goes on as if nobody watched.
public final class PortCapture: @unchecked Sendable {
    /// Which frames, seen from the port: `tx` what it sent into the switch (a guest's transmit),
    /// `rx` what the switch delivered to it.
    public enum Direction: String, Sendable, CaseIterable {
        case rx, tx, both
    }

    public let direction: Direction
    public let snapLength: Int
    /// Records the ring holds: each is a pcap record header (16 bytes) and `snapLength` bytes.
    public let capacity: Int
    private let recordBytes: Int
    private let storage: UnsafeMutableRawPointer
    /// Records written (by the workers, one at a time) and taken (by the control thread); `written - taken` is
    /// the fill. The release store of `written` publishes a record's bytes to the reader.
    private let written = Atomic<Int>(0)
    private let taken = Atomic<Int>(0)
    private let droppedCopies = Atomic<Int>(0)
    /// Taken by each writer: a multi-queue port's frames are written by several lanes.
    private let writer = PosixMutex()

    public var dropped: Int { droppedCopies.load(ordering: .relaxed) }
    public var recorded: Int { written.load(ordering: .relaxed) }

    public static let maxSnapLength = 65_535

    public init(direction: Direction, snapLength: Int, capacity: Int = 4096) {
        precondition(snapLength > 0 && snapLength <= Self.maxSnapLength && capacity > 0)
        self.direction = direction
        self.snapLength = snapLength
        self.capacity = capacity
        recordBytes = 16 + (snapLength + 7) & ~7
        storage = .allocate(byteCount: recordBytes * capacity, alignment: 8)
    }

    deinit {
        storage.deallocate()
    }

    /// Worker side: copies `frame` (its first `snapLength` bytes) with the time, or counts a drop.
    @inline(never)
    func record(_ frame: Frame) {
        writer.lock()
        defer { writer.unlock() }
        let w = written.load(ordering: .relaxed)
        guard w &- taken.load(ordering: .acquiring) < capacity else {
            droppedCopies.add(1, ordering: .relaxed)
            return
        }
        let slot = storage + (w % capacity) * recordBytes
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let length = min(frame.length, snapLength)
        slot.storeBytes(of: UInt32(truncatingIfNeeded: now.tv_sec), as: UInt32.self)
        slot.storeBytes(of: UInt32(now.tv_nsec / 1000), toByteOffset: 4, as: UInt32.self)
        slot.storeBytes(of: UInt32(length), toByteOffset: 8, as: UInt32.self)
        slot.storeBytes(of: UInt32(frame.length), toByteOffset: 12, as: UInt32.self)
        var cursor = frame.cursor
        _ = cursor.read(into: slot + 16, length: length)
        written.store(w &+ 1, ordering: .releasing)
    }

    /// Control side: appends the records waiting (at most `limit`) to `out` as pcap records;
    /// returns how many.
    public func drain(into out: inout [UInt8], limit: Int = .max) -> Int {
        let t = taken.load(ordering: .relaxed)
        let available = min(written.load(ordering: .acquiring) &- t, limit)
        for k in 0..<max(available, 0) {
            let slot = UnsafeRawPointer(storage + ((t &+ k) % capacity) * recordBytes)
            let length = Int(slot.load(fromByteOffset: 8, as: UInt32.self))
            out.append(contentsOf: UnsafeRawBufferPointer(start: slot, count: 16 + length))
        }
        taken.store(t &+ max(available, 0), ordering: .releasing)
        return max(available, 0)
    }

    /// The pcap file header (microsecond timestamps, Ethernet), little-endian as written here.
    public var fileHeader: [UInt8] {
        var h: [UInt8] = []
        func put32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { h += $0 } }
        func put16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { h += $0 } }
        put32(0xa1b2_c3d4); put16(2); put16(4); put32(0); put32(0); put32(UInt32(snapLength)); put32(1)
        return h
    }
}

extension VALESwitch {
    /// Starts copying the frames of port `index` into `capture` (control thread, lock held).
    /// Returns false if that port is being captured already.
    public func startCapture(_ capture: PortCapture, onPort index: Int) -> Bool {
        guard captures[index] == nil else { return false }
        captures[index] = CaptureSlot(capture: .passUnretained(capture), tx: capture.direction != .rx, rx: capture.direction != .tx)
        captureCount += 1
        retainedCaptures[index] = capture
        return true
    }

    /// Whether `capture` is the one running on port `index` (control thread, lock held).
    public func isCapturing(_ capture: PortCapture, onPort index: Int) -> Bool {
        retainedCaptures[index] === capture
    }

    /// Stops it (control thread, lock held); the worker no longer touches `capture` afterwards.
    public func stopCapture(onPort index: Int) {
        guard captures[index] != nil else { return }
        captures[index] = nil
        retainedCaptures[index] = nil
        captureCount -= 1
    }
}

/// A port's capture as the data path sees it: unretained (the switch keeps it alive while set).
struct CaptureSlot {
    let capture: Unmanaged<PortCapture>
    let tx: Bool
    let rx: Bool
}
