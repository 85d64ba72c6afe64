// The split ring's chain walker (virtio 1.x §2.7.5-§2.7.7): a descriptor table, or one indirect
// table it names, followed by next links.
extension Virtqueue {
    /// Walks the chain at `head` into `segments`: each descriptor read once, every link, length
    /// and address checked before use, at most a table's worth of descriptors.
    func walk(head: UInt16, writable: Bool, into segments: SegmentList) -> Result<Int, ChainError> {
        let regions = self.regions
        guard regions.count > 0 else { return .failure(.outOfMemory) }
        var table = descriptors!
        var tableSize = size
        var index = Int(head)
        var visited = 0
        var inIndirect = false
        var total = 0
        let storage = segments.storage
        let capacity = segments.capacity
        var count = 0
        defer { segments.count = count }
        while true {
            // Invariant: index < tableSize, and table holds tableSize descriptors inside a mapped
            // region (the ring's table, or an indirect table translated with its full length).
            assert(index >= 0 && index < tableSize)
            let d = Descriptor(at: table + SplitRingLayout.descriptorSize * index)
            visited &+= 1

            if d.isIndirect {
                guard indirectAllowed else { return .failure(.indirectNotNegotiated) }
                guard !inIndirect else { return .failure(.nestedIndirect) }
                guard !d.hasNext, visited == 1 else { return .failure(.indirectWithNext) }
                let entries = Int(d.length) / SplitRingLayout.descriptorSize
                guard d.length > 0, Int(d.length) % SplitRingLayout.descriptorSize == 0, entries <= size else { return .failure(.badIndirectLength) }
                guard let t = GuestMemory.translate(regions, guestPhysical: d.address, length: UInt64(d.length)) else {
                    return .failure(.indirectOutOfMemory)
                }
                table = t
                tableSize = entries
                index = 0
                visited = 0
                inIndirect = true
                continue
            }
            guard d.isWriteOnly == writable else { return .failure(.wrongDirection) }
            total &+= Int(d.length)
            guard total <= Virtqueue.maxPacketLength || writable else { return .failure(.packetTooLarge) }
            var gpa = d.address
            var remaining = UInt64(d.length)
            while remaining > 0 {
                guard let (host, n) = GuestMemory.translatePrefix(regions, guestPhysical: gpa, length: remaining) else {
                    return .failure(.outOfMemory)
                }
                guard count < capacity else { return .failure(.tooManySegments) }
                storage[count] = Segment(base: host, length: Int(n))
                count &+= 1
                gpa.value &+= n
                remaining &-= n
            }
            if !d.hasNext { return .success(total) }
            guard visited < tableSize else { return .failure(.tooLong) }
            guard Int(d.next) < tableSize else { return .failure(.nextOutOfRange) }
            index = Int(d.next)
        }
    }
}
