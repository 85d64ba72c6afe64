import Glibc

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

/// Reads through a segment list: gather a few bytes, skip, or copy ranges out.
public struct SegmentCursor {
    public let segments: UnsafePointer<Segment>
    public let count: Int
    public var index = 0
    public var offset = 0

    @inline(__always)
    public init(segments: UnsafePointer<Segment>, count: Int) {
        self.segments = segments
        self.count = count
    }

    /// Copies up to `length` bytes into `dst`; returns the number copied.
    @inline(__always)
    public mutating func read(into dst: UnsafeMutableRawPointer, length: Int) -> Int {
        var done = 0
        while done < length && index < count {
            let s = segments[index]
            let n = min(s.length &- offset, length &- done)
            memcpy(dst + done, s.base + offset, n)
            done &+= n
            offset &+= n
            if offset == s.length { index &+= 1; offset = 0 }
        }
        return done
    }

    /// Skips up to `length` bytes; returns the number skipped.
    @inline(__always)
    public mutating func skip(_ length: Int) -> Int {
        var done = 0
        while done < length && index < count {
            let n = min(segments[index].length &- offset, length &- done)
            done &+= n
            offset &+= n
            if offset == segments[index].length { index &+= 1; offset = 0 }
        }
        return done
    }
}

/// Writes through a segment list (a receive buffer).
public struct SegmentWriter {
    public let segments: UnsafePointer<Segment>
    public let count: Int
    public var index = 0
    public var offset = 0

    @inline(__always)
    public init(segments: UnsafePointer<Segment>, count: Int) {
        self.segments = segments
        self.count = count
    }

    /// Advances over `length` bytes (written in place by the caller); returns the number skipped.
    @inline(__always)
    public mutating func skip(_ length: Int) -> Int {
        var cursor = SegmentCursor(segments: segments, count: count)
        cursor.index = index
        cursor.offset = offset
        let n = cursor.skip(length)
        index = cursor.index
        offset = cursor.offset
        return n
    }

    /// Bytes still writable.
    public var remaining: Int {
        var r = 0
        var i = index
        var o = offset
        while i < count { r &+= segments[i].length &- o; o = 0; i &+= 1 }
        return r
    }

    /// Host address of the byte `distance` ahead of the write position, if inside the buffer.
    @inline(__always)
    public func address(ahead distance: Int) -> UnsafeMutableRawPointer? {
        var i = index
        var o = offset &+ distance
        while i < count {
            if o < segments[i].length { return segments[i].base + o }
            o &-= segments[i].length
            i &+= 1
        }
        return nil
    }

    /// Writes `length` bytes from `src`; returns the number written.
    @inline(__always)
    public mutating func write(_ src: UnsafeRawPointer, length: Int) -> Int {
        var done = 0
        while done < length && index < count {
            let s = segments[index]
            let n = min(s.length &- offset, length &- done)
            memcpy(s.base + offset, src + done, n)
            done &+= n
            offset &+= n
            if offset == s.length { index &+= 1; offset = 0 }
        }
        return done
    }

    /// Moves up to `length` bytes from `source` into this buffer; returns the number moved.
    @inline(__always)
    public mutating func copy(from source: inout SegmentCursor, length: Int) -> Int {
        var done = 0
        while done < length && index < count && source.index < source.count {
            let d = segments[index]
            let s = source.segments[source.index]
            let n = min(min(d.length &- offset, s.length &- source.offset), length &- done)
            memcpy(d.base + offset, s.base + source.offset, n)
            done &+= n
            offset &+= n
            source.offset &+= n
            if offset == d.length { index &+= 1; offset = 0 }
            if source.offset == s.length { source.index &+= 1; source.offset = 0 }
        }
        return done
    }
}
