import Glibc
import SystemPackage
import VhostSystem

/// INFLIGHT_SHMFD's buffer: memory the back-end shares with the front-end, which keeps it across
/// back-end restarts (GET_INFLIGHT_FD hands it out, SET_INFLIGHT_FD hands it back), so that a
/// restarted back-end knows which chains the one before it had taken and not used.
///
/// One region per queue, each `stride(queueSize:)` bytes, in the vhost-user spec's layouts
/// (QueueRegionSplit / QueueRegionPacked, version 1). A region is sized for the packed layout
/// whatever the rings become, because QEMU may ask for the buffer before it sets features.
///
/// Everything in it is written by the front-end's side too (or by a back-end that died midway):
/// it is read as untrusted input, every index bounded, every walk limited.
public final class InflightRegion: @unchecked Sendable {
    public static let alignment = 64
    /// QueueRegionPacked's header and DescStatePacked: the larger of the two layouts.
    static let headerBytes = 32
    static let entryBytes = 32

    /// Bytes of one queue's region.
    public static func stride(queueSize: Int) -> Int {
        let raw = headerBytes + entryBytes * queueSize
        return (raw + alignment - 1) / alignment * alignment
    }

    public enum SetupError: Error, Equatable, CustomStringConvertible {
        case queueCount(Int, max: Int)
        case queueSize(Int)
        case sizeMismatch(UInt64, expected: UInt64)
        case misalignedOffset(UInt64)
        case addressOverflow
        case beyondFileEnd(needed: UInt64, fileSize: UInt64)
        case notAFile
        case system(Errno)

        public var description: String {
            switch self {
            case .queueCount(let n, let max): "inflight buffer for \(n) queues (1...\(max) allowed)"
            case .queueSize(let n): "inflight buffer for queues of \(n) entries (1...\(Virtqueue.maxSize) allowed)"
            case .sizeMismatch(let n, let expected): "inflight buffer of \(n) bytes, but its queues need \(expected)"
            case .misalignedOffset(let o): "inflight buffer offset \(o) is not a multiple of \(InflightRegion.alignment)"
            case .addressOverflow: "inflight buffer offset + size overflows"
            case .beyondFileEnd(let needed, let size): "inflight buffer needs \(needed) bytes of its file, which has \(size)"
            case .notAFile: "inflight descriptor is not a regular file or memfd"
            case .system(let e): "inflight buffer: \(e)"
            }
        }
    }

    public let queueCount: Int
    public let queueSize: Int
    public let stride: Int
    private let mapping: MemoryMapping
    private let base: UnsafeMutableRawPointer

    /// The bytes `queueCount` queues of `queueSize` need.
    public static func byteCount(queueCount: Int, queueSize: Int) -> UInt64 {
        UInt64(queueCount) * UInt64(stride(queueSize: queueSize))
    }

    static func check(queueCount: Int, queueSize: Int, maxQueues: Int) throws(SetupError) {
        guard queueCount >= 1 && queueCount <= maxQueues else { throw .queueCount(queueCount, max: maxQueues) }
        guard queueSize >= 1 && queueSize <= Virtqueue.maxSize else { throw .queueSize(queueSize) }
    }

    /// GET_INFLIGHT_FD: a new zeroed buffer in a memfd sealed against shrinking, so that no one
    /// holding it can make a later mapping of it fault.
    /// Returns the region, its memfd and its size (mapped from offset 0).
    public static func allocate(queueCount: Int, queueSize: Int, maxQueues: Int) throws(SetupError) -> (InflightRegion, OwnedDescriptor, UInt64) {
        try check(queueCount: queueCount, queueSize: queueSize, maxQueues: maxQueues)
        let size = byteCount(queueCount: queueCount, queueSize: queueSize)
        let fd: OwnedDescriptor
        do {
            fd = try MemFD.makeSealed(name: "vhost-netmap-inflight", size: Int(size))
        } catch {
            throw .system(error)
        }
        let region = try InflightRegion(descriptor: fd.rawValue, mmapSize: size, mmapOffset: 0, queueCount: queueCount,
                                        queueSize: queueSize, maxQueues: maxQueues)
        return (region, fd, size)
    }

    /// SET_INFLIGHT_FD: maps a buffer the front-end kept, every check made before the mapping
    /// (a short file would fault at the first write).
    public init(descriptor: CInt, mmapSize: UInt64, mmapOffset: UInt64, queueCount: Int, queueSize: Int, maxQueues: Int) throws(SetupError) {
        try Self.check(queueCount: queueCount, queueSize: queueSize, maxQueues: maxQueues)
        let needed = Self.byteCount(queueCount: queueCount, queueSize: queueSize)
        guard mmapSize == needed else { throw .sizeMismatch(mmapSize, expected: needed) }
        guard mmapOffset % UInt64(Self.alignment) == 0 else { throw .misalignedOffset(mmapOffset) }
        let (end, overflow) = mmapOffset.addingReportingOverflow(mmapSize)
        guard !overflow, end <= UInt64(Int.max) else { throw .addressOverflow }
        guard let type = try? Posix.fileType(descriptor), type == S_IFREG else { throw .notAFile }
        let fileSize = (try? Posix.fileSize(descriptor)) ?? 0
        guard fileSize >= end else { throw .beyondFileEnd(needed: end, fileSize: fileSize) }
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let start = mmapOffset / page * page
        do {
            mapping = try MemoryMapping(descriptor: descriptor, length: Int(end - start), offset: off_t(start))
        } catch {
            throw .system(error)
        }
        base = mapping.base + Int(mmapOffset - start)
        self.queueCount = queueCount
        self.queueSize = queueSize
        stride = Self.stride(queueSize: queueSize)
    }

    /// Queue `index`'s region for a ring of `ringSize` entries, if the buffer has one that fits.
    public func queue(_ index: Int, ringSize: Int) -> InflightQueue? {
        guard index >= 0 && index < queueCount, ringSize >= 1 && ringSize <= queueSize else { return nil }
        return InflightQueue(base: base + index * stride, ringSize: ringSize, stride: stride)
    }
}

/// One queue's region, as the ring that owns it reads and writes it. Split rings keep the spec's
/// per-head state (in flight, fetch counter, the last batch of used heads) and the used index;
/// packed rings keep the used position with its commit/rollback pair. The data path completes
/// chains in the order it takes them, so for a packed ring that position is also where the
/// chains still in flight begin: the descriptors themselves are not copied.
///
/// A plain pointer and sizes (no reference: the ring's hot path copies it freely); the ring
/// keeps the `InflightRegion` alive beside it.
public struct InflightQueue {
    let base: UnsafeMutableRawPointer
    public let ringSize: Int
    let stride: Int

    static let version: UInt16 = 1
    // QueueRegionSplit / QueueRegionPacked header fields.
    static let versionOffset = 8
    static let descriptorCountOffset = 10
    static let lastBatchHeadOffset = 12
    static let splitUsedIndexOffset = 14
    static let packedUsedIndexOffset = 16
    static let packedOldUsedIndexOffset = 18
    static let packedUsedWrapOffset = 20
    static let packedOldUsedWrapOffset = 21
    // DescStateSplit: inflight u8, padding, next u16 at 6, counter u64 at 8; 16 bytes, from 16.
    static let splitEntriesOffset = 16
    static let splitEntryBytes = 16

    @inline(__always) func u16(_ offset: Int) -> UInt16 { base.loadUnaligned(fromByteOffset: offset, as: UInt16.self) }
    @inline(__always) func setU16(_ offset: Int, _ v: UInt16) { base.storeBytes(of: v, toByteOffset: offset, as: UInt16.self) }
    @inline(__always) func splitEntry(_ head: Int) -> UnsafeMutableRawPointer { base + Self.splitEntriesOffset + Self.splitEntryBytes * head }

    public var version: UInt16 { u16(Self.versionOffset) }
    public var descriptorCount: UInt16 { u16(Self.descriptorCountOffset) }

    /// Zeroes the region and stamps version 1 and the ring size (a buffer new to this ring).
    func initialise() {
        memset(base, 0, stride)
        setU16(Self.descriptorCountOffset, UInt16(truncatingIfNeeded: ringSize))
        setU16(Self.versionOffset, Self.version)
    }
}
