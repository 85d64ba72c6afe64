import CFuzzDriver
import Glibc
import VhostSystem
import Virtio

// Guest memory as a front-end describes it, checked against a reference written here: memory
// tables (SET_MEM_TABLE), memory slots (ADD_MEM_REG / REM_MEM_REG), address translation, and the
// dirty log (SET_LOG_BASE and marking). The input is a list of operations with raw 64-bit fields
// over four memfds of fixed sizes (0 B, 4 KiB, 64 KiB, 1 MiB). A table is accepted exactly when
// the reference finds it valid; a translation answers exactly when the reference finds one
// region holding the whole range, and its pointer is checked by writing through it and reading
// the byte back from the file at the offset the reference expects; a log accepts exactly the
// sizes and offsets the reference does, and marks exactly the pages asked for.
let fileSizes = [0, 4096, 1 << 16, 1 << 20]
let files = fileSizes.map { try! MemFD.make(name: "fuzz-mem", size: $0) }
let fileViews = fileSizes.enumerated().map { i, size in size == 0 ? nil : try! MemoryMapping(descriptor: files[i].rawValue, length: size) }

struct Region { var spec: GuestRegionSpec; var file: Int }

/// The rules, written from the vhost-user spec and mmap's: size > 0, nothing overflows 64 bits,
/// the mapping ends inside its file, and no two regions share a guest or a front-end address.
func valid(_ candidate: Region, against others: [Region]) -> Bool {
    let s = candidate.spec
    guard s.size > 0 else { return false }
    guard s.guestPhysicalAddress.value <= UInt64.max - s.size, s.userAddress.value <= UInt64.max - s.size,
          s.mmapOffset <= UInt64.max - s.size, s.mmapOffset + s.size <= UInt64(fileSizes[candidate.file]) else { return false }
    for o in others.map(\.spec) {
        let g = s.guestPhysicalAddress.value, og = o.guestPhysicalAddress.value
        let u = s.userAddress.value, ou = o.userAddress.value
        if g < og + o.size && og < g + s.size { return false }
        if u < ou + o.size && ou < u + s.size { return false }
    }
    return true
}

/// Reads the input as fields, zero past its end.
struct Fields {
    let data: UnsafePointer<UInt8>, count: Int
    var at = 0
    var exhausted: Bool { at >= count }
    mutating func byte() -> UInt8 { defer { at += 1 }; return at < count ? data[at] : 0 }
    mutating func u64() -> UInt64 { (0..<8).reduce(0) { v, k in v | UInt64(byte()) << (8 * UInt64(k)) } }
    /// A value near `base` (in range of a region) or, one time in four, anything.
    mutating func near(_ base: UInt64) -> UInt64 {
        let mode = byte()
        return mode & 3 == 0 ? u64() : base &+ UInt64(byte()) << 8 &+ UInt64(byte()) &- (mode & 4 != 0 ? 64 : 0)
    }
    mutating func region() -> Region {
        let file = Int(byte() % 4)
        let small = byte()
        if small & 1 == 0 {
            // Plausible: page-ish sizes and offsets inside the file, addresses spread out.
            let size = (UInt64(byte() % 32 + 1) << 12) >> (small & 2 == 0 ? 0 : 4)
            return Region(spec: GuestRegionSpec(guestPhysicalAddress: GuestPhysicalAddress(UInt64(byte()) << 16),
                                                size: size, userAddress: FrontEndAddress(0x7f00_0000_0000 + UInt64(byte()) << 16),
                                                mmapOffset: UInt64(byte() % 16) << 12), file: file)
        }
        return Region(spec: GuestRegionSpec(guestPhysicalAddress: GuestPhysicalAddress(u64()), size: u64(),
                                            userAddress: FrontEndAddress(u64()), mmapOffset: u64()), file: file)
    }
}

nonisolated(unsafe) var marker: UInt8 = 0
/// Writes through `host` at `offset` and reads the byte back from region `r`'s file.
func checkThrough(_ host: UnsafeMutableRawPointer, offset: UInt64, in r: Region, at regionOffset: UInt64) {
    marker &+= 1
    host.storeBytes(of: marker, toByteOffset: Int(offset), as: UInt8.self)
    let fileOffset = Int(r.spec.mmapOffset + regionOffset + offset)
    precondition(fileViews[r.file]!.base.load(fromByteOffset: fileOffset, as: UInt8.self) == marker, "translation to the wrong byte")
}

let logFileSizes = [0, 8, 4096, 1 << 16]
let logFiles = logFileSizes.map { try! MemFD.make(name: "fuzz-log", size: $0) }
let logViews = logFileSizes.enumerated().map { i, size in size == 0 ? nil : try! MemoryMapping(descriptor: logFiles[i].rawValue, length: size) }

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, count in
    guard let data else { return 0 }
    var input = Fields(data: data, count: count)
    var memory = GuestMemory.empty()
    var reference: [Region] = []
    var operations = 0
    while !input.exhausted && operations < 32 {
        operations += 1
        switch input.byte() % 6 {
        case 0:  // SET_MEM_TABLE
            let n = Int(input.byte() % 10)
            var table: [Region] = []
            for _ in 0..<n { table.append(input.region()) }
            let expected = n > 0 && n <= GuestMemory.maxRegions && table.indices.allSatisfy { valid(table[$0], against: Array(table[..<$0])) }
            do {
                memory = try GuestMemory(specs: table.map(\.spec), descriptors: table.map { OwnedDescriptor(adopting: dup(files[$0.file].rawValue)) })
                precondition(expected, "a table the rules refuse was accepted: \(table.map(\.spec))")
                reference = table
            } catch {
                precondition(!expected, "a valid table was refused: \(error)")
            }
        case 1:  // ADD_MEM_REG
            let r = input.region()
            let expected = reference.count < GuestMemory.maxSlots && valid(r, against: reference)
            do {
                memory = try memory.adding(r.spec, descriptor: OwnedDescriptor(adopting: dup(files[r.file].rawValue)))
                precondition(expected, "a region the rules refuse was added: \(r.spec)")
                reference.append(r)
            } catch {
                precondition(!expected, "a valid region was refused: \(error)")
            }
        case 2:  // REM_MEM_REG: an existing region (exactly) or fields near one
            var spec = reference.isEmpty ? input.region().spec : reference[Int(input.byte()) % reference.count].spec
            if input.byte() & 1 != 0 { spec.size = input.near(spec.size) }
            let match = reference.firstIndex { $0.spec.guestPhysicalAddress == spec.guestPhysicalAddress && $0.spec.userAddress == spec.userAddress && $0.spec.size == spec.size }
            if let smaller = memory.removing(guestPhysicalAddress: spec.guestPhysicalAddress, userAddress: spec.userAddress, size: spec.size) {
                precondition(match != nil, "a region that is not there was removed")
                memory = smaller
                reference.remove(at: match!)
            } else {
                precondition(match == nil, "a region that is there was not removed")
            }
        case 3, 4:  // translations
            let base = reference.isEmpty ? 0 : reference[Int(input.byte()) % reference.count].spec.guestPhysicalAddress.value
            let gpa = input.near(base), length = UInt64(input.byte()) << UInt64(input.byte() % 24)
            let holder = reference.first { gpa >= $0.spec.guestPhysicalAddress.value && gpa - $0.spec.guestPhysicalAddress.value < $0.spec.size }
            let offset = holder.map { gpa - $0.spec.guestPhysicalAddress.value } ?? 0
            let whole = holder.map { length <= $0.spec.size - offset } ?? false
            if let host = memory.translate(guestPhysical: GuestPhysicalAddress(gpa), length: length) {
                precondition(whole, "gpa 0x\(String(gpa, radix: 16)) + \(length) translated; no region holds it")
                checkThrough(host, offset: 0, in: holder!, at: offset)
                if length > 0 { checkThrough(host, offset: length - 1, in: holder!, at: offset) }
            } else {
                precondition(!whole, "gpa 0x\(String(gpa, radix: 16)) + \(length) not translated; a region holds it")
            }
            if let (host, n) = memory.translatePrefix(guestPhysical: GuestPhysicalAddress(gpa), length: length) {
                precondition(holder != nil && n == min(length, holder!.spec.size - offset), "prefix of \(n) bytes")
                checkThrough(host, offset: 0, in: holder!, at: offset)
                if n > 0 { checkThrough(host, offset: n - 1, in: holder!, at: offset) }
            } else {
                precondition(holder == nil, "no prefix where a region starts")
            }
            let uvaBase = holder?.spec.userAddress.value ?? 0
            let uva = uvaBase &+ offset
            let userHolder = reference.first { uva >= $0.spec.userAddress.value && uva - $0.spec.userAddress.value < $0.spec.size }
            let userOffset = userHolder.map { uva - $0.spec.userAddress.value } ?? 0
            if let host = memory.translate(userAddress: FrontEndAddress(uva), length: length) {
                precondition(userHolder.map { length <= $0.spec.size - userOffset } ?? false, "front-end address translated; no region holds it")
                checkThrough(host, offset: 0, in: userHolder!, at: userOffset)
            } else {
                precondition(!(userHolder.map { length <= $0.spec.size - userOffset } ?? false), "front-end address not translated")
            }
        default:  // SET_LOG_BASE, then marking
            let file = Int(input.byte() % 4)
            let size = input.byte() & 1 == 0 ? UInt64(input.byte()) << UInt64(input.byte() % 20) : input.u64()
            let offset = input.byte() & 1 == 0 ? UInt64(input.byte()) << 3 : input.u64()
            let memoryEnd = reference.map { $0.spec.guestPhysicalAddress.value + $0.spec.size }.max()
            let needed = memoryEnd.map { DirtyLog.byteCount(coveringUpTo: $0) } ?? 0
            let expected = size > 0 && size <= DirtyLog.maxByteCount && offset <= UInt64.max - size
                && offset + size <= UInt64(logFileSizes[file]) && size >= needed
            let log: DirtyLog
            do {
                log = try DirtyLog(descriptor: logFiles[file].rawValue, size: size, offset: offset, memoryEnd: memoryEnd)
                precondition(expected, "a log of \(size) at \(offset) in a \(logFileSizes[file])-byte file was accepted")
            } catch {
                precondition(!expected, "a valid log was refused: \(error)")
                continue
            }
            let bitmap = logViews[file]!.base + Int(offset)
            memset(bitmap, 0, Int(size))
            let gpa = input.near(memoryEnd ?? 0), length = UInt64(input.byte()) << UInt64(input.byte() % 25)
            log.mark(GuestPhysicalAddress(gpa), length: length)
            func isSet(_ page: UInt64) -> Bool { bitmap.load(fromByteOffset: Int(page / 8), as: UInt8.self) & UInt8(1 << (page % 8)) != 0 }
            let pages = size * 8
            let first = gpa / DirtyLog.pageSize
            let (lastByte, overflow) = gpa.addingReportingOverflow(max(length, 1) - 1)
            let last = overflow ? UInt64.max / DirtyLog.pageSize : lastByte / DirtyLog.pageSize
            if length > 0 && first < pages {
                precondition(isSet(first) && isSet(min(last, pages - 1)), "pages \(first)...\(last) not marked")
                if first > 0 { precondition(!isSet(first - 1), "page before the range marked") }
                if last < pages - 1 { precondition(!isSet(last + 1), "page after the range marked") }
            } else {
                precondition((0..<min(pages, 64)).allSatisfy { !isSet($0) }, "a page marked for nothing")
            }
        }
    }
    return 0
})
