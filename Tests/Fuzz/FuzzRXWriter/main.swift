import CFuzzDriver
import DataPath
import Glibc
import VALESwitch
import VhostSystem
import Virtio

// The receive path (virtio-net header, single-chain and mergeable RX, dirty logging) writing
// frames into a guest receive ring that the input describes. Guest memory is two 64 KiB regions
// from two memfds (so chains cross regions), gpa 0x10000 and 0x20000: descriptor table at
// 0x10000, avail ring at 0x11000, used ring at 0x12000. Input: 32 bytes of parameters, then the
// guest's memory. After each frame:
//  - every byte that changed in guest memory lies in a buffer the guest made device-writable
//    (a WRITE descriptor of the table or of an indirect table it names) or in the used ring;
//  - every used element with a length names a chain that the spec allows (an independent walker
//    below), holding at least that many writable bytes; and where the frame's buffers overlap
//    nothing else, they hold exactly the virtio-net header (num_buffers included) and the frame;
//  - with logging on, every page written is marked in the dirty log after the flush.
let regionSize = 1 << 16
let regionBase: [UInt64] = [0x10000, 0x20000]
let memoryStart: UInt64 = 0x10000, memoryEnd: UInt64 = 0x30000
let memoryBytes = Int(memoryEnd - memoryStart)
let tableGPA: UInt64 = 0x10000, availGPA: UInt64 = 0x11000, usedGPA: UInt64 = 0x12000
let userBase: [UInt64] = [0x7f00_0000_0000, 0x7f10_0000_0000]

let files = [try! MemFD.make(name: "fuzz-rx-0", size: regionSize), try! MemFD.make(name: "fuzz-rx-1", size: regionSize)]
let views = files.map { try! MemoryMapping(descriptor: $0.rawValue, length: regionSize) }
let memory = try! GuestMemory(
    specs: (0..<2).map { GuestRegionSpec(guestPhysicalAddress: GuestPhysicalAddress(regionBase[$0]), size: UInt64(regionSize),
                                         userAddress: FrontEndAddress(userBase[$0]), mmapOffset: 0) },
    descriptors: files.map { OwnedDescriptor(adopting: dup($0.rawValue)) })
let logFile = try! MemFD.make(name: "fuzz-rx-log", size: 4096)
let logView = try! MemoryMapping(descriptor: logFile.rawValue, length: 4096)
let log = try! DirtyLog(descriptor: logFile.rawValue, size: 4096, offset: 0, memoryEnd: memoryEnd)

/// The host byte at guest-physical `gpa`, or nil outside guest memory.
func host(_ gpa: UInt64) -> UnsafeMutablePointer<UInt8>? {
    guard gpa >= memoryStart && gpa < memoryEnd else { return nil }
    let r = Int((gpa - memoryStart) >> 16)
    return (views[r].base + Int(gpa - regionBase[r])).assumingMemoryBound(to: UInt8.self)
}
func copyOfMemory() -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: memoryBytes)
    bytes.withUnsafeMutableBytes { b in
        for r in 0..<2 { memcpy(b.baseAddress! + r * regionSize, views[r].base, regionSize) }
    }
    return bytes
}
func load16(_ gpa: UInt64) -> UInt16 { UInt16(host(gpa)!.pointee) | UInt16(host(gpa + 1)!.pointee) << 8 }
func load32(_ gpa: UInt64) -> UInt32 { UInt32(load16(gpa)) | UInt32(load16(gpa + 2)) << 16 }
func load64(_ gpa: UInt64) -> UInt64 { UInt64(load32(gpa)) | UInt64(load32(gpa + 4)) << 32 }

struct RawDescriptor {
    let address: UInt64, length: UInt32, flags: UInt16, next: UInt16
    init(at gpa: UInt64) { address = load64(gpa); length = load32(gpa + 8); flags = load16(gpa + 12); next = load16(gpa + 14) }
    var hasNext: Bool { flags & 1 != 0 }
    var isWrite: Bool { flags & 2 != 0 }
    var isIndirect: Bool { flags & 4 != 0 }
}

/// Whether `[gpa, gpa + length)` lies in guest memory (the two regions are contiguous here).
func inMemory(_ gpa: UInt64, _ length: UInt64) -> Bool {
    let (end, overflow) = gpa.addingReportingOverflow(length)
    return !overflow && gpa >= memoryStart && end <= memoryEnd
}

/// The spec's chain rules, written independently of Virtqueue and more permissive where the
/// device may be stricter (limits): the writable buffers of chain `head` in order, or nil when
/// the spec forbids the device to use it. Also returns the indirect table it went through.
func referenceChain(head: Int, size: Int, indirectAllowed: Bool) -> (buffers: [(UInt64, UInt64)], table: (UInt64, UInt64)?)? {
    var tableGPA = tableGPA, tableSize = size, index = head, visited = 0
    var indirect: (UInt64, UInt64)?
    var buffers: [(UInt64, UInt64)] = []
    while true {
        let d = RawDescriptor(at: tableGPA + 16 * UInt64(index))
        visited += 1
        if d.isIndirect {
            guard indirectAllowed, indirect == nil, !d.hasNext, visited == 1, d.length > 0, d.length % 16 == 0,
                  inMemory(d.address, UInt64(d.length)) else { return nil }
            indirect = (d.address, UInt64(d.length))
            tableGPA = d.address; tableSize = Int(d.length / 16); index = 0; visited = 0
            continue
        }
        // A zero-length buffer is never accessed: its address does not matter.
        guard d.isWrite, d.length == 0 || inMemory(d.address, UInt64(d.length)) else { return nil }
        buffers.append((d.address, UInt64(d.length)))
        if !d.hasNext { return (buffers, indirect) }
        guard visited < tableSize, Int(d.next) < tableSize else { return nil }
        index = Int(d.next)
    }
}

/// The descriptor table and the indirect tables it names (start, length).
func descriptorTables(size: Int) -> [(UInt64, UInt64)] {
    var tables: [(UInt64, UInt64)] = [(tableGPA, 16 * UInt64(size))]
    for i in 0..<size {
        let d = RawDescriptor(at: tableGPA + 16 * UInt64(i))
        if d.isIndirect && inMemory(d.address, UInt64(d.length)) { tables.append((d.address, UInt64(d.length))) }
    }
    return tables
}

/// Guest-physical ranges the device may write: WRITE descriptors of the table and of the
/// indirect tables it names (at most `size` entries: larger tables are refused), and the used ring.
func writableRanges(size: Int) -> [(UInt64, UInt64)] {
    var ranges: [(UInt64, UInt64)] = [(usedGPA, usedGPA + UInt64(SplitRingLayout.usedBytes(size)))]
    func add(_ d: RawDescriptor) {
        guard d.isWrite, d.length > 0 else { return }
        let start = max(d.address, memoryStart)
        let (end, overflow) = d.address.addingReportingOverflow(UInt64(d.length))
        let clipped = overflow ? memoryEnd : min(end, memoryEnd)
        if start < clipped { ranges.append((start, clipped)) }
    }
    for i in 0..<size {
        let d = RawDescriptor(at: tableGPA + 16 * UInt64(i))
        if d.isIndirect && inMemory(d.address, UInt64(d.length)) {
            for k in 0..<min(Int(d.length / 16), size) { add(RawDescriptor(at: d.address + 16 * UInt64(k))) }
        } else {
            add(d)
        }
    }
    return merged(ranges)
}
/// `ranges` ([start, end)) sorted and merged where they overlap or touch: what `contains`
/// searches needs disjoint ranges.
func merged(_ ranges: [(UInt64, UInt64)]) -> [(UInt64, UInt64)] {
    var merged: [(UInt64, UInt64)] = []
    for r in ranges.sorted(by: { $0.0 < $1.0 }) {
        if let last = merged.last, r.0 <= last.1 { merged[merged.count - 1].1 = max(last.1, r.1) } else { merged.append(r) }
    }
    return merged
}
func contains(_ ranges: [(UInt64, UInt64)], _ gpa: UInt64) -> Bool {
    var lo = 0, hi = ranges.count
    while lo < hi {
        let mid = (lo + hi) / 2
        if ranges[mid].1 <= gpa { lo = mid + 1 } else { hi = mid }
    }
    return lo < ranges.count && ranges[lo].0 <= gpa
}
/// Guest-physical addresses whose bytes differ between `before` and memory now.
func changedAddresses(since before: [UInt8]) -> [UInt64] {
    var changed: [UInt64] = []
    before.withUnsafeBytes { b in
        for r in 0..<2 where memcmp(b.baseAddress! + r * regionSize, views[r].base, regionSize) != 0 {
            let now = views[r].base.assumingMemoryBound(to: UInt8.self)
            for i in 0..<regionSize where b[r * regionSize + i] != now[i] { changed.append(regionBase[r] + UInt64(i)) }
        }
    }
    return changed
}
func overlaps(_ a: (UInt64, UInt64), _ b: (UInt64, UInt64)) -> Bool { a.0 < b.0 + b.1 && b.0 < a.0 + a.1 }

/// FUZZ_TRACE=1 prints each frame's outcome when replaying a file.
let trace = getenv("FUZZ_TRACE") != nil
let sourceCapacity = 65_536 + 64
let source = UnsafeMutableRawPointer.allocate(byteCount: sourceCapacity, alignment: 64)
let sourceSegments = UnsafeMutablePointer<Segment>.allocate(capacity: 3)

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, count in
    guard count >= 32, let data else { return 0 }
    for r in 0..<2 { memset(views[r].base, 0, regionSize) }
    let body = count - 32
    if body > 0 { memcpy(views[0].base, data + 32, min(body, regionSize)) }
    if body > regionSize { memcpy(views[1].base, data + 32 + regionSize, min(body - regionSize, regionSize)) }
    memset(logView.base, 0, 4096)

    let size = 1 << Int(data[0] % 9)
    let options = data[1]
    let mergeable = options & 1 != 0
    let headerLength = mergeable || options & 2 != 0 ? 12 : 10
    let port = VirtioNetPort(queueCount: 2, onBroken: { _ in })
    port.mergeable = mergeable
    port.headerLength = headerLength
    var features: VirtioFeatures = mergeable ? [.netMergeableRxBuffers] : []
    if options & 0x20 != 0 { features.insert(.netGuestCSUM) }
    if options & 0x40 != 0 { features.insert(.netGuestTSO4) }
    if options & 0x80 != 0 { features.insert(.netGuestECN) }
    port.features = features
    let q = port.queues[0]
    q.indirectAllowed = options & 4 != 0
    q.eventIndex = options & 8 != 0
    let addresses = RingAddresses(descriptorTable: FrontEndAddress(userBase[0]), availRing: FrontEndAddress(userBase[0] + 0x1000),
                                  usedRing: FrontEndAddress(userBase[0] + 0x2000))
    do { try q.attach(size: UInt32(size), addresses: addresses, memory: memory) } catch { preconditionFailure("fixed layout refused: \(error)") }
    q.resume(at: UInt16(data[4]) | UInt16(data[5]) << 8)
    if options & 0x10 != 0 {
        q.usedRingLogAddress = GuestPhysicalAddress(usedGPA)
        q.setDirtyLog(log)
    }
    port.setReady(tx: [], rx: [q])
    defer { q.detach() }

    let start = copyOfMemory()
    let frames = Int(data[2] % 8) + 1
    for f in 0..<frames {
        let spec = data + 8 + 3 * f
        let length = Int(spec[0]) | Int(spec[1]) << 8
        var header = VirtioNetHeader()
        header.flags = spec[2] & 1
        header.gsoType = [0, 1, 3, 4, 0x81][Int(spec[2] >> 1) % 5]
        header.gsoSize = UInt16(spec[2]) << 4
        header.checksumStart = UInt16(spec[0])
        header.numBuffers = 0xbeef  // never copied: the device writes its own count
        // The frame in up to three source pieces after a 12-byte source header.
        for i in 0..<(length + 12) { source.storeBytes(of: UInt8(truncatingIfNeeded: i &* 7 &+ f), toByteOffset: i, as: UInt8.self) }
        let cut1 = min(Int(data[3] & 0x0f) * 97, length + 12), cut2 = min(cut1 + Int(data[3] >> 4) * 131, length + 12)
        sourceSegments[0] = Segment(base: source, length: cut1)
        sourceSegments[1] = Segment(base: source + cut1, length: cut2 - cut1)
        sourceSegments[2] = Segment(base: source + cut2, length: length + 12 - cut2)
        let frame = Frame(header: header, segments: sourceSegments, segmentCount: 3, offset: 12, length: length, queuePair: 0)

        let before = copyOfMemory()
        let allowedBefore = writableRanges(size: size)
        let tablesBefore = descriptorTables(size: size)
        let usedBefore = q.usedIndex
        guard q.availableCount() != nil else { break }  // a broken ring takes nothing more
        let result = port.deliver(frame)
        let allowed = allowedBefore + writableRanges(size: size)
        // Merged: a range of one list may lie inside one of the other, and the search needs disjoint ranges.
        let sortedAllowed = merged(allowed)
        let changed = changedAddresses(since: before)
        for gpa in changed {
            precondition(contains(sortedAllowed, gpa), "frame \(f): the device wrote gpa 0x\(String(gpa, radix: 16)), outside every device-writable buffer")
        }
        // A frame written over descriptors (the guest made them writable) changed the chains
        // while the device walked them: which chain it saw is then not known afterwards.
        let tables = tablesBefore + descriptorTables(size: size)
        if changed.contains(where: { gpa in tables.contains { gpa >= $0.0 && gpa - $0.0 < $0.1 } }) { continue }
        let added = Int(q.usedIndex &- usedBefore)
        var entries: [(head: Int, length: UInt64)] = []
        for k in 0..<added {
            let e = usedGPA + 4 + 8 * UInt64(Int(usedBefore &+ UInt16(k)) & (size - 1))
            entries.append((Int(load32(e)), UInt64(load32(e + 4))))
        }
        var chains: [[(UInt64, UInt64)]] = []
        var structures: [(UInt64, UInt64)] = [(tableGPA, 16 * UInt64(size)), (availGPA, UInt64(SplitRingLayout.availBytes(size))),
                                              (usedGPA, UInt64(SplitRingLayout.usedBytes(size)))]
        for e in entries where e.length > 0 {
            guard let chain = referenceChain(head: e.head, size: size, indirectAllowed: q.indirectAllowed) else {
                preconditionFailure("frame \(f): used element for head \(e.head) with length \(e.length): the spec forbids that chain")
            }
            precondition(chain.buffers.reduce(0, { $0 + $1.1 }) >= e.length, "frame \(f): used length \(e.length) beyond the chain's writable bytes")
            var remaining = e.length, written: [(UInt64, UInt64)] = []
            for b in chain.buffers where remaining > 0 { written.append((b.0, min(b.1, remaining))); remaining -= min(b.1, remaining) }
            chains.append(written)
            if let t = chain.table { structures.append(t) }
        }
        if trace { print("frame \(f) len \(length): \(result), used +\(added)") }
        guard result == .delivered else { continue }
        precondition(!entries.isEmpty, "frame \(f) delivered without a used element")
        let total = entries.reduce(0) { $0 + $1.length }
        precondition(total == UInt64(headerLength + length), "frame \(f): used lengths \(total) for a \(headerLength)+\(length)-byte frame")
        // Compare bytes when the frame's buffers overlap nothing but themselves.
        let pieces = chains.flatMap { $0 }.filter { $0.1 > 0 }
        var disjoint = true
        for (i, a) in pieces.enumerated() {
            if structures.contains(where: { overlaps(a, $0) }) || pieces[(i + 1)...].contains(where: { overlaps(a, $0) }) { disjoint = false }
        }
        guard disjoint else { continue }
        var expected = [UInt8](repeating: 0, count: headerLength + length)
        var stored = header
        stored.numBuffers = UInt16(entries.count)
        expected.withUnsafeMutableBytes { stored.store(to: $0.baseAddress!, length: headerLength) }
        for i in 0..<length { expected[headerLength + i] = UInt8(truncatingIfNeeded: (i + 12) &* 7 &+ f) }
        var got: [UInt8] = []
        for p in pieces { for k in 0..<p.1 { got.append(host(p.0 + k)!.pointee) } }
        precondition(got == expected, "frame \(f): the guest's buffers do not hold the header and the frame")
    }
    port.flushDeliveries()
    _ = q.needsInterrupt()
    q.enableKicks()
    if q.isLogging {
        for gpa in changedAddresses(since: start) {
            let page = (gpa / DirtyLog.pageSize)
            let marked = logView.base.load(fromByteOffset: Int(page / 8), as: UInt8.self) & UInt8(1 << (page % 8)) != 0
            precondition(marked, "gpa 0x\(String(gpa, radix: 16)) written while logging, its page not marked")
        }
    }
    return 0
})
