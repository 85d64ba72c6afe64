import SystemPackage
import VhostSystem
import VhostUser
import Virtio

// Memory slots (CONFIGURE_MEM_SLOTS): QEMU adds and removes guest memory one region at a time
// (memory hot-plug: pc-dimm, virtio-mem) rather than resending the table. Each change swaps the
// device's GuestMemory under the paused data path; the rings move to the new table.
extension VhostNetDevice {
    /// GET_MAX_MEM_SLOTS.
    func maxMemorySlots() throws(Refusal) -> UInt64 {
        guard protocolFeatures.contains(.configureMemSlots) else { throw .notNegotiated(.configureMemSlots) }
        return UInt64(GuestMemory.maxSlots)
    }

    /// ADD_MEM_REG: the region is checked like one of SET_MEM_TABLE (its file, overflow, overlap
    /// with every region mapped now) before anything changes.
    func addMemoryRegion(_ r: MemoryRegionDescription, _ descriptor: OwnedDescriptor) throws(Refusal) {
        guard protocolFeatures.contains(.configureMemSlots) else { throw .notNegotiated(.configureMemSlots) }
        let current = memory ?? GuestMemory.empty()
        guard current.regions.count < GuestMemory.maxSlots else { throw .memorySlotsFull(max: GuestMemory.maxSlots) }
        let spec = GuestRegionSpec(guestPhysicalAddress: GuestPhysicalAddress(r.guestPhysicalAddress), size: r.size,
                                   userAddress: FrontEndAddress(r.userAddress), mmapOffset: r.mmapOffset)
        let grown: GuestMemory
        do {
            grown = try current.adding(spec, descriptor: descriptor)
        } catch {
            throw .memoryTable(error.description)
        }
        // More memory cannot move a running ring out of it: attaching to the new table succeeds.
        try withDatapathPaused { () throws(Refusal) in
            memory = grown
            for (i, v) in vrings.enumerated() where v.started { try attach(UInt32(i)) }
        }
        logger.info("memory region added at 0x\(String(r.guestPhysicalAddress, radix: 16)) (\(r.size >> 20) MiB): \(grown.regions.count) region(s), \(grown.totalSize >> 20) MiB")
    }

    /// REM_MEM_REG: the region with this guest address, front-end address and size goes. A
    /// running ring that lay in it cannot run any more: it is stopped and marked broken (error
    /// eventfd, one log line), never left pointing at memory the guest gave back.
    func removeMemoryRegion(_ r: MemoryRegionDescription) throws(Refusal) {
        guard protocolFeatures.contains(.configureMemSlots) else { throw .notNegotiated(.configureMemSlots) }
        guard let current = memory,
              let shrunk = current.removing(guestPhysicalAddress: GuestPhysicalAddress(r.guestPhysicalAddress),
                                            userAddress: FrontEndAddress(r.userAddress), size: r.size) else {
            throw .noSuchRegion(r)
        }
        var stranded: [(Int, String)] = []
        withDatapathPaused {
            memory = shrunk
            for (i, v) in vrings.enumerated() where v.started {
                do {
                    try attach(UInt32(i))
                } catch {
                    let q = port.queues[i]
                    q.detach()
                    q.markBroken("its ring memory was removed (REM_MEM_REG): \(error)")
                    stranded.append((i, q.brokenReason ?? ""))
                }
            }
        }
        for (i, why) in stranded {
            logger.error("ring \(i) broken: \(why); it stays stopped until the front-end resets it")
            if let fd = vrings[i].error { EventFD.signal(fd.rawValue) }
        }
        logger.info("memory region removed at 0x\(String(r.guestPhysicalAddress, radix: 16)): \(shrunk.regions.count) region(s), \(shrunk.totalSize >> 20) MiB")
    }
}
