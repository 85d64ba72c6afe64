import Glibc
import SystemPackage
import VhostSystem

/// One region of guest memory as the front-end describes it.
public struct GuestRegionSpec: Sendable, Equatable {
    public var guestPhysicalAddress: GuestPhysicalAddress
    public var size: UInt64
    public var userAddress: FrontEndAddress
    public var mmapOffset: UInt64
    public init(guestPhysicalAddress: GuestPhysicalAddress, size: UInt64, userAddress: FrontEndAddress, mmapOffset: UInt64) {
        self.guestPhysicalAddress = guestPhysicalAddress
        self.size = size
        self.userAddress = userAddress
        self.mmapOffset = mmapOffset
    }
}

public enum GuestMemoryError: Error, Equatable, CustomStringConvertible {
    case noRegions
    case tooManyRegions(Int)
    case descriptorCountMismatch(regions: Int, descriptors: Int)
    case emptyRegion(Int)
    case addressOverflow(Int)
    case overlapping(Int, Int)
    case beyondFileEnd(region: Int, needed: UInt64, fileSize: UInt64)
    case notMappable(region: Int, errno: Errno)

    public var description: String {
        switch self {
        case .noRegions: "no memory regions"
        case .tooManyRegions(let n): "\(n) memory regions (at most \(GuestMemory.maxRegions))"
        case .descriptorCountMismatch(let r, let d): "\(r) regions but \(d) file descriptors"
        case .emptyRegion(let i): "region \(i) has size 0"
        case .addressOverflow(let i): "region \(i): address + size overflows 64 bits"
        case .overlapping(let a, let b): "regions \(a) and \(b) overlap"
        case .beyondFileEnd(let i, let needed, let size): "region \(i): needs \(needed) bytes of its file, which has \(size)"
        case .notMappable(let i, let e): "region \(i): mmap failed (\(e))"
        }
    }
}

/// A region after mapping. Addresses are half-open [start, start + size).
public struct MappedRegion: @unchecked Sendable {
    public let guestPhysicalAddress: GuestPhysicalAddress
    public let userAddress: FrontEndAddress
    public let size: UInt64
    public let host: UnsafeMutableRawPointer
}

/// The guest's memory as mapped into this process. Immutable once built; the mappings go away
/// when the last holder (device or ring) releases it, so a ring never sees a half-swapped table.
public final class GuestMemory: @unchecked Sendable {
    public static let maxRegions = 8

    public let regions: UnsafeMutableBufferPointer<MappedRegion>
    /// mappings[i] maps regions[i]; a region added or kept by ADD/REM_MEM_REG shares its mapping
    /// with the table it came from.
    let mappings: [MemoryMapping]

    /// A table of already-mapped regions (memory slots build one per change).
    init(regions mapped: [MappedRegion], mappings: [MemoryMapping]) {
        let table = UnsafeMutableBufferPointer<MappedRegion>.allocate(capacity: max(mapped.count, 1))
        _ = table.initialize(from: mapped)
        regions = UnsafeMutableBufferPointer(rebasing: table[0..<mapped.count])
        self.mappings = mappings
        allocation = table
    }

    /// What `regions` was allocated as (it may be an empty slice of it).
    private let allocation: UnsafeMutableBufferPointer<MappedRegion>

    /// Validates every region (sizes, overflow, overlap, file size) before mapping any.
    public init(specs: [GuestRegionSpec], descriptors: [OwnedDescriptor]) throws(GuestMemoryError) {
        guard !specs.isEmpty else { throw .noRegions }
        guard specs.count <= GuestMemory.maxRegions else { throw .tooManyRegions(specs.count) }
        guard specs.count == descriptors.count else {
            throw .descriptorCountMismatch(regions: specs.count, descriptors: descriptors.count)
        }
        for (i, s) in specs.enumerated() {
            try Self.validate(s, at: i, descriptor: descriptors[i].rawValue, against: specs[..<i].enumerated().map { ($0, $1) })
        }
        var maps: [MemoryMapping] = []
        let table = UnsafeMutableBufferPointer<MappedRegion>.allocate(capacity: specs.count)
        for (i, s) in specs.enumerated() {
            let length = Int(s.mmapOffset + s.size)
            do {
                let m = try MemoryMapping(descriptor: descriptors[i].rawValue, length: length)
                maps.append(m)
                (table.baseAddress! + i).initialize(to: MappedRegion(
                    guestPhysicalAddress: s.guestPhysicalAddress, userAddress: s.userAddress,
                    size: s.size, host: m.base + Int(s.mmapOffset)))
            } catch {
                table.deallocate()
                throw .notMappable(region: i, errno: error)
            }
        }
        regions = table
        mappings = maps
        allocation = table
    }

    deinit {
        allocation.deallocate()
    }

    /// One region's checks: not empty, no 64-bit overflow, inside its file (touching a shared
    /// mapping past its file's end raises SIGBUS), and overlapping none of `others` in guest
    /// physical or front-end address space.
    static func validate(_ s: GuestRegionSpec, at i: Int, descriptor: CInt, against others: [(Int, GuestRegionSpec)]) throws(GuestMemoryError) {
        guard s.size > 0 else { throw .emptyRegion(i) }
        let (_, o1) = s.guestPhysicalAddress.value.addingReportingOverflow(s.size)
        let (_, o2) = s.userAddress.value.addingReportingOverflow(s.size)
        let (end, o3) = s.mmapOffset.addingReportingOverflow(s.size)
        guard !o1, !o2, !o3, end <= UInt64(Int.max) else { throw .addressOverflow(i) }
        let fileSize = (try? Posix.fileSize(descriptor)) ?? 0
        guard end <= fileSize else { throw .beyondFileEnd(region: i, needed: end, fileSize: fileSize) }
        for (j, t) in others {
            let (sg, tg, su, tu) = (s.guestPhysicalAddress.value, t.guestPhysicalAddress.value, s.userAddress.value, t.userAddress.value)
            if sg < tg + t.size && tg < sg + s.size { throw .overlapping(j, i) }
            if su < tu + t.size && tu < su + s.size { throw .overlapping(j, i) }
        }
    }

    public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }

    /// Host address of [gpa, gpa + length) when it lies inside one region; nil otherwise.
    @inline(__always)
    public func translate(guestPhysical gpa: GuestPhysicalAddress, length: UInt64) -> UnsafeMutableRawPointer? {
        GuestMemory.translate(regions, guestPhysical: gpa, length: length)
    }

    /// The same over a region table held without a reference to its owner (the data path keeps
    /// one per ring, valid while the ring holds the `GuestMemory`).
    @inline(__always)
    public static func translate(_ regions: UnsafeMutableBufferPointer<MappedRegion>, guestPhysical gpa: GuestPhysicalAddress, length: UInt64) -> UnsafeMutableRawPointer? {
        for i in 0..<regions.count {
            let r = regions[i]
            let off = gpa.value &- r.guestPhysicalAddress.value
            if gpa >= r.guestPhysicalAddress && off < r.size && length <= r.size &- off {
                return r.host + Int(truncatingIfNeeded: off)
            }
        }
        return nil
    }

    /// Host address of a front-end (QEMU) virtual address range inside one region (ring addresses).
    public func translate(userAddress uva: FrontEndAddress, length: UInt64) -> UnsafeMutableRawPointer? {
        for r in regions {
            let off = uva.value &- r.userAddress.value
            if uva >= r.userAddress && off < r.size && length <= r.size &- off {
                return r.host + Int(truncatingIfNeeded: off)
            }
        }
        return nil
    }

    /// The longest prefix of [gpa, gpa + length) inside one region: (host, bytes), or nil.
    /// Used to split a buffer that spans two regions.
    @inline(__always)
    public func translatePrefix(guestPhysical gpa: GuestPhysicalAddress, length: UInt64) -> (UnsafeMutableRawPointer, UInt64)? {
        GuestMemory.translatePrefix(regions, guestPhysical: gpa, length: length)
    }

    @inline(__always)
    public static func translatePrefix(_ regions: UnsafeMutableBufferPointer<MappedRegion>, guestPhysical gpa: GuestPhysicalAddress, length: UInt64) -> (UnsafeMutableRawPointer, UInt64)? {
        for i in 0..<regions.count {
            let r = regions[i]
            let off = gpa.value &- r.guestPhysicalAddress.value
            if gpa >= r.guestPhysicalAddress && off < r.size {
                return (r.host + Int(truncatingIfNeeded: off), min(length, r.size &- off))
            }
        }
        return nil
    }
}
