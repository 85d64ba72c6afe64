/// struct virtio_net_hdr (with num_buffers): 12 bytes, little-endian.
public struct VirtioNetHeader: Equatable, Sendable {
    public static let needsChecksum: UInt8 = 1
    public static let dataValid: UInt8 = 2
    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoUDP: UInt8 = 3
    public static let gsoTCPv6: UInt8 = 4
    public static let gsoUDPL4: UInt8 = 5
    public static let gsoECN: UInt8 = 0x80

    public var flags: UInt8 = 0
    public var gsoType: UInt8 = 0
    public var headerLength: UInt16 = 0
    public var gsoSize: UInt16 = 0
    public var checksumStart: UInt16 = 0
    public var checksumOffset: UInt16 = 0
    public var numBuffers: UInt16 = 0

    public init() {}

    /// Decodes the first 10 or 12 bytes; a 10-byte header has no num_buffers.
    @inline(__always)
    public init(bytes p: UnsafeRawPointer, length: Int) {
        flags = p.load(fromByteOffset: 0, as: UInt8.self)
        gsoType = p.load(fromByteOffset: 1, as: UInt8.self)
        headerLength = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        gsoSize = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        checksumStart = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        checksumOffset = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
        numBuffers = length >= 12 ? UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 10, as: UInt16.self)) : 0
    }

    /// Reads the header at the start of a frame held in `segments` (it may span several).
    @inline(__always)
    public init(segments: UnsafePointer<Segment>, count: Int, length: Int) {
        let first = segments[0]
        if first.length >= length {
            self.init(bytes: first.base, length: length)
            return
        }
        var raw: (UInt64, UInt64) = (0, 0)
        self = withUnsafeMutableBytes(of: &raw) { buf in
            var c = SegmentCursor(segments: segments, count: count)
            _ = c.read(into: buf.baseAddress!, length: length)
            return VirtioNetHeader(bytes: buf.baseAddress!, length: length)
        }
    }

    /// Writes 10 or 12 bytes.
    @inline(__always)
    public func store(to p: UnsafeMutableRawPointer, length: Int) {
        p.storeBytes(of: flags, toByteOffset: 0, as: UInt8.self)
        p.storeBytes(of: gsoType, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: headerLength.littleEndian, toByteOffset: 2, as: UInt16.self)
        p.storeBytes(of: gsoSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        p.storeBytes(of: checksumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        p.storeBytes(of: checksumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
        if length >= 12 { p.storeBytes(of: numBuffers.littleEndian, toByteOffset: 10, as: UInt16.self) }
    }

    /// The guest-side features a receiver needs to accept this header as is.
    public var requiredReceiveFeatures: VirtioFeatures {
        var f: VirtioFeatures = []
        if flags & VirtioNetHeader.needsChecksum != 0 { f.insert(.netGuestCSUM) }
        switch gsoType & ~VirtioNetHeader.gsoECN {
        case VirtioNetHeader.gsoTCPv4: f.insert(.netGuestTSO4)
        case VirtioNetHeader.gsoTCPv6: f.insert(.netGuestTSO6)
        case VirtioNetHeader.gsoUDP: f.insert(.netGuestUFO)
        default: break
        }
        if gsoType & VirtioNetHeader.gsoECN != 0 { f.insert(.netGuestECN) }
        return f
    }
}
