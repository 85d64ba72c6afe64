/// Payload layouts of the messages this back-end handles, decoded from exact-size byte buffers.
/// Sizes are checked by `MessageFraming` before any of these is built.

public struct VringState: Equatable, Sendable {
    public static let byteCount = 8
    public var index: UInt32
    public var num: UInt32
    public init(index: UInt32, num: UInt32) { self.index = index; self.num = num }
    public init(_ p: UnsafeRawBufferPointer) {
        index = p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)
        num = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
    }
    public func encoded() -> [UInt8] {
        var out = [UInt8]()
        out.appendLittleEndian(index)
        out.appendLittleEndian(num)
        return out
    }
}

public struct VringAddress: Equatable, Sendable {
    public static let byteCount = 40
    public static let logFlag: UInt32 = 1
    public var index: UInt32
    public var flags: UInt32
    public var descriptorTable: UInt64
    public var usedRing: UInt64
    public var availRing: UInt64
    public var log: UInt64
    public init(index: UInt32, flags: UInt32, descriptorTable: UInt64, usedRing: UInt64, availRing: UInt64, log: UInt64) {
        self.index = index; self.flags = flags; self.descriptorTable = descriptorTable
        self.usedRing = usedRing; self.availRing = availRing; self.log = log
    }
    public init(_ p: UnsafeRawBufferPointer) {
        index = p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)
        flags = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        descriptorTable = p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        usedRing = p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
        availRing = p.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
        log = p.loadUnaligned(fromByteOffset: 32, as: UInt64.self)
    }
    public func encoded() -> [UInt8] {
        var out = [UInt8]()
        out.appendLittleEndian(index)
        out.appendLittleEndian(flags)
        out.appendLittleEndian(descriptorTable)
        out.appendLittleEndian(usedRing)
        out.appendLittleEndian(availRing)
        out.appendLittleEndian(log)
        return out
    }
}

public struct MemoryRegionDescription: Equatable, Sendable {
    public static let byteCount = 32
    public var guestPhysicalAddress: UInt64
    public var size: UInt64
    public var userAddress: UInt64
    public var mmapOffset: UInt64
    public init(guestPhysicalAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64) {
        self.guestPhysicalAddress = guestPhysicalAddress; self.size = size
        self.userAddress = userAddress; self.mmapOffset = mmapOffset
    }
    public init(_ p: UnsafeRawBufferPointer, at offset: Int) {
        guestPhysicalAddress = p.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        size = p.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)
        userAddress = p.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self)
        mmapOffset = p.loadUnaligned(fromByteOffset: offset + 24, as: UInt64.self)
    }
}

extension MemoryRegionDescription {
    public func encoded() -> [UInt8] {
        [guestPhysicalAddress, size, userAddress, mmapOffset].flatMap { withUnsafeBytes(of: $0.littleEndian) { Array($0) } }
    }
}

/// ADD_MEM_REG / REM_MEM_REG payload: 8 bytes of padding, then one region.
public struct SingleMemoryRegion: Equatable, Sendable {
    public static let byteCount = 8 + MemoryRegionDescription.byteCount
    public var region: MemoryRegionDescription
    public init(_ region: MemoryRegionDescription) { self.region = region }
    public init(_ p: UnsafeRawBufferPointer) { region = MemoryRegionDescription(p, at: 8) }
    public func encoded() -> [UInt8] { [UInt8](repeating: 0, count: 8) + region.encoded() }
}

public struct MemoryTable: Equatable, Sendable {
    public static let maxRegions = 8
    public static let headerByteCount = 8
    public var regions: [MemoryRegionDescription]
    public init(regions: [MemoryRegionDescription]) { self.regions = regions }

    /// Region count as declared in the payload (validated against the size by the framing).
    public static func declaredCount(_ p: UnsafeRawBufferPointer) -> UInt32 {
        p.count >= 4 ? p.loadUnaligned(fromByteOffset: 0, as: UInt32.self) : 0
    }

    public init(_ p: UnsafeRawBufferPointer) {
        let n = Int(MemoryTable.declaredCount(p))
        regions = (0..<n).map { MemoryRegionDescription(p, at: MemoryTable.headerByteCount + $0 * MemoryRegionDescription.byteCount) }
    }

    public func encoded() -> [UInt8] {
        var out = [UInt8]()
        out.appendLittleEndian(UInt32(regions.count))
        out.appendLittleEndian(UInt32(0))
        for r in regions {
            out.appendLittleEndian(r.guestPhysicalAddress)
            out.appendLittleEndian(r.size)
            out.appendLittleEndian(r.userAddress)
            out.appendLittleEndian(r.mmapOffset)
        }
        return out
    }
}

/// KICK/CALL/ERR payload: vring index in bits 0–7, bit 8 = no descriptor (poll instead).
public struct VringDescriptorPayload: Equatable, Sendable {
    public static let indexMask: UInt64 = 0xff
    public static let noDescriptorFlag: UInt64 = 0x100
    public var index: UInt32
    public var noDescriptor: Bool

    /// Nil when bits other than the index and the no-fd flag are set.
    public init?(_ value: UInt64) {
        guard value & ~(VringDescriptorPayload.indexMask | VringDescriptorPayload.noDescriptorFlag) == 0 else { return nil }
        index = UInt32(value & VringDescriptorPayload.indexMask)
        noDescriptor = value & VringDescriptorPayload.noDescriptorFlag != 0
    }
}

extension UnsafeRawBufferPointer {
    public var u64: UInt64 { loadUnaligned(fromByteOffset: 0, as: UInt64.self) }
}

/// SET_LOG_BASE's payload: the dirty log's size and offset in the file sent with it.
public struct LogRegion: Equatable, Sendable {
    public static let byteCount = 16
    public var size: UInt64
    public var offset: UInt64
    public init(size: UInt64, offset: UInt64) { self.size = size; self.offset = offset }
    public init(_ p: UnsafeRawBufferPointer) {
        self.init(size: p.loadUnaligned(as: UInt64.self), offset: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
    }
    public func encoded() -> [UInt8] { [size, offset].flatMap { withUnsafeBytes(of: $0.littleEndian) { Array($0) } } }
}

/// GET/SET_INFLIGHT_FD's payload: the inflight buffer's size and offset in its file, and the
/// queues it covers (QEMU's VhostUserInflight, 24 bytes with its tail padding).
public struct InflightBufferDescription: Equatable, Sendable {
    public static let byteCount = 24
    public var mmapSize: UInt64
    public var mmapOffset: UInt64
    public var queueCount: UInt16
    public var queueSize: UInt16
    public init(mmapSize: UInt64, mmapOffset: UInt64, queueCount: UInt16, queueSize: UInt16) {
        self.mmapSize = mmapSize
        self.mmapOffset = mmapOffset
        self.queueCount = queueCount
        self.queueSize = queueSize
    }
    public init(_ p: UnsafeRawBufferPointer) {
        self.init(mmapSize: p.loadUnaligned(as: UInt64.self), mmapOffset: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                  queueCount: p.loadUnaligned(fromByteOffset: 16, as: UInt16.self), queueSize: p.loadUnaligned(fromByteOffset: 18, as: UInt16.self))
    }
    public func encoded() -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Self.byteCount)
        out.appendLittleEndian(mmapSize)
        out.appendLittleEndian(mmapOffset)
        out.appendLittleEndian(queueCount)
        out.appendLittleEndian(queueSize)
        out.append(contentsOf: [0, 0, 0, 0])
        return out
    }
}
