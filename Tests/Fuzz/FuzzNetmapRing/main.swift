import CFuzzDriver
import DataPath
import Glibc
import Netmap
import VALESwitch
import Virtio

// A netmap port over a fuzzed netmap memory region: the netmap_if (its offset from the input,
// as nr_offset comes from the kernel), ring_ofs, rings (num_slots, nr_buf_size, buf_ofs,
// head/cur/tail) and slots (buffer index, length, flags) are all the input's. A netmap memory
// region is shared with the kernel and, for VALE ports on the same allocator, with other
// processes, so between syncs a hostile "kernel" rewrites any 12 bytes of it (the actions).
// The port is driven as the switch drives it: receive (forward what the RX rings hold), deliver
// frames of fuzzed lengths to the TX rings, flush (txsync). Every frame forwarded must lie in the
// region; nothing may read or write outside it (AddressSanitizer: the region is a heap block).
let regionSize = 1 << 16
let actionBytes = 16 * 12
let parameterBytes = 16

struct Action { var offset: Int; var bytes: (UInt64, UInt32) }

/// The kernel's side: each sync applies the next action (12 bytes written at an offset).
final class HostileKernel: NetmapSync, @unchecked Sendable {
    var region: UnsafeMutableRawPointer?
    var actions: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)
    var next = 0
    func act() {
        guard let region, next + 12 <= actions.count else { return }
        let offset = Int(actions.load(fromByteOffset: next, as: UInt16.self)) % (regionSize - 12)
        (region + offset).copyMemory(from: actions.baseAddress! + next, byteCount: 12)
        next += 12
    }
    override func txsync() -> Int32 { act(); return 0 }
    override func rxsync() -> Int32 { act(); return 0 }
    override func refreshTransmitSpace() { act() }
}

/// The switch's other port: checks that every frame it is given lies inside the region.
final class BoundsCheckingPort: SwitchPort, @unchecked Sendable {
    var region: UnsafeMutableRawPointer?
    var received = 0
    override func deliver(_ frame: Frame) -> DeliveryResult {
        let start = UInt(bitPattern: region!), end = start + UInt(regionSize)
        var total = 0
        for i in 0..<frame.segmentCount {
            let s = frame.segments[i]
            let base = UInt(bitPattern: s.base)
            precondition(s.length >= 0 && base >= start && base + UInt(s.length) <= end, "segment \(i) outside the netmap region")
            total += s.length
        }
        precondition(frame.offset + frame.length == total, "frame length \(frame.length) + header \(frame.offset) != segments \(total)")
        received += 1
        return .delivered
    }
}

/// FUZZ_TRACE=1 prints each round's outcome when replaying a file.
let trace = getenv("FUZZ_TRACE") != nil
let kernel = HostileKernel()
let sink = BoundsCheckingPort()
let source = UnsafeMutableRawPointer.allocate(byteCount: 70_000, alignment: 64)
memset(source, 0x5a, 70_000)

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, count in
    guard count >= parameterBytes + actionBytes, let data else { return 0 }
    let region = malloc(regionSize)!
    defer { free(region) }
    memset(region, 0, regionSize)
    memcpy(region, data + parameterBytes + actionBytes, min(count - parameterBytes - actionBytes, regionSize))
    kernel.region = region
    kernel.actions = UnsafeRawBufferPointer(start: data + parameterBytes, count: actionBytes)
    kernel.next = 0
    sink.region = region
    sink.received = 0

    let interfaceOffset = Int(UInt16(data[0]) | UInt16(data[1]) << 8) - Int(data[2] & 0x80 != 0 ? 1 << 15 : 0)
    let headerLength = [0, 10, 12][Int(data[2] % 3)]
    guard let view = try? NetmapRegion(base: region, size: regionSize, interfaceOffset: interfaceOffset),
          let port = try? NetmapKernelPort(name: "fuzz", region: view, headerLength: headerLength, sync: kernel, pollDescriptor: -1)
    else { return 0 }
    let vale = VALESwitch(name: "vale9")
    let portIndex = try! vale.attach(port, named: "vale9:n")
    _ = try! vale.attach(sink, named: "vale9:sink")
    defer { vale.detach(index: portIndex); vale.detach(index: portIndex + 1) }

    for round in 0..<Int(data[3] % 8) + 1 {
        _ = vale.lock.withLock { _ in vale.runPass(budget: 64) }
        var header = VirtioNetHeader()
        header.flags = data[4 + round] & 1
        var segment = Segment(base: source, length: 70_000)
        let length = Int(data[8 + round]) * 277  // up to 70,635: beyond 64 KiB and any buffer
        let result = withUnsafePointer(to: &segment) {
            port.deliver(Frame(header: header, segments: $0, segmentCount: 1, offset: 0, length: min(length, 70_000), queuePair: round))
        }
        port.flushDeliveries()
        if trace { print("round \(round): \(sink.received) forwarded so far, a \(min(length, 70_000))-byte frame \(result)") }
    }
    return 0
})
