import Glibc
import Testing
import TestSupport
import VALESwitch
@testable import VhostNetmapBackend
import VhostSystem
import VhostUser
import Virtio

/// A dirty log as QEMU gives it: a memfd of `bytes`, mapped here too so the test reads the bits.
final class FrontEndLog {
    let descriptor: OwnedDescriptor
    let mapping: MemoryMapping
    let bytes: Int

    init(bytes: Int) throws {
        descriptor = try MemFD.make(name: "dirty-log", size: bytes)
        mapping = try MemoryMapping(descriptor: descriptor.rawValue, length: bytes)
        self.bytes = bytes
    }

    /// The pages whose bits are set.
    var markedPages: Set<UInt64> {
        var pages = Set<UInt64>()
        for i in 0..<bytes {
            let b = mapping.base.load(fromByteOffset: i, as: UInt8.self)
            for bit in 0..<8 where b & (1 << bit) != 0 { pages.insert(UInt64(i * 8 + bit)) }
        }
        return pages
    }

    func clear() { memset(mapping.base, 0, bytes) }

    /// SET_LOG_BASE for this log (a duplicate of its descriptor, as a front-end sends it).
    func setLogBase(size: UInt64? = nil, offset: UInt64 = 0) -> VhostUserMessage {
        message(.setLogBase, LogRegion(size: size ?? UInt64(bytes), offset: offset).encoded(),
                fds: [OwnedDescriptor(adopting: dup(descriptor.rawValue))])
    }
}

func pages(_ address: UInt64, _ length: Int) -> Set<UInt64> {
    Set((address / 4096)...((address + UInt64(length) - 1) / 4096))
}

/// Live migration's dirty log: while LOG_ALL is negotiated every page the back-end writes in
/// guest memory is marked (receive buffers, the used ring at its log address), and nothing else.
@Suite struct DirtyLogging {
    /// b logs its RX ring; a sends to b. Before LOG_ALL nothing is marked; with it, exactly the
    /// pages of the buffers b received and of its used ring; after LOG_ALL is turned off again,
    /// nothing more.
    @Test func marksExactlyThePagesTheDeviceWrites() throws {
        let (vale, a, b) = try startedPair()
        let log = try FrontEndLog(bytes: Int(DirtyLog.byteCount(coveringUpTo: UInt64(b.memory.size))))
        try b.handle(log.setLogBase())
        // Before LOG_ALL: traffic marks nothing.
        b.postReceiveBuffers(4, size: 6000)
        a.send(ethernet(to: b.mac, from: a.mac, payload: 1000))
        pump(vale)
        #expect(b.receive().count == 1)
        #expect(log.markedPages.isEmpty)
        // LOG_ALL on, and the RX ring's used ring logged at its guest-physical address.
        try b.handle(message(.setFeatures, u64(b.features.union(.logAll).rawValue)))
        let rx = b.rx[0]
        let ra = rx.addresses
        try b.handle(message(.setVringAddr, VringAddress(index: 0, flags: VringAddress.logFlag, descriptorTable: ra.descriptorTable.value,
                                                         usedRing: ra.usedRing.value, availRing: ra.availRing.value, log: rx.usedRing).encoded()))
        a.send(ethernet(to: b.mac, from: a.mac, payload: 5000, seed: 1))
        a.send(ethernet(to: b.mac, from: a.mac, payload: 60, seed: 2))
        pump(vale)
        let used = b.rx[0].reapUsedWithAddresses()
        #expect(used.count == 2)
        var expected = pages(rx.usedRing, SplitRingLayout.usedBytes(rx.size))
        for u in used { expected.formUnion(pages(u.address, Int(u.length))) }
        #expect(log.markedPages == expected)
        #expect(b.device.statusLocked().dirtyLog?.pagesMarked == expected.count)
        // LOG_ALL off: nothing more is marked.
        log.clear()
        try b.handle(message(.setFeatures, u64(b.features.rawValue)))
        a.send(ethernet(to: b.mac, from: a.mac, payload: 60, seed: 3))
        pump(vale)
        #expect(b.receive().count == 1)
        #expect(log.markedPages.isEmpty)
    }

    /// The sender's side: its TX ring only has its used ring written, and that is what is marked.
    @Test func aTransmittingGuestHasItsUsedRingMarked() throws {
        let (vale, a, b) = try startedPair()
        let log = try FrontEndLog(bytes: Int(DirtyLog.byteCount(coveringUpTo: UInt64(a.memory.size))))
        try a.handle(log.setLogBase())
        try a.handle(message(.setFeatures, u64(a.features.union(.logAll).rawValue)))
        let tx = a.tx[0]
        let ta = tx.addresses
        try a.handle(message(.setVringAddr, VringAddress(index: 1, flags: VringAddress.logFlag, descriptorTable: ta.descriptorTable.value,
                                                         usedRing: ta.usedRing.value, availRing: ta.availRing.value, log: tx.usedRing).encoded()))
        b.postReceiveBuffers(4)
        a.send(ethernet(to: b.mac, from: a.mac, payload: 60))
        pump(vale)
        #expect(b.receive().count == 1)
        #expect(log.markedPages == pages(tx.usedRing, SplitRingLayout.usedBytes(tx.size)))
    }
}

/// SET_LOG_BASE and SET_LOG_FD from a hostile front-end: refused by the rule that applies, the
/// bystanders unharmed.
extension HostileMessages {
    @Test func badLogsAreRefused() throws {
        let log = try FrontEndLog(bytes: 4096)
        refused(log.setLogBase(), by: .refused(.setLogBase, .notNegotiated(.logSHMFD)))
        try victim.start()
        let needed = DirtyLog.byteCount(coveringUpTo: UInt64(victim.memory.size))
        refused(log.setLogBase(size: 0), by: .refused(.setLogBase, .dirtyLog(DirtyLog.SetupError.emptyLog.description)))
        refused(log.setLogBase(size: 4096, offset: 1), by: .refused(.setLogBase, .dirtyLog(DirtyLog.SetupError.beyondFileEnd(needed: 4097, fileSize: 4096).description)))
        refused(log.setLogBase(size: 16, offset: .max - 8), by: .refused(.setLogBase, .dirtyLog(DirtyLog.SetupError.addressOverflow.description)))
        refused(log.setLogBase(size: 1 << 40), by: .refused(.setLogBase, .dirtyLog(DirtyLog.SetupError.tooLarge(1 << 40).description)))
        refused(log.setLogBase(size: needed - 1), by: .refused(.setLogBase, .dirtyLog(DirtyLog.SetupError.tooSmallForMemory(needed - 1, needed: needed).description)))
        // No descriptor, two descriptors, a short payload: framing.
        #expect(throws: ProtocolError.self) { try victim.handle(message(.setLogBase, LogRegion(size: 4096, offset: 0).encoded())) }
        #expect(throws: ProtocolError.self) {
            try victim.handle(message(.setLogBase, LogRegion(size: 4096, offset: 0).encoded(), fds: [try EventFD.make(), try EventFD.make()]))
        }
        #expect(throws: ProtocolError.self) { try victim.handle(message(.setLogBase, [1, 2, 3], fds: [try EventFD.make()])) }
        // An eventfd is not a log (it has no size to map).
        #expect(throws: ProtocolError.self) { try victim.handle(message(.setLogBase, LogRegion(size: 8, offset: 0).encoded(), fds: [try EventFD.make()])) }
        // SET_LOG_FD takes an eventfd only.
        #expect(throws: ProtocolError.self) { try victim.handle(message(.setLogFD, [], fds: [OwnedDescriptor(adopting: dup(log.descriptor.rawValue))])) }
        try victim.handle(message(.setLogFD, [], fds: [try EventFD.make()]))
        // A log that fits is taken, and traffic of the bystanders is not logged into it.
        try victim.handle(log.setLogBase())
        bystandersStillWork()
        #expect(log.markedPages.isEmpty)
    }
}
