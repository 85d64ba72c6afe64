import DataPath
import CNetmap
import Netmap
import Testing
import TestSupport
import VALESwitch
import VhostSystem
import Virtio

/// The worker's side of netmap's sync kernel loop, with the test playing the kernel on the CSB
/// (the real loop runs in the guest tests: Tests/Integration/netmap-kernel.sh). Ring memory is
/// laid out by `KernelModel`; CSB entry 0 is the TX ring, entry 1 the RX ring.
@Suite struct KernelLoopExchange {
    let model = KernelModel(slots: 64)
    let block = ControlBlock(entries: 2)
    let kicks = [try! EventFD.make(), try! EventFD.make()]
    let interrupt = try! EventFD.make()
    let tx: NetmapRing
    let rx: NetmapRing
    let sync: KernelLoopSync

    init() throws {
        let rings = try model.region.portRings()
        #expect(rings.boundTX == 1 && rings.boundRX == 1)
        tx = rings.tx[0]
        rx = rings.rx[0]
        sync = KernelLoopSync(txRings: rings.tx, rxRings: rings.rx, firstRX: rings.boundTX, block: block,
                              kicks: kicks.map(\.rawValue), interrupts: [interrupt.rawValue])
    }

    @Test func txsyncPublishesHeadAndCurAndKicksOnlyAKernelThatAsks() {
        tx.cur = 5
        tx.head = 4
        block.setKernel(0, hwcur: 0, hwtail: 63, needsKick: 0)
        _ = sync.txsync()
        let published = block.application(0)
        #expect(published.head == 4 && published.cur == 5)
        #expect(EventFD.drain(kicks[0].rawValue) == 0, "a running loop is not kicked")
        block.setKernel(0, hwcur: 4, hwtail: 3, needsKick: 1)
        _ = sync.txsync()
        #expect(EventFD.drain(kicks[0].rawValue) == 1, "a sleeping loop that asked is kicked once")
        #expect(tx.tail == 3, "the loop's hwtail is the ring's tail")
        #expect(EventFD.drain(kicks[1].rawValue) == 0, "the RX ring's kick is left alone")
    }

    @Test func aHwtailOutsideTheRingIsIgnored() {
        block.setKernel(1, hwcur: 0, hwtail: 7, needsKick: 0)
        _ = sync.rxsync()
        #expect(rx.tail == 7)
        #expect(EventFD.drain(kicks[1].rawValue) == 0)
        block.setKernel(1, hwcur: 0, hwtail: 7, needsKick: 1)
        sync.enableNotifications()
        #expect(EventFD.drain(kicks[1].rawValue) == 1, "a loop waiting for RX slots is kicked when the worker goes to sleep")
        for bad: UInt32 in [64, 65, 1000, .max] {
            block.setKernel(1, hwcur: 0, hwtail: bad, needsKick: 0)
            _ = sync.rxsync()
            sync.enableNotifications()
            #expect(rx.tail == 7, "hwtail \(bad) is not a slot of a 64-slot ring")
        }
    }

    @Test func notificationsAreAskedForOnlyWhileTheWorkerSleeps() {
        #expect(sync.notificationDescriptors == [interrupt.rawValue])
        sync.enableNotifications()
        #expect(block.application(1).needsKick == 1, "RX: signal the irqfd when frames arrive")
        #expect(block.application(0).needsKick == 0, "TX: no interrupts for TX space")
        sync.disableNotifications()
        #expect(block.application(1).needsKick == 0)
    }

    /// A port on the loop forwards what the "kernel" reports through the CSB, and only that.
    @Test func aPortForwardsTheFramesTheLoopReports() throws {
        let port = try NetmapKernelPort(name: "vale0:k", region: model.region, headerLength: 12, sync: sync, pollDescriptor: -1)
        let vale = VALESwitch(name: "kloop")
        let capture = CapturePort()
        _ = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(port, named: "netmap") }
        _ = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(capture, named: "c") }
        let frames = (0..<3).map { n in [UInt8](repeating: 0xff, count: 6) + [2, 0, 0, 0, 0, 1, 0x08, 0x00] + (0..<(100 + n)).map { UInt8(truncatingIfNeeded: $0 &+ n) } }
        // The kernel's work: slots filled by the model (which also writes the ring's tail, as an
        // ioctl would), then tail put back and hwtail reported through the CSB only.
        for f in frames { model.enqueueReceive([UInt8](repeating: 0, count: 12) + f) }
        _ = model.rxsync()
        let hwtail = rx.tail
        model.ring(rx: 0).pointee.tail = rx.head
        #expect(vale.lock.withLock { _ in vale.runPass(budget: 32) } == 0, "nothing before the loop reports it")
        block.setKernel(1, hwcur: 0, hwtail: hwtail, needsKick: 0)
        _ = vale.lock.withLock { _ in vale.runPass(budget: 32) }
        #expect(capture.frames.map(\.1) == frames)
        #expect(port.prepareToSleep(for: vale.lanes[0], as: 0) == false && block.application(1).needsKick == 1)
        #expect(block.application(1).head == hwtail, "before sleeping, the consumed slots are released through the CSB")
        port.finishSleeping(for: vale.lanes[0], as: 0)
        #expect(block.application(1).needsKick == 0)
    }
}
