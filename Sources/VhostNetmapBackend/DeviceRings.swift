import Glibc
import VhostSystem
import VhostUser
import Virtio

// A device's rings through their life: looked up and checked, attached to guest memory, placed
// (and resynchronised) when they start, stopped by GET_VRING_BASE.
extension VhostNetDevice {
    func vring(_ index: UInt32) throws(Refusal) -> Vring {
        guard index < UInt32(vrings.count) else { throw .ringIndexOutOfRange(index, rings: vrings.count) }
        return vrings[Int(index)]
    }

    /// Takes the eventfd of KICK/CALL/ERR, refusing anything that is not an eventfd (a pipe or
    /// socket could block or be drained by mistake).
    func eventDescriptor(_ descriptor: OwnedDescriptor?) throws(Refusal) -> OwnedDescriptor? {
        guard let fd = descriptor else { return nil }
        var buf = [CChar](repeating: 0, count: 64)
        let n = readlink("/proc/self/fd/\(fd.rawValue)", &buf, 63)
        let target = n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        guard target == "anon_inode:[eventfd]" else { throw .notAnEventFD(target) }
        try? Posix.setNonBlocking(fd.rawValue)
        return fd
    }

    func checkLayout(_ a: RingAddresses, size: UInt32, memory: GuestMemory) throws(Refusal) {
        let probe = Virtqueue(index: 0)
        do {
            try probe.attach(size: size, addresses: a, memory: memory, format: ringFormat)
        } catch {
            throw .ringLayout(error.description)
        }
    }

    func attach(_ index: UInt32) throws(Refusal) {
        assertPaused()
        let v = vrings[Int(index)]
        let q = port.queues[Int(index)]
        guard let memory, let a = v.addresses else { return }
        let last = q.lastAvailIndex
        do {
            try q.attach(size: v.size, addresses: a, memory: memory, format: ringFormat)
        } catch {
            throw .ringLayout(error.description)
        }
        q.resume(at: last)
    }

    /// A ring starting at a base other than the used index in guest memory was run by an
    /// earlier back-end (this one, killed and restarted) or the front-end lost track of it
    /// (DPDK's virtio-user sends SET_VRING_BASE 0 after a back-end restart, its avail index far
    /// ahead). Everything up to the used index was consumed by someone; resume there, as DPDK's
    /// vhost library and QEMU (`virtio_queue_restore_last_avail_idx`) do. Chains made available
    /// but not used when the old back-end died are taken again: frames may be sent twice, never
    /// lost, and no descriptor is left behind. (INFLIGHT_SHMFD would make it exact.)
    func resynchroniseIfTheBaseCannotBeRight(_ index: Int) {
        assertPaused()
        let q = port.queues[index]
        guard q.isAttached, q.usedIndex != q.lastAvailIndex else { return }
        logger.warning("ring \(index): base \(q.lastAvailIndex) but the used index in guest memory is \(q.usedIndex): resumes at \(q.usedIndex) (resynchronised)")
        q.resume(at: q.usedIndex)
    }

    /// GET_VRING_BASE: stops the ring and returns where the guest should resume.
    func stop(_ index: Int) -> UInt16 {
        let v = vrings[index]
        let q = port.queues[index]
        var base = v.base
        withDatapathPaused {
            if v.started {
                base = q.lastAvailIndex
                if q.isAttached { q.publishUsed() }
                q.detach()
            }
            v.started = false
            v.kick = nil
            v.kickPolled = false
            v.base = base
        }
        logger.info("ring \(index) stopped at \(base)")
        return base
    }
}
