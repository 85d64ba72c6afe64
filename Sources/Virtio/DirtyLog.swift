import Synchronization
import SystemPackage
import VhostSystem

/// The dirty-page log of a live migration (`VHOST_F_LOG_ALL` with `LOG_SHMFD`): a bitmap in
/// memory shared with the front-end, one bit per 4 KiB guest-physical page, which the back-end
/// sets for every page it writes while the guest's memory is being copied. The front-end reads
/// and clears it concurrently, so every bit is set with an atomic OR.
public final class DirtyLog: @unchecked Sendable {
    public static let pageSize: UInt64 = 0x1000
    /// The largest log accepted: enough for 16 TiB of guest memory.
    public static let maxByteCount: UInt64 = 512 << 20

    public enum SetupError: Error, Equatable, CustomStringConvertible {
        case emptyLog
        case tooLarge(UInt64)
        case addressOverflow
        case beyondFileEnd(needed: UInt64, fileSize: UInt64)
        case tooSmallForMemory(UInt64, needed: UInt64)
        case notMappable(Errno)

        public var description: String {
            switch self {
            case .emptyLog: "log size 0"
            case .tooLarge(let n): "log of \(n) bytes (at most \(DirtyLog.maxByteCount))"
            case .addressOverflow: "log offset + size overflows 64 bits"
            case .beyondFileEnd(let needed, let size): "log needs \(needed) bytes of its file, which has \(size)"
            case .tooSmallForMemory(let n, let needed): "log of \(n) bytes cannot cover guest memory (\(needed) needed)"
            case .notMappable(let e): "log mmap failed (\(e))"
            }
        }
    }

    private let mapping: MemoryMapping
    private let bitmap: UnsafeMutableRawPointer
    /// Bytes of bitmap: pages `0..<byteCount * 8` can be marked.
    public let byteCount: UInt64
    /// Bits this back-end set that were clear (pages it newly dirtied), for the statistics.
    public private(set) var pagesMarked = 0
    /// Writes to pages the log does not cover (a memory table grown after SET_LOG_BASE).
    public private(set) var writesBeyondLog = 0

    /// Bytes of log needed for guest memory that ends at `end` (exclusive).
    public static func byteCount(coveringUpTo end: UInt64) -> UInt64 {
        let pages = end / pageSize + (end % pageSize == 0 ? 0 : 1)
        return pages / 8 + (pages % 8 == 0 ? 0 : 1)
    }

    /// Maps `size` bytes at `offset` of `descriptor` (SET_LOG_BASE's payload and fd), each check
    /// made before the mapping: a short file would fault at the first write.
    public init(descriptor: CInt, size: UInt64, offset: UInt64, memoryEnd: UInt64?) throws(SetupError) {
        guard size > 0 else { throw .emptyLog }
        guard size <= Self.maxByteCount else { throw .tooLarge(size) }
        let (end, overflow) = offset.addingReportingOverflow(size)
        guard !overflow, end <= UInt64(Int.max) else { throw .addressOverflow }
        let fileSize = UInt64((try? Posix.fileSize(descriptor)) ?? 0)
        guard fileSize >= end else { throw .beyondFileEnd(needed: end, fileSize: fileSize) }
        if let memoryEnd {
            let needed = Self.byteCount(coveringUpTo: memoryEnd)
            guard size >= needed else { throw .tooSmallForMemory(size, needed: needed) }
        }
        do {
            mapping = try MemoryMapping(descriptor: descriptor, length: Int(end))
        } catch {
            throw .notMappable(error)
        }
        bitmap = mapping.base + Int(offset)
        byteCount = size
    }

    /// Marks every page of `[address, address + length)`.
    public func mark(_ address: GuestPhysicalAddress, length: UInt64) {
        guard length > 0 else { return }
        let first = address.value / Self.pageSize
        let (lastByte, overflow) = address.value.addingReportingOverflow(length - 1)
        let last = overflow ? UInt64.max / Self.pageSize : lastByte / Self.pageSize
        let pages = byteCount &* 8
        guard first < pages else { writesBeyondLog &+= 1; return }
        if last >= pages { writesBeyondLog &+= 1 }
        for page in first...min(last, pages - 1) {
            let byte = (bitmap + Int(page / 8)).assumingMemoryBound(to: Atomic<UInt8>.self)
            let bit = UInt8(1) << UInt8(page % 8)
            let (old, _) = byte.pointee.bitwiseOr(bit, ordering: .relaxed)
            if old & bit == 0 { pagesMarked &+= 1 }
        }
    }

    /// Marks the pages under `length` bytes of host memory starting at `host`, found through the
    /// guest memory `regions` (a receive buffer the device wrote, known by its host address).
    public func mark(host: UnsafeMutableRawPointer, length: Int, in regions: UnsafeMutableBufferPointer<MappedRegion>) {
        for r in regions {
            let distance = r.host.distance(to: host)
            if distance >= 0 && UInt64(distance) < r.size {
                mark(GuestPhysicalAddress(r.guestPhysicalAddress.value &+ UInt64(distance)), length: UInt64(length))
                return
            }
        }
    }
}
