import Glibc
import Testing
import TestSupport
import VALESwitch
@testable import VhostNetmapBackend
import VhostSystem
import VhostUser
import Virtio

extension TestGuest {
    /// The guest's memory as two regions of one file (its lower and upper half), as a front-end
    /// with memory slots adds them one at a time.
    var halves: [MemoryRegionDescription] {
        let whole = region
        let half = whole.size / 2
        return [MemoryRegionDescription(guestPhysicalAddress: whole.guestPhysicalAddress, size: half, userAddress: whole.userAddress, mmapOffset: 0),
                MemoryRegionDescription(guestPhysicalAddress: whole.guestPhysicalAddress + half, size: half,
                                        userAddress: whole.userAddress + half, mmapOffset: half)]
    }

    func addRegion(_ r: MemoryRegionDescription) throws {
        try handle(message(.addMemReg, SingleMemoryRegion(r).encoded(), fds: [OwnedDescriptor(adopting: dup(memory.descriptor.rawValue))]))
    }

    func removeRegion(_ r: MemoryRegionDescription, withDescriptor: Bool = false) throws {
        try handle(message(.remMemReg, SingleMemoryRegion(r).encoded(),
                           fds: withDescriptor ? [OwnedDescriptor(adopting: dup(memory.descriptor.rawValue))] : []))
    }

    /// Start-up as QEMU does it with CONFIGURE_MEM_SLOTS: no SET_MEM_TABLE, regions added one by one.
    func startWithMemorySlots() throws {
        try handle(message(.setOwner))
        let f = VhostNetDevice.offeredFeatures.subtracting([.logAll, .ringPacked])
        try handle(message(.setProtocolFeatures, u64(VhostNetDevice.offeredProtocolFeatures.rawValue)))
        try handle(message(.setFeatures, u64(f.rawValue)))
        features = f
        guard case .reply(let slots) = try handle(message(.getMaxMemSlots)) else { throw ProtocolError.unsupported(.getMaxMemSlots) }
        #expect(slots.withUnsafeBytes { $0.u64 } == UInt64(GuestMemory.maxSlots))
        for r in halves { try addRegion(r) }
        let r = DriverQueue(size: 256, memory: memory)
        let t = DriverQueue(size: 256, memory: memory)
        r.inOrder = f.contains(.inOrder)
        t.inOrder = f.contains(.inOrder)
        rx.append(r)
        tx.append(t)
        try startRing(0, r)
        try startRing(1, t)
    }
}

/// Memory slots: regions added and removed one at a time, as QEMU does for memory hot-plug.
@Suite struct MemorySlots {
    /// A guest whose memory came in two ADD_MEM_REGs exchanges frames; a third region added
    /// while rings run leaves them running.
    @Test func framesFlowThroughRegionsAddedOneByOne() throws {
        let vale = VALESwitch(name: "vale0")
        let a = try TestGuest("a", on: vale, mac: 1)
        let b = try TestGuest("b", on: vale, mac: 2)
        try a.start()
        try b.startWithMemorySlots()
        #expect(b.device.memory?.regions.count == 2)
        b.postReceiveBuffers(16, size: 2048)
        let frames = (0..<8).map { ethernet(to: b.mac, from: a.mac, payload: 1000, seed: UInt8($0)) }
        for f in frames { a.send(f) }
        pump(vale)
        #expect(b.receive().map(\.frame) == frames)
        // Hot-plugged memory: a new file at a new guest address.
        let dimm = try DriverMemory(size: 1 << 20, guestPhysicalBase: 1 << 32)
        let s = dimm.regionSpec
        try b.handle(message(.addMemReg, SingleMemoryRegion(MemoryRegionDescription(
            guestPhysicalAddress: s.guestPhysicalAddress.value, size: s.size, userAddress: s.userAddress.value, mmapOffset: 0)).encoded(),
            fds: [OwnedDescriptor(adopting: dup(dimm.descriptor.rawValue))]))
        #expect(b.device.memory?.regions.count == 3)
        b.send(ethernet(to: a.mac, from: b.mac, payload: 60))
        a.postReceiveBuffers(4)
        pump(vale)
        #expect(a.receive().count == 1)
        #expect(b.device.statusLocked().brokenRings.isEmpty)
    }

    /// Removing the region that holds running rings stops and breaks them (error eventfd
    /// signalled), and nothing faults; the other ports go on; the device's next setup runs again.
    @Test func removingTheRingsRegionBreaksThoseRingsOnly() throws {
        // b is the subject here (memory slots); a and c are the bystanders.
        let (vale, b, a, c) = try bystandersAndSubject("s", mac: 3)
        try b.startWithMemorySlots()
        let errorFD = try EventFD.make()
        try b.handle(message(.setVringErr, u64(0), fds: [OwnedDescriptor(adopting: dup(errorFD.rawValue))]))
        // The rings were allocated at the start of the guest's memory: the lower half.
        try b.removeRegion(b.halves[0], withDescriptor: true)
        #expect(b.device.statusLocked().brokenRings == [0, 1])
        #expect(EventFD.drain(errorFD.rawValue) == 1)
        // Frames for b now have nowhere to go, and b's kicks move nothing; a and c are untouched.
        b.send(ethernet(to: a.mac, from: b.mac, payload: 60))
        let toB = ethernet(to: b.mac, from: a.mac, payload: 60)
        a.send(toB)
        c.postReceiveBuffers(4)
        let f = ethernet(to: c.mac, from: a.mac, payload: 200)
        a.send(f)
        pump(vale)
        // b's address was never learned (it never sent), so the frame for it is flooded to c.
        #expect(c.receive().map(\.frame) == [toB, f])
        #expect(b.device.statusLocked().readyRX == 0)
        // The same region again, or one never added: refused, nothing changes.
        #expect(throws: ProtocolError.refused(.remMemReg, .noSuchRegion(b.halves[0]))) { try b.removeRegion(b.halves[0]) }
        #expect(b.device.memory?.regions.count == 1)
    }

    /// What a front-end controls, refused by the rule that applies: no negotiation, overlap (in
    /// guest or front-end addresses), a region beyond its file, slots exhausted at 510, framing.
    @Test func hostileRegionsAreRefused() throws {
        let (vale, v, a, b) = try bystandersAndSubject("v", mac: 9)
        let first = v.halves[0]
        #expect(throws: ProtocolError.refused(.addMemReg, .notNegotiated(.configureMemSlots))) { try v.addRegion(first) }
        #expect(throws: ProtocolError.refused(.getMaxMemSlots, .notNegotiated(.configureMemSlots))) { try v.handle(message(.getMaxMemSlots)) }
        try v.handle(message(.setProtocolFeatures, u64(ProtocolFeatures.configureMemSlots.rawValue)))
        try v.addRegion(first)
        var overlapGuest = v.halves[1]
        overlapGuest.guestPhysicalAddress = first.guestPhysicalAddress + 4096
        #expect(throws: ProtocolError.self) { try v.addRegion(overlapGuest) }
        var overlapUser = v.halves[1]
        overlapUser.userAddress = first.userAddress
        #expect(throws: ProtocolError.self) { try v.addRegion(overlapUser) }
        var beyondFile = v.halves[1]
        beyondFile.mmapOffset = v.region.size
        #expect(throws: ProtocolError.self) { try v.addRegion(beyondFile) }
        var wraps = v.halves[1]
        wraps.guestPhysicalAddress = .max - 4095
        #expect(throws: ProtocolError.self) { try v.addRegion(wraps) }
        var empty = v.halves[1]
        empty.size = 0
        #expect(throws: ProtocolError.self) { try v.addRegion(empty) }
        // Framing: ADD without its descriptor, REM with two, short payloads.
        #expect(throws: ProtocolError.self) { try v.handle(message(.addMemReg, SingleMemoryRegion(v.halves[1]).encoded())) }
        #expect(throws: ProtocolError.self) {
            try v.handle(message(.remMemReg, SingleMemoryRegion(first).encoded(), fds: [try EventFD.make(), try EventFD.make()]))
        }
        #expect(throws: ProtocolError.self) { try v.handle(message(.addMemReg, [1, 2, 3], fds: [try EventFD.make()])) }
        #expect(v.device.memory?.regions.count == 1)
        // Slots: 4 KiB regions of one file up to the limit, then refused.
        let file = try MemFD.make(name: "slots", size: 4096 * (GuestMemory.maxSlots + 1))
        for i in 1..<GuestMemory.maxSlots {
            let r = MemoryRegionDescription(guestPhysicalAddress: (1 << 40) + UInt64(i) * 4096, size: 4096,
                                            userAddress: (1 << 46) + UInt64(i) * 4096, mmapOffset: UInt64(i) * 4096)
            try v.handle(message(.addMemReg, SingleMemoryRegion(r).encoded(), fds: [OwnedDescriptor(adopting: dup(file.rawValue))]))
        }
        #expect(v.device.memory?.regions.count == GuestMemory.maxSlots)
        let extra = MemoryRegionDescription(guestPhysicalAddress: 1 << 41, size: 4096, userAddress: 1 << 47, mmapOffset: 0)
        #expect(throws: ProtocolError.refused(.addMemReg, .memorySlotsFull(max: GuestMemory.maxSlots))) {
            try v.handle(message(.addMemReg, SingleMemoryRegion(extra).encoded(), fds: [OwnedDescriptor(adopting: dup(file.rawValue))]))
        }
        // Bystanders exchange frames throughout.
        b.postReceiveBuffers(2)
        let f = ethernet(to: b.mac, from: a.mac, payload: 100)
        a.send(f)
        pump(vale)
        #expect(b.receive().map(\.frame) == [f])
    }
}
