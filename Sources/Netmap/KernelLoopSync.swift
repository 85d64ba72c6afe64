internal import CNetmap
import Glibc
import Synchronization
import SystemPackage
import VhostSystem

/// How a kernel port's rings are synchronised with the netmap module.
public enum NetmapSyncMode: String, Sendable, CaseIterable, Codable {
    /// NIOCTXSYNC / NIOCRXSYNC per batch; the worker sleeps in a poll of the netmap descriptor.
    case ioctl
    /// netmap's sync kernel loop (ptnetmap's host side): a kernel thread syncs the rings, the
    /// worker exchanges head/cur and hwcur/hwtail with it through the CSB, with an eventfd each
    /// way per ring and no system call per batch.
    case kloop
}

/// The worker's side of netmap's sync kernel loop on one registration
/// (`NETMAP_REQ_SYNC_KLOOP_START` with the CSB and eventfd options; netmap_kloop.c).
///
/// The START request does not return while the loop runs: it is the kernel loop, running in the
/// thread that made it. So a thread of ours makes it and stays in the kernel until `stop()`
/// sends `SYNC_KLOOP_STOP` on the same descriptor. The CSB (one `nm_csb_atok` and one
/// `nm_csb_ktoa` per bound ring, TX rings first) is ours, 64-byte aligned and kept until the
/// loop has ended. Each ring has an ioeventfd we signal when the loop sleeps and asks for a kick,
/// and each RX ring an irqfd the loop signals when frames arrive and we asked for it.
///
/// The sync methods are called by the switch worker only (under the switch lock).
public final class KernelLoopSync: NetmapSync, @unchecked Sendable {
    public let name: String
    private let fd: CInt
    private let txRings: [NetmapRing]
    private let rxRings: [NetmapRing]
    private let boundTX: Int
    private let ringCount: Int
    private let atok: UnsafeMutablePointer<vnm_csb_atok>
    private let ktoa: UnsafeMutablePointer<vnm_csb_ktoa>
    private let kicks: [OwnedDescriptor]
    private let interrupts: [OwnedDescriptor]
    private let interruptDescriptors: [CInt]
    /// The START request and its options, alive while the loop runs (the kernel reads them).
    private let request: UnsafeMutableRawPointer
    private var thread: pthread_t?
    private let loopResult = Atomic<Int32>(KernelLoopSync.running)
    private static let running: Int32 = .min

    public enum StartError: Error, CustomStringConvertible {
        case failed(String)
        public var description: String { switch self { case .failed(let s): s } }
    }

    /// A value no kernel writes to `kern_need_kick` (it writes 0 or 1): the loop has started
    /// once it has overwritten it.
    private static let notStarted: UInt32 = 0xDEAD_BEEF

    /// Enables CSB mode on `fd` (registered with NR_EXCLUSIVE) and starts the kernel loop; waits
    /// until the loop runs (it has written the CSB) or the request failed.
    public init(name: String, fd: CInt, region: NetmapRegion, startTimeoutMilliseconds: Int = 10_000) throws {
        self.name = name
        self.fd = fd
        let rings = try region.portRings()
        txRings = rings.tx
        rxRings = rings.rx
        boundTX = rings.boundTX
        ringCount = rings.boundTX + rings.boundRX
        guard ringCount > 0 else { throw StartError.failed("\(name): no bound rings for the kernel loop") }
        let atokRaw = UnsafeMutableRawPointer.allocate(byteCount: ringCount * MemoryLayout<vnm_csb_atok>.stride, alignment: 64)
        atokRaw.initializeMemory(as: UInt8.self, repeating: 0, count: ringCount * MemoryLayout<vnm_csb_atok>.stride)
        atok = atokRaw.bindMemory(to: vnm_csb_atok.self, capacity: ringCount)
        let ktoaRaw = UnsafeMutableRawPointer.allocate(byteCount: ringCount * MemoryLayout<vnm_csb_ktoa>.stride, alignment: 64)
        ktoaRaw.initializeMemory(as: UInt8.self, repeating: 0, count: ringCount * MemoryLayout<vnm_csb_ktoa>.stride)
        ktoa = ktoaRaw.bindMemory(to: vnm_csb_ktoa.self, capacity: ringCount)
        kicks = try (0..<ringCount).map { _ in try EventFD.make() }
        interrupts = try (0..<ringCount - boundTX).map { _ in try EventFD.make() }
        interruptDescriptors = interrupts.map(\.rawValue)

        // Header + START body + the eventfds option, in one block the kernel reads.
        let eventfdsSize = MemoryLayout<vnm_req_option>.size + ringCount * MemoryLayout<vnm_kloop_eventfd>.size
        let headerSize = MemoryLayout<vnm_req_header>.stride
        let bodySize = MemoryLayout<vnm_req_sync_kloop_start>.stride
        request = .allocate(byteCount: headerSize + bodySize + eventfdsSize, alignment: 64)
        request.initializeMemory(as: UInt8.self, repeating: 0, count: headerSize + bodySize + eventfdsSize)
        super.init()

        // CSB mode: the kernel copies the current ring state into the CSB.
        var csb = vnm_opt_csb()
        csb.nro_opt.nro_reqtype = UInt32(VNM_OPT_CSB)
        csb.nro_opt.nro_size = UInt64(MemoryLayout<vnm_opt_csb>.size)
        csb.csb_atok = UInt64(UInt(bitPattern: atok))
        csb.csb_ktoa = UInt64(UInt(bitPattern: ktoa))
        var enable = NetmapControl.header(Int32(VNM_REQ_CSB_ENABLE), name: name)
        let enabled = withUnsafeMutablePointer(to: &csb) { p in
            enable.nr_options = UInt64(UInt(bitPattern: p))
            return vnm_ctrl(fd, &enable)
        }
        if enabled < 0 || csb.nro_opt.nro_status != 0 {
            release()
            throw StartError.failed("\(name): CSB_ENABLE: \(Errno(rawValue: enabled < 0 ? -enabled : Int32(csb.nro_opt.nro_status)))")
        }
        for i in 0..<ringCount { ktoa[i].kern_need_kick = Self.notStarted }
        // Notifications only when the worker is about to sleep (enableNotifications).
        for i in 0..<ringCount { vnm_csb_set_appl_need_kick(atok + i, 0) }

        let header = request.bindMemory(to: vnm_req_header.self, capacity: 1)
        header.pointee = NetmapControl.header(Int32(VNM_REQ_SYNC_KLOOP_START), name: name)
        let body = (request + headerSize).bindMemory(to: vnm_req_sync_kloop_start.self, capacity: 1)
        body.pointee.sleep_us = 100  // used only if some ioeventfd were missing (busy-wait mode)
        let option = (request + headerSize + bodySize).bindMemory(to: vnm_req_option.self, capacity: 1)
        option.pointee.nro_reqtype = UInt32(VNM_OPT_SYNC_KLOOP_EVENTFDS)
        option.pointee.nro_size = UInt64(eventfdsSize)
        let entries = (request + headerSize + bodySize + MemoryLayout<vnm_req_option>.size).bindMemory(to: vnm_kloop_eventfd.self, capacity: ringCount)
        for i in 0..<ringCount {
            entries[i].ioeventfd = kicks[i].rawValue
            entries[i].irqfd = i < boundTX ? -1 : interrupts[i - boundTX].rawValue  // no TX-space interrupts: a full TX ring drops
        }
        header.pointee.nr_body = UInt64(UInt(bitPattern: body))
        header.pointee.nr_options = UInt64(UInt(bitPattern: option))

        let unmanaged = Unmanaged.passRetained(self)
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let loop = Unmanaged<KernelLoopSync>.fromOpaque(arg!).takeRetainedValue()
            Posix.setThreadName("kloop")
            let rc = vnm_ctrl(loop.fd, loop.request.assumingMemoryBound(to: vnm_req_header.self))
            loop.loopResult.store(rc < 0 ? -rc : 0, ordering: .releasing)
            return nil
        }, unmanaged.toOpaque())
        guard rc == 0 else {
            unmanaged.release()
            release()
            throw StartError.failed("\(name): pthread_create: \(rc)")
        }
        thread = t
        var waited = 0
        while vnm_csb_kernel_wants_kick(ktoa) == Self.notStarted {
            let result = loopResult.load(ordering: .acquiring)
            if result != Self.running {
                join()
                let status = option.pointee.nro_status
                release()
                throw StartError.failed("\(name): SYNC_KLOOP_START: \(Errno(rawValue: result))\(status != 0 ? " (eventfds option: \(Errno(rawValue: Int32(status))))" : "")")
            }
            if waited >= startTimeoutMilliseconds {
                stop()
                release()
                throw StartError.failed("\(name): the kernel loop did not start within \(startTimeoutMilliseconds) ms")
            }
            usleep(1_000)
            waited += 1
        }
    }

    deinit {
        stop()
        release()
    }

    /// Whether the kernel loop still runs; when it has ended, the errno it ended with (0 after a
    /// STOP).
    public var ended: Int32? {
        let r = loopResult.load(ordering: .acquiring)
        return r == Self.running ? nil : r
    }

    /// SYNC_KLOOP_STOP on the descriptor, then waits for the loop's thread. Idempotent.
    public func stop() {
        guard thread != nil else { return }
        if loopResult.load(ordering: .acquiring) == Self.running {
            var header = NetmapControl.header(Int32(VNM_REQ_SYNC_KLOOP_STOP), name: name)
            _ = vnm_ctrl(fd, &header)
        }
        join()
    }

    private func join() {
        if let t = thread { pthread_join(t, nil) }
        thread = nil
    }

    private var released = false
    private func release() {
        guard !released else { return }
        released = true
        UnsafeMutableRawPointer(atok).deallocate()
        UnsafeMutableRawPointer(ktoa).deallocate()
        request.deallocate()
    }

    // MARK: The worker's side of the CSB

    /// Publishes each TX ring's head/cur, kicks the loop if it sleeps, and takes its hwtail.
    public override func txsync() -> Int32 {
        for k in 0..<txRings.count {
            let ring = txRings[k]
            vnm_csb_appl_write(atok + k, ring.cur, ring.head)
            if vnm_csb_kernel_wants_kick(ktoa + k) != 0 { EventFD.signal(kicks[k].rawValue) }
            refreshTail(ring, ktoa + k)
        }
        return 0
    }

    /// Releases what the RX rings consumed (a full ring's loop waits for that), and takes the
    /// new hwtail of each.
    public override func rxsync() -> Int32 {
        for k in 0..<rxRings.count {
            let ring = rxRings[k]
            let entry = boundTX &+ k
            vnm_csb_appl_write(atok + entry, ring.cur, ring.head)
            if vnm_csb_kernel_wants_kick(ktoa + entry) != 0 { EventFD.signal(kicks[entry].rawValue) }
            refreshTail(ring, ktoa + entry)
        }
        return 0
    }

    public override func refreshTransmitSpace() {
        for k in 0..<txRings.count { refreshTail(txRings[k], ktoa + k) }
    }

    public override var notificationDescriptors: [CInt] { interruptDescriptors }

    public override func enableNotifications() {
        for k in 0..<rxRings.count {
            vnm_csb_set_appl_need_kick(atok + boundTX + k, 1)
            refreshTail(rxRings[k], ktoa + boundTX + k)
        }
    }

    public override func disableNotifications() {
        for k in 0..<rxRings.count { vnm_csb_set_appl_need_kick(atok + boundTX + k, 0) }
    }

    /// hwtail from the CSB into the ring's tail, where the port reads it; a value outside the
    /// ring is ignored (the port's own checks then see the old, valid tail).
    @inline(__always)
    private func refreshTail(_ ring: NetmapRing, _ entry: UnsafeMutablePointer<vnm_csb_ktoa>) {
        var hwtail: UInt32 = 0, hwcur: UInt32 = 0
        vnm_csb_appl_read(entry, &hwtail, &hwcur)
        if hwtail < ring.slotCount { ring.tail = hwtail }
    }
}

