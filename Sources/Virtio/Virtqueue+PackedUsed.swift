import Synchronization

/// Packed rings: writing used descriptors.
///
/// The driver polls the flags of the next descriptor it expects back. Writing each used
/// descriptor's flags as it is produced makes that line bounce between the two cores once per
/// descriptor while the driver spins on it. So, as DPDK's vhost does, the used descriptors of a
/// batch are written whole except for the first one's flags, which `publishUsed` writes last with
/// release: the driver sees the batch at once, and the later descriptors' flags cannot be seen
/// before the first's (it reads them in order, each after the one before was used).
///
/// With an inflight buffer every use is still published on its own, begun and committed around
/// its flags, so that a restarted back-end can tell from one descriptor whether that use reached
/// the driver (Virtqueue+Inflight.swift).
extension Virtqueue {
    /// Writes the used descriptor of the oldest chain in flight: length and id, then its flags
    /// (now, or at `publishUsed` for the first of a batch).
    @inline(__always)
    func packedAddUsed(id: UInt16, length: UInt32) {
        guard packed.takenCount > 0 else {
            assertionFailure("a used descriptor with no chain in flight")
            return
        }
        let n = packed.popOldest()
        let position = PackedPosition(usedIndex)
        let next = position.advanced(by: n, size: size)
        if inflight != nil {
            writePackedUsed(at: position, id: id, length: length, next: next)
        } else {
            let p = writePackedUsedBody(at: position, id: id, length: length)
            let flags = Self.usedFlags(position)
            if packed.unpublishedHead < 0 {
                packed.unpublishedHead = position.slot
                packed.unpublishedHeadFlags = flags
            } else {
                (p + PackedRingLayout.flagsOffset).storeBytes(of: flags.littleEndian, as: UInt16.self)
            }
            if isLogging { logWritten(at: p, length: PackedRingLayout.descriptorSize) }
        }
        usedIndex = next.encoded
    }

    /// Hands the batch's used descriptors to the driver: the first one's flags, with release.
    @inline(__always)
    func publishPackedUsed() {
        let slot = packed.unpublishedHead
        guard slot >= 0 else { return }
        packed.unpublishedHead = -1
        let p = descriptors! + PackedRingLayout.descriptorSize * slot
        Self.storeRelease16(p + PackedRingLayout.flagsOffset, packed.unpublishedHeadFlags)
        if isLogging { logWritten(at: p, length: PackedRingLayout.descriptorSize) }
    }

    /// Writes a used descriptor at `position` (id, length, then its flags with release) that
    /// moves the used position to `next`.
    @inline(__always)
    func writePackedUsed(at position: PackedPosition, id: UInt16, length: UInt32, next: PackedPosition) {
        let p = writePackedUsedBody(at: position, id: id, length: length)
        // Inflight tracking: the position is begun before the descriptor is published and
        // committed after, so a restarted back-end tells a finished use from an unfinished one.
        inflight?.packedBeginUse(next)
        Self.storeRelease16(p + PackedRingLayout.flagsOffset, Self.usedFlags(position))
        if let q = inflight {
            atomicMemoryFence(ordering: .releasing)
            q.packedCommitUse(next)
        }
        if isLogging { logWritten(at: p, length: PackedRingLayout.descriptorSize) }
    }

    @inline(__always)
    private func writePackedUsedBody(at position: PackedPosition, id: UInt16, length: UInt32) -> UnsafeMutableRawPointer {
        let p = descriptors! + PackedRingLayout.descriptorSize * position.slot
        p.storeBytes(of: length.littleEndian, toByteOffset: PackedRingLayout.lengthOffset, as: UInt32.self)
        p.storeBytes(of: id.littleEndian, toByteOffset: PackedRingLayout.idOffset, as: UInt16.self)
        return p
    }

    /// AVAIL and USED both equal to the used wrap counter: used in this lap.
    @inline(__always)
    static func usedFlags(_ position: PackedPosition) -> UInt16 {
        position.wrap ? PackedRingLayout.availFlag | PackedRingLayout.usedFlag : 0
    }
}
