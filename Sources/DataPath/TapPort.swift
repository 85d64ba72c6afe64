import Glibc
import Logging
import SystemPackage
import URing
import VALESwitch
import VhostSystem
import Virtio

/// A host port: a switch port backed by a TAP interface, which connects the switch to the
/// host's network stack (or, through a Linux bridge, to anything the host reaches).
///
/// The TAP is opened with IFF_VNET_HDR and a 12-byte header, so checksum and segmentation
/// offloads cross it in both directions in the same virtio-net header the guests use. All
/// packet I/O goes through io_uring on fixed (registered) buffers and registered files:
/// - host → switch: every receive buffer always has a READ_FIXED queued on its TAP queue; the
///   worker reaps completed reads without a system call, forwards them, and re-queues the reads
///   with one `io_uring_enter` per batch. Read completions signal an eventfd the worker sleeps on.
/// - switch → host: `deliver` copies the frame (header included) into a free transmit buffer and
///   queues a WRITE_FIXED; `flushDeliveries` submits the batch with one system call and recycles
///   the buffers of completed writes.
///
/// Used only by the switch's workers, except `setOffloads`, a TAP ioctl that is safe alongside
/// I/O: its transmit side (reads, `receiveRing`) by the lane that owns the port, its receive side
/// (writes, `transmitRing`) by one lane at a time; the two share no state.
public final class TapPort: SwitchPort, @unchecked Sendable {
    public static let headerLength = 12
    /// Room for the largest frame a TAP hands over with TSO (64 KiB segment + Ethernet header)
    /// after the 12-byte header.
    public static let bufferSize = 65536 + 4096
    public static let receiveDepth = 64
    public static let transmitDepth = 128

    public let name: String
    public let queueCount: Int
    private let queues: [OwnedDescriptor]
    private let memory: MemoryMapping
    private let receiveRing: IOURing
    private let transmitRing: IOURing
    private let wake: OwnedDescriptor
    private let logger: Logger

    private let freeTransmit: UnsafeMutablePointer<Int32>
    private var freeTransmitCount = 0
    private var queuedWrites = 0
    private var failedQueues: Set<Int> = []
    /// I/O errors of the TAP (reads or writes the kernel refused), for the statistics.
    public private(set) var readErrors: UInt64 = 0
    public private(set) var writeErrors: UInt64 = 0
    /// Frames for the host dropped because the interface was down (the kernel answers EIO).
    public private(set) var writesWhileDown: UInt64 = 0
    public private(set) var offloads: TapOffloads = []

    /// Opens the tap's queues. A queue of a process that just died (SIGKILL, a crash) stays
    /// attached until the kernel has torn down that process's io_uring, which holds it as a
    /// registered file: EBUSY while no process holds it is retried for up to 3 s.
    static func open(name: String, queues: Int) throws(Errno) -> [OwnedDescriptor] {
        var attempts = 0
        while true {
            do {
                return try Tap.open(name: name, queues: queues)
            } catch {
                attempts += 1
                guard error == .resourceBusy, attempts < 30, Tap.processesAttached(to: name).isEmpty else { throw error }
                usleep(100_000)
            }
        }
    }

    /// What to do about a tap that would not open, from what is there.
    static func advice(name: String, existed: Bool, queues: Int, error: Errno) -> String {
        if error == .notPermitted || error == .permissionDenied {
            return "creating or opening a tap needs CAP_NET_ADMIN (run as root), or a persistent tap owned by this user"
        }
        guard existed else { return "the kernel refused to create it" }
        guard Tap.isTunTap(name) else { return "\(name) exists and is not a TAP interface: choose another name" }
        let holders = Tap.processesAttached(to: name)
        if !holders.isEmpty {
            return "\(name) is in use by \(holders.map(\.owner).joined(separator: ", ")): stop it, or use another name"
        }
        if error == .resourceBusy {
            return "\(name) is busy but no process holds it (a queue still being released by a process that ended?); try again"
        }
        return "the existing tap must have been created \(queues > 1 ? "with" : "without") multi_queue (ip tuntap add dev \(name) mode tap\(queues > 1 ? " multi_queue" : ""))"
    }

    /// Opens (or creates) tap `name` with `queues` queues and prepares its buffers and rings.
    public init(name: String, queues queueCount: Int, mtu: Int?, logger: Logger) throws {
        self.name = name
        self.queueCount = queueCount
        self.logger = logger.with("hostPort", name)
        let existed = Tap.exists(name)
        do {
            queues = try Self.open(name: name, queues: queueCount)
        } catch {
            throw HostPortError("cannot open tap \(name) (\(queueCount) queue(s)): \(error); " + Self.advice(name: name, existed: existed, queues: queueCount, error: error))
        }
        for q in queues {
            do { try Tap.setHeaderSize(q.rawValue, Self.headerLength) } catch {
                throw HostPortError("tap \(name): TUNSETVNETHDRSZ 12 failed: \(error)")
            }
        }
        if let mtu {
            do { try Tap.setMTU(name, mtu) } catch { throw HostPortError("tap \(name): cannot set MTU \(mtu): \(error)") }
        }
        do { try Tap.setUp(name) } catch { throw HostPortError("tap \(name): cannot bring it up: \(error)") }

        let bufferCount = queueCount * Self.receiveDepth + Self.transmitDepth
        let memory = try MemoryMapping(anonymousLength: bufferCount * Self.bufferSize)
        self.memory = memory
        let receiveCount = queueCount * Self.receiveDepth
        do {
            receiveRing = try IOURing(entries: UInt32(max(64, queueCount * Self.receiveDepth)))
            transmitRing = try IOURing(entries: UInt32(Self.transmitDepth))
            wake = try EventFD.make()
            let receiveBuffers = (0..<receiveCount).map { Self.buffer(at: $0, in: memory) }
            let transmitBuffers = (0..<Self.transmitDepth).map { Self.buffer(at: receiveCount + $0, in: memory) }
            try receiveRing.registerBuffers(receiveBuffers)
            try transmitRing.registerBuffers(transmitBuffers)
            let fds = queues.map(\.rawValue)
            try receiveRing.registerFiles(fds)
            try transmitRing.registerFiles(fds)
            try receiveRing.registerEventFD(wake.rawValue)
        } catch {
            throw HostPortError("tap \(name): io_uring set-up failed: \(error) (registered buffers pin \(bufferCount * Self.bufferSize / 1_048_576) MiB; check RLIMIT_MEMLOCK)")
        }
        freeTransmit = .allocate(capacity: Self.transmitDepth)
        for i in 0..<Self.transmitDepth { freeTransmit[i] = Int32(i) }
        freeTransmitCount = Self.transmitDepth
        super.init()
        for q in 0..<queueCount {
            for b in 0..<Self.receiveDepth { queueRead(queue: q, buffer: q * Self.receiveDepth + b) }
        }
        receiveRing.submit()
        logger.info("\(existed ? "attached to existing" : "created") tap, \(queueCount) queue(s), 12-byte virtio-net header\(mtu.map { ", MTU \($0)" } ?? "")")
    }

    deinit {
        freeTransmit.deallocate()
    }

    private static func buffer(at index: Int, in memory: MemoryMapping) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: memory.base + index * Self.bufferSize, count: Self.bufferSize)
    }

    @inline(__always)
    private func receiveBuffer(_ index: Int) -> UnsafeMutableRawPointer { memory.base + index &* Self.bufferSize }

    @inline(__always)
    private func transmitBuffer(_ index: Int) -> UnsafeMutableRawPointer {
        memory.base + (queueCount &* Self.receiveDepth &+ index) &* Self.bufferSize
    }

    @inline(__always)
    private func queueRead(queue: Int, buffer: Int) {
        receiveRing.readFixed(fd: CInt(queue), fixedFile: true, into: receiveBuffer(buffer), length: Self.bufferSize,
                              bufferIndex: buffer, userData: UInt64(buffer))
    }

    /// Sets what the host stack may hand us: the offloads every attached guest can take, so a
    /// segment is never built that a receiver would have to drop.
    public func setOffloads(_ wanted: TapOffloads) {
        guard wanted != offloads else { return }
        do {
            try Tap.setOffloads(queues[0].rawValue, wanted)
            logger.info("offloads \(wanted)")
            offloads = wanted
        } catch {
            logger.warning("TUNSETOFFLOAD \(wanted) failed: \(error)")
        }
    }

    // MARK: Host → switch

    public override func transmit(into lane: SwitchLane, as portIndex: Int, budget: Int) -> Int {
        var moved = 0
        receiveRing.reap { c in
            let index = Int(c.userData)
            let queue = index / Self.receiveDepth
            if c.result > Int32(Self.headerLength) {
                let base = receiveBuffer(index)
                let header = VirtioNetHeader(bytes: base, length: Self.headerLength)
                var segment = Segment(base: base, length: Int(c.result))
                withUnsafePointer(to: &segment) {
                    lane.forward(Frame(header: header, segments: $0, segmentCount: 1, offset: Self.headerLength,
                                       length: Int(c.result) &- Self.headerLength, queuePair: queue), from: portIndex)
                }
                moved &+= 1
            } else if c.result < 0 && c.result != -EAGAIN && c.result != -EINTR {
                readErrors &+= 1
                // A queue whose reads fail (the tap was deleted, or detached) is not re-armed,
                // so it cannot spin; the log says so once.
                if failedQueues.insert(queue).inserted {
                    logger.error("read on queue \(queue) failed: \(Errno(rawValue: -c.result)); queue stopped")
                }
                return
            }
            queueRead(queue: queue, buffer: index)
        }
        if receiveRing.pendingSubmissions > 0 { receiveRing.submit() }
        return moved
    }

    // MARK: Switch → host

    public override func deliver(_ frame: Frame) -> DeliveryResult {
        let total = frame.length &+ Self.headerLength
        guard total <= Self.bufferSize else { return .noRoom }
        if freeTransmitCount == 0 { recycleTransmitBuffers() }
        guard freeTransmitCount > 0 else { return .noRoom }
        freeTransmitCount &-= 1
        let index = Int(freeTransmit[freeTransmitCount])
        let base = transmitBuffer(index)
        var header = frame.header
        header.numBuffers = 0
        header.store(to: base, length: Self.headerLength)
        var cursor = frame.cursor
        _ = cursor.read(into: base + Self.headerLength, length: frame.length)
        let queue = frame.queuePair % queueCount
        transmitRing.writeFixed(fd: CInt(queue), fixedFile: true, from: base, length: total,
                                bufferIndex: index, userData: UInt64(index))
        queuedWrites &+= 1
        return .delivered
    }

    public override func flushDeliveries() {
        if queuedWrites > 0 {
            transmitRing.submit()
            queuedWrites = 0
        }
        recycleTransmitBuffers()
    }

    @inline(__always)
    private func recycleTransmitBuffers() {
        transmitRing.reap { c in
            if c.result == -EIO {
                writesWhileDown &+= 1
            } else if c.result < 0 {
                if writeErrors == 0 { logger.warning("write refused: \(Errno(rawValue: -c.result)) (counted in writeErrors)") }
                writeErrors &+= 1
            }
            freeTransmit[freeTransmitCount] = Int32(truncatingIfNeeded: c.userData)
            freeTransmitCount &+= 1
        }
    }

    // MARK: Sleeping

    public override func wakeDescriptors(for lane: SwitchLane, as portIndex: Int) -> [CInt] { [wake.rawValue] }

    /// Read completions that arrived after the last pass: the worker must not sleep on them.
    public override func prepareToSleep(for lane: SwitchLane, as portIndex: Int) -> Bool { receiveRing.readyCount > 0 }
}

public struct HostPortError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
