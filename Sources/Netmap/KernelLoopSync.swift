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

/// The CSB of a binding: one `nm_csb_atok` (application → kernel) and one `nm_csb_ktoa`
/// (kernel → application) per bound ring, TX rings first, each array 64-byte aligned as the
/// module requires. Owned by whoever allocates it; the kernel writes it while a loop runs.
public final class ControlBlock: @unchecked Sendable {
    public let entries: Int
    let atok: UnsafeMutablePointer<vnm_csb_atok>
    let ktoa: UnsafeMutablePointer<vnm_csb_ktoa>

    public init(entries: Int) {
        precondition(entries > 0)
        self.entries = entries
        let a = UnsafeMutableRawPointer.allocate(byteCount: entries * MemoryLayout<vnm_csb_atok>.stride, alignment: 64)
        a.initializeMemory(as: UInt8.self, repeating: 0, count: entries * MemoryLayout<vnm_csb_atok>.stride)
        atok = a.bindMemory(to: vnm_csb_atok.self, capacity: entries)
        let k = UnsafeMutableRawPointer.allocate(byteCount: entries * MemoryLayout<vnm_csb_ktoa>.stride, alignment: 64)
        k.initializeMemory(as: UInt8.self, repeating: 0, count: entries * MemoryLayout<vnm_csb_ktoa>.stride)
        ktoa = k.bindMemory(to: vnm_csb_ktoa.self, capacity: entries)
    }

    deinit {
        UnsafeMutableRawPointer(atok).deallocate()
        UnsafeMutableRawPointer(ktoa).deallocate()
    }

    // The kernel's side of the CSB, for tests that play the kernel.
    public func application(_ i: Int) -> (head: UInt32, cur: UInt32, needsKick: UInt32) {
        (atok[i].head, atok[i].cur, atok[i].appl_need_kick)
    }
    public func setKernel(_ i: Int, hwcur: UInt32, hwtail: UInt32, needsKick: UInt32) {
        ktoa[i].hwcur = hwcur
        ktoa[i].hwtail = hwtail
        ktoa[i].kern_need_kick = needsKick
    }
}

/// The worker's side of netmap's sync kernel loop: a `NetmapSync` that exchanges ring
/// positions through a `ControlBlock` instead of making system calls. It publishes head/cur
/// (cur first) and reads hwtail/hwcur (hwtail first) with the barriers netmap prescribes
/// (`vnm_csb_*`), copies hwtail into the ring's tail where the port reads it (a value outside
/// the ring is ignored: the port keeps its last valid tail), kicks a ring's ioeventfd only when
/// the loop sleeps and asks for it, and asks for irqfd signals only while the worker sleeps.
///
/// Called by the switch worker only (under the switch lock).
public final class KernelLoopSync: NetmapSync, @unchecked Sendable {
    private let txRings: [NetmapRing]
    private let rxRings: [NetmapRing]
    /// CSB index of the first RX entry (all bound TX rings come first).
    private let firstRX: Int
    private let block: ControlBlock
    private let kicks: [CInt]
    private let interrupts: [CInt]

    /// `kicks` has one eventfd per CSB entry; `interrupts` one per RX ring of the port.
    public init(txRings: [NetmapRing], rxRings: [NetmapRing], firstRX: Int, block: ControlBlock, kicks: [CInt], interrupts: [CInt]) {
        precondition(txRings.count <= firstRX && firstRX + rxRings.count <= block.entries && kicks.count == block.entries)
        self.txRings = txRings
        self.rxRings = rxRings
        self.firstRX = firstRX
        self.block = block
        self.kicks = kicks
        self.interrupts = interrupts
    }

    /// Publishes each TX ring's head/cur, kicks the loop if it sleeps, and takes its hwtail.
    public override func txsync() -> Int32 {
        for k in 0..<txRings.count { exchange(txRings[k], entry: k) }
        return 0
    }

    /// Releases what the RX rings consumed (a loop facing a full ring waits for that), and
    /// takes the new hwtail of each.
    public override func rxsync() -> Int32 {
        for k in 0..<rxRings.count { exchange(rxRings[k], entry: firstRX &+ k) }
        return 0
    }

    public override func refreshTransmitSpace() {
        for k in 0..<txRings.count { refreshTail(txRings[k], entry: k) }
    }

    public override var notificationDescriptors: [CInt] { interrupts }

    /// Asks for irqfd signals, then publishes what the RX rings consumed (a loop facing a full
    /// ring would otherwise wait for a kick while we wait for it) and re-reads hwtail.
    public override func enableNotifications() {
        for k in 0..<rxRings.count {
            vnm_csb_set_appl_need_kick(block.atok + firstRX + k, 1)
            exchange(rxRings[k], entry: firstRX + k)
        }
    }

    public override func disableNotifications() {
        for k in 0..<rxRings.count { vnm_csb_set_appl_need_kick(block.atok + firstRX + k, 0) }
    }

    @inline(__always)
    private func exchange(_ ring: NetmapRing, entry: Int) {
        vnm_csb_appl_write(block.atok + entry, ring.cur, ring.head)
        if vnm_csb_kernel_wants_kick(block.ktoa + entry) != 0 { EventFD.signal(kicks[entry]) }
        refreshTail(ring, entry: entry)
    }

    @inline(__always)
    private func refreshTail(_ ring: NetmapRing, entry: Int) {
        var hwtail: UInt32 = 0, hwcur: UInt32 = 0
        vnm_csb_appl_read(block.ktoa + entry, &hwtail, &hwcur)
        if hwtail < ring.slotCount { ring.tail = hwtail }
    }
}

/// netmap's sync kernel loop on one registration (`NETMAP_REQ_SYNC_KLOOP_START` with the CSB
/// and eventfd options; netmap_kloop.c): its CSB, eventfds, and the thread it runs in.
///
/// The START request does not return while the loop runs: it is the kernel loop, running in the
/// thread that made it. So a thread of ours makes it and stays in the kernel until `stop()`
/// sends `SYNC_KLOOP_STOP` on the same descriptor. The CSB and the request stay allocated until
/// the loop has ended. Each ring has an ioeventfd the worker signals when the loop sleeps and
/// asks for a kick, and each RX ring an irqfd the loop signals when frames arrive and the worker
/// asked for it; TX rings get no irqfd (a full TX ring drops, as VALE does).
public final class KernelLoop: @unchecked Sendable {
    public let name: String
    public let sync: KernelLoopSync
    private let fd: CInt
    private let block: ControlBlock
    private let kicks: [OwnedDescriptor]
    private let interrupts: [OwnedDescriptor]
    /// The START request and its options (the kernel reads them while the loop runs).
    private let request: UnsafeMutableRawPointer
    private var thread: pthread_t?
    private let loopResult = Atomic<Int32>(KernelLoop.running)
    private static let running: Int32 = .min
    /// A value no kernel writes to `kern_need_kick` (it writes 0 or 1): the loop has started
    /// once it has overwritten it.
    private static let notStarted: UInt32 = 0xDEAD_BEEF

    public struct StartError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Enables CSB mode on `fd` (registered with NR_EXCLUSIVE) and starts the kernel loop; waits
    /// until the loop runs (it has written the CSB) or the request failed.
    public init(name: String, fd: CInt, region: NetmapRegion, startTimeoutMilliseconds: Int = 10_000) throws {
        self.name = name
        self.fd = fd
        let rings = try region.portRings()
        let entries = rings.boundTX + rings.boundRX
        guard entries > 0 else { throw StartError(description: "\(name): no bound rings for the kernel loop") }
        block = ControlBlock(entries: entries)
        kicks = try (0..<entries).map { _ in try EventFD.make() }
        interrupts = try (0..<rings.boundRX).map { _ in try EventFD.make() }
        sync = KernelLoopSync(txRings: rings.tx, rxRings: rings.rx, firstRX: rings.boundTX, block: block,
                              kicks: kicks.map(\.rawValue), interrupts: Array(interrupts.prefix(rings.rx.count)).map(\.rawValue))

        // Header + START body + the eventfds option, in one block the kernel reads.
        let headerSize = MemoryLayout<vnm_req_header>.stride
        let bodySize = MemoryLayout<vnm_req_sync_kloop_start>.stride
        let optionSize = MemoryLayout<vnm_req_option>.size + entries * MemoryLayout<vnm_kloop_eventfd>.size
        request = .allocate(byteCount: headerSize + bodySize + optionSize, alignment: 64)
        request.initializeMemory(as: UInt8.self, repeating: 0, count: headerSize + bodySize + optionSize)

        try enableControlBlock()
        for i in 0..<entries {
            block.ktoa[i].kern_need_kick = Self.notStarted
            // Notifications only while the worker sleeps (KernelLoopSync.enableNotifications).
            vnm_csb_set_appl_need_kick(block.atok + i, 0)
        }

        let header = request.bindMemory(to: vnm_req_header.self, capacity: 1)
        header.pointee = NetmapControl.header(Int32(VNM_REQ_SYNC_KLOOP_START), name: name)
        let body = (request + headerSize).bindMemory(to: vnm_req_sync_kloop_start.self, capacity: 1)
        body.pointee.sleep_us = 100  // used only in busy-wait mode (some ioeventfd missing): never here
        let option = (request + headerSize + bodySize).bindMemory(to: vnm_req_option.self, capacity: 1)
        option.pointee.nro_reqtype = UInt32(VNM_OPT_SYNC_KLOOP_EVENTFDS)
        option.pointee.nro_size = UInt64(optionSize)
        let fds = (request + headerSize + bodySize + MemoryLayout<vnm_req_option>.size).bindMemory(to: vnm_kloop_eventfd.self, capacity: entries)
        for i in 0..<entries {
            fds[i].ioeventfd = kicks[i].rawValue
            fds[i].irqfd = i < rings.boundTX ? -1 : interrupts[i - rings.boundTX].rawValue
        }
        header.pointee.nr_body = UInt64(UInt(bitPattern: body))
        header.pointee.nr_options = UInt64(UInt(bitPattern: option))

        try startThread()
        var waited = 0
        while vnm_csb_kernel_wants_kick(block.ktoa) == Self.notStarted {
            if let error = ended {
                join()
                let status = option.pointee.nro_status
                throw StartError(description: "\(name): SYNC_KLOOP_START: \(Errno(rawValue: error))\(status != 0 ? " (eventfds option: \(Errno(rawValue: Int32(status))))" : "")")
            }
            guard waited < startTimeoutMilliseconds else {
                stop()
                throw StartError(description: "\(name): the kernel loop did not start within \(startTimeoutMilliseconds) ms")
            }
            usleep(1_000)
            waited += 1
        }
    }

    deinit {
        stop()
        request.deallocate()
    }

    /// CSB_ENABLE with our CSB: the module checks it and copies the rings' state into it.
    private func enableControlBlock() throws {
        var csb = vnm_opt_csb()
        csb.nro_opt.nro_reqtype = UInt32(VNM_OPT_CSB)
        csb.nro_opt.nro_size = UInt64(MemoryLayout<vnm_opt_csb>.size)
        csb.csb_atok = UInt64(UInt(bitPattern: block.atok))
        csb.csb_ktoa = UInt64(UInt(bitPattern: block.ktoa))
        var enable = NetmapControl.header(Int32(VNM_REQ_CSB_ENABLE), name: name)
        let rc = withUnsafeMutablePointer(to: &csb) { p in
            enable.nr_options = UInt64(UInt(bitPattern: p))
            return vnm_ctrl(fd, &enable)
        }
        if rc < 0 || csb.nro_opt.nro_status != 0 {
            throw StartError(description: "\(name): CSB_ENABLE: \(Errno(rawValue: rc < 0 ? -rc : Int32(csb.nro_opt.nro_status)))")
        }
    }

    private func startThread() throws {
        let unmanaged = Unmanaged.passRetained(self)
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let loop = Unmanaged<KernelLoop>.fromOpaque(arg!).takeRetainedValue()
            Posix.setThreadName("kloop")
            let rc = vnm_ctrl(loop.fd, loop.request.assumingMemoryBound(to: vnm_req_header.self))
            loop.loopResult.store(rc < 0 ? -rc : 0, ordering: .releasing)
            return nil
        }, unmanaged.toOpaque())
        guard rc == 0 else {
            unmanaged.release()
            throw StartError(description: "\(name): pthread_create: \(rc)")
        }
        thread = t
    }

    /// Nil while the kernel loop runs; once it has ended, the errno it ended with (0 after a STOP).
    public var ended: Int32? {
        let r = loopResult.load(ordering: .acquiring)
        return r == Self.running ? nil : r
    }

    /// SYNC_KLOOP_STOP on the descriptor, then waits for the loop's thread. Idempotent.
    public func stop() {
        guard thread != nil else { return }
        if ended == nil {
            var header = NetmapControl.header(Int32(VNM_REQ_SYNC_KLOOP_STOP), name: name)
            _ = vnm_ctrl(fd, &header)
        }
        join()
    }

    private func join() {
        if let t = thread { pthread_join(t, nil) }
        thread = nil
    }
}
