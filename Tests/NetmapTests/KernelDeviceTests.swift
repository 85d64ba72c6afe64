import DataPath
import Glibc
import Netmap
import Testing
import VALESwitch
import Virtio

private let netmapPresent = access("/dev/netmap", R_OK | W_OK) == 0

/// Records what the switch delivers to it.
final class CapturePort: SwitchPort, @unchecked Sendable {
    var frames: [(VirtioNetHeader, [UInt8])] = []
    override func deliver(_ frame: Frame) -> DeliveryResult {
        var bytes = [UInt8](repeating: 0, count: frame.length)
        var c = frame.cursor
        bytes.withUnsafeMutableBytes { _ = c.read(into: $0.baseAddress!, length: frame.length) }
        frames.append((frame.header, bytes))
        return .delivered
    }
}

/// Against the real netmap module: these run where /dev/netmap exists and skip elsewhere (these
/// development machines cannot load kernel modules).
@Suite(.enabled(if: netmapPresent, "needs the netmap kernel module (/dev/netmap is absent: skipped)"), .serialized)
struct NetmapKernelDevice {
    @Test func availabilityProbeSaysAPI14IsAccepted() {
        #expect(NetmapAvailability.probe().isAvailable)
    }

    @Test func twoVALEPortsExchangeAFrameWithItsHeader() throws {
        let a = try NetmapRegistration(try NetmapPortName.parse("valevnt\(getpid() % 1000):a"))
        let b = try NetmapRegistration(try NetmapPortName.parse("valevnt\(getpid() % 1000):b"))
        #expect(a.headerLength == 12, "PORT_HDR_SET 12 on a VALE port")
        let listed = try NetmapControl.listVALE()
        #expect(listed.contains { $0.name.hasSuffix(":a") } && listed.contains { $0.name.hasSuffix(":b") })

        let sender = try a.makePort()
        let receiverSwitch = VALESwitch(name: "capture")
        let receiver = try b.makePort()
        let capture = CapturePort()
        _ = try receiverSwitch.lock.withLock { _ throws(SwitchError) in try receiverSwitch.attach(receiver, named: "b") }
        _ = try receiverSwitch.lock.withLock { _ throws(SwitchError) in try receiverSwitch.attach(capture, named: "c") }

        var frame = [UInt8](repeating: 0xff, count: 6) + [2, 0, 0, 0, 0, 1, 0x08, 0x00]
        frame += (0..<3000).map { UInt8(truncatingIfNeeded: $0) }
        var header = VirtioNetHeader()
        header.flags = VirtioNetHeader.dataValid
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: frame.count, alignment: 8)
        defer { buffer.deallocate() }
        frame.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
        var segment = Segment(base: buffer, length: frame.count)
        let result = withUnsafePointer(to: &segment) {
            sender.deliver(Frame(header: header, segments: $0, segmentCount: 1, offset: 0, length: frame.count, queuePair: 0))
        }
        #expect(result == .delivered)
        sender.flushDeliveries()
        for _ in 0..<200 where capture.frames.isEmpty {
            _ = receiverSwitch.lock.withLock { _ in receiverSwitch.runPass(budget: 32) }
            usleep(5_000)
        }
        #expect(capture.frames.first?.1 == frame, "the 3014-byte frame crosses the kernel's VALE in MOREFRAG buffers")
        #expect(sender.syncErrors == 0 && receiver.syncErrors == 0)
    }

    /// POOLS_INFO_GET needs a port name (the module answers ENXIO to an empty one); the global
    /// allocator is reached through a VALE port that exists for the request only.
    @Test func poolsAndPortInfoAnswer() throws {
        let pools = try NetmapControl.globalPoolsInfo()
        #expect(pools.buffers.total > 0 && pools.buffers.size >= 64)
        #expect(pools.memoryID == 1)
        let global = try NetmapControl.portInfo("", memoryID: 1)
        #expect(global.memorySize == pools.memorySize, "PORT_INFO_GET and POOLS_INFO_GET agree on the global allocator")
        #expect(throws: NetmapControl.Failure.self) { try NetmapControl.poolsInfo("") }
        #expect(try NetmapControl.listVALE().allSatisfy { !$0.name.hasPrefix("valevnprobe") }, "the probe port is gone")
    }
}
