import CFuzzDriver
import Glibc
import VhostSystem
import Virtio

// The chain walkers, split and packed, over fuzzed guest memory: the input is the guest's memory
// (64 KiB, one region), holding the descriptor table (ring) at +0, the avail ring (driver event
// area) at +4096 and the used ring (device event area) at +8192; the first byte picks the ring
// size (split: a power of two up to 256; packed: 1...256), the second the direction, the third
// whether indirect tables are allowed, EVENT_IDX and the layout (bit 2: packed), the fourth the
// packed ring's starting slot and wrap counter. Every chain taken must lie inside guest memory,
// the walk must end (at most 2 × size chains), a bad ring is marked broken, never followed, and
// a packed ring's used position ends where its avail position is.
let memorySize = 1 << 16
let guestBase: UInt64 = 0x10000
let userBase: UInt64 = 0x7f00_0000_0000
let file = try! MemFD.make(name: "fuzz-guest", size: memorySize)
let view = try! MemoryMapping(descriptor: file.rawValue, length: memorySize)
let memory = try! GuestMemory(
    specs: [GuestRegionSpec(guestPhysicalAddress: GuestPhysicalAddress(guestBase), size: UInt64(memorySize),
                            userAddress: FrontEndAddress(userBase), mmapOffset: 0)],
    descriptors: [OwnedDescriptor(adopting: dup(file.rawValue))])
let host = memory.regions[0].host
let segments = SegmentList(capacity: 64)

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, count in
    guard count >= 4, let data else { return 0 }
    memset(view.base, 0, memorySize)
    memcpy(view.base, data, min(count, memorySize))
    let packed = data[2] & 4 != 0
    let size = packed ? UInt32(data[0]) + 1 : UInt32(1) << UInt32(data[0] % 9)
    let writable = data[1] & 1 == 1
    let queue = Virtqueue(index: 0)
    queue.indirectAllowed = data[2] & 1 == 1
    queue.eventIndex = data[2] & 2 != 0
    let addresses = RingAddresses(descriptorTable: FrontEndAddress(userBase), availRing: FrontEndAddress(userBase + 4096),
                                  usedRing: FrontEndAddress(userBase + 8192))
    do { try queue.attach(size: size, addresses: addresses, memory: memory, format: packed ? .packed : .split) } catch {
        preconditionFailure("fixed layout refused: \(error)")
    }
    if packed { queue.resume(at: UInt16(data[3] & 0x7f) | (data[3] & 0x80 != 0 ? 0x8000 : 0)) }
    var taken = 0
    while taken < 2 * Int(size), let available = queue.availableCount(), available > 0 {
        guard let result = queue.nextChain(writable: writable, into: segments) else { break }
        taken += 1
        switch result {
        case .chain(let head, let length):
            var sum = 0
            for i in 0..<segments.count {
                let s = segments.storage[i]
                precondition(s.base >= host && s.base + s.length <= host + memorySize, "segment outside guest memory")
                sum += s.length
            }
            precondition(sum == length, "segment lengths \(sum) != chain length \(length)")
            queue.addUsed(head: head, length: UInt32(writable ? length : 0))
        case .bad(let head, _):
            queue.addUsed(head: head, length: 0)
        }
    }
    queue.publishUsed()
    _ = queue.needsInterrupt()
    precondition(!packed || queue.usedIndex == queue.lastAvailIndex, "packed: used \(queue.usedIndex) != avail \(queue.lastAvailIndex)")
    return 0
})
