import Glibc
import CVhostShim

/// A contiguous piece of a packet in host memory.
public struct Segment: @unchecked Sendable {
    public var base: UnsafeMutableRawPointer
    public var length: Int
    @inline(__always) public init(base: UnsafeMutableRawPointer, length: Int) {
        self.base = base
        self.length = length
    }
}

/// A fixed-capacity list of segments, allocated once per ring (never per packet).
/// A reference type on purpose: passing a struct stored in a class `inout` across the chain
/// walk made every packet pay Swift's dynamic exclusivity check.
public final class SegmentList: @unchecked Sendable {
    public let storage: UnsafeMutablePointer<Segment>
    public let capacity: Int
    public var count = 0

    public init(capacity: Int) {
        storage = .allocate(capacity: capacity)
        self.capacity = capacity
    }

    deinit { storage.deallocate() }
}

/// A position inside a segment list, and the one loop that moves it: each reader and writer
/// below is this walk with a different body.
public struct SegmentPosition {
    public let segments: UnsafePointer<Segment>
    public let count: Int
    public var index = 0
    public var offset = 0

    @inline(__always)
    public init(segments: UnsafePointer<Segment>, count: Int) {
        self.segments = segments
        self.count = count
    }

    /// Advances over up to `length` bytes, calling `body(address, done, n)` for each contiguous
    /// piece of `n` bytes, `done` bytes into the walk; returns the number of bytes walked.
    @inline(__always)
    public mutating func walk(_ length: Int, _ body: (UnsafeMutableRawPointer, Int, Int) -> Void) -> Int {
        var done = 0
        while done < length && index < count {
            let s = segments[index]
            let n = min(s.length &- offset, length &- done)
            body(s.base + offset, done, n)
            done &+= n
            offset &+= n
            if offset == s.length { index &+= 1; offset = 0 }
        }
        return done
    }
}

/// Reads through a segment list: gather a few bytes, skip, or copy ranges out.
public struct SegmentCursor {
    public var position: SegmentPosition

    @inline(__always)
    public init(segments: UnsafePointer<Segment>, count: Int) {
        position = SegmentPosition(segments: segments, count: count)
    }

    /// Copies up to `length` bytes into `dst`; returns the number copied.
    @inline(__always)
    public mutating func read(into dst: UnsafeMutableRawPointer, length: Int) -> Int {
        position.walk(length) { piece, done, n in _ = memcpy(dst + done, piece, n) }
    }

    /// Skips up to `length` bytes; returns the number skipped.
    @inline(__always)
    public mutating func skip(_ length: Int) -> Int {
        position.walk(length) { _, _, _ in }
    }
}

/// Writes through a segment list (a receive buffer).
public struct SegmentWriter {
    public var position: SegmentPosition

    @inline(__always)
    public init(segments: UnsafePointer<Segment>, count: Int) {
        position = SegmentPosition(segments: segments, count: count)
    }

    /// The first segment (where the virtio-net header goes).
    public var first: Segment { position.segments[0] }

    /// Advances over `length` bytes (written in place by the caller); returns the number skipped.
    @inline(__always)
    public mutating func skip(_ length: Int) -> Int {
        position.walk(length) { _, _, _ in }
    }

    /// Bytes still writable.
    public var remaining: Int {
        var r = 0
        var i = position.index
        var o = position.offset
        while i < position.count { r &+= position.segments[i].length &- o; o = 0; i &+= 1 }
        return r
    }

    /// Host address of the byte `distance` ahead of the write position, if inside the buffer.
    @inline(__always)
    public func address(ahead distance: Int) -> UnsafeMutableRawPointer? {
        var i = position.index
        var o = position.offset &+ distance
        while i < position.count {
            if o < position.segments[i].length { return position.segments[i].base + o }
            o &-= position.segments[i].length
            i &+= 1
        }
        return nil
    }

    /// Writes `length` bytes from `src`; returns the number written.
    @inline(__always)
    public mutating func write(_ src: UnsafeRawPointer, length: Int) -> Int {
        position.walk(length) { piece, done, n in _ = memcpy(piece, src + done, n) }
    }

    /// Moves up to `length` bytes from `source` into this buffer; returns the number moved.
    /// Each step moves the longest run that is contiguous on both sides.
    @inline(__always)
    public mutating func copy(from source: inout SegmentCursor, length: Int) -> Int {
        var moved = 0
        while moved < length && position.index < position.count && source.position.index < source.position.count {
            let d = position.segments[position.index]
            let s = source.position.segments[source.position.index]
            let n = min(min(d.length &- position.offset, s.length &- source.position.offset), length &- moved)
            memcpy(d.base + position.offset, s.base + source.position.offset, n)
            moved &+= n
            position.offset &+= n
            source.position.offset &+= n
            if position.offset == d.length { position.index &+= 1; position.offset = 0 }
            if source.position.offset == s.length { source.position.index &+= 1; source.position.offset = 0 }
        }
        return moved
    }
}

extension Segment {
    /// Starts loading the lines holding the first `bytes` bytes (a hint: never faults, never trusted).
    @inline(__always)
    public func prefetch(bytes: Int) {
        cvh_prefetch_read(base)
        cvh_prefetch_read(base + max(0, min(bytes, length) &- 1))
    }
}
