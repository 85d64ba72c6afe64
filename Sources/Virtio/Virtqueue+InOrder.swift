/// Chains used in order whose used element is folded into one (VIRTIO_F_IN_ORDER): how many,
/// where the batch began, and the last one's buffer id.
struct InOrderBatch {
    var count = 0
    var start: UInt16 = 0
    var lastHead: UInt16 = 0
}

// VIRTIO_F_IN_ORDER's batched used writes (virtio 1.1 §2.7.9, §2.8.21): when the driver uses
// buffers in ring order, the device may write a single used element for a batch, with the id of
// the batch's last buffer, at the batch's first position, and skip forward by the batch. The
// data path folds its transmit chains (all of length 0) this way; receive chains carry lengths
// and keep one element each.
extension Virtqueue {
    /// The chain `head` (taken in order, length 0) is used; its element is folded into the
    /// batch's single one, written at `publishUsed`.
    @inline(__always)
    public func foldUsed(head: UInt16) {
        if format == .packed {
            guard packed.takenCount > 0 else {
                assertionFailure("a used descriptor with no chain in flight")
                return
            }
            if folded.count == 0 { folded.start = usedIndex }
            let n = packed.popOldest()
            usedIndex = PackedPosition(usedIndex).advanced(by: n, size: size).encoded
        } else {
            if folded.count == 0 { folded.start = usedIndex }
            usedIndex &+= 1
            inflightUsed(head: head)
        }
        folded.lastHead = head
        folded.count &+= 1
    }

    /// Writes the batch's one used element at its first position: split, id and length 0 in
    /// the used ring (used->idx follows at publish); packed, the used descriptor with its flags
    /// last, covering every descriptor of the batch.
    @inline(__always)
    func writeFoldedBatch() {
        let batch = folded
        folded.count = 0
        if format == .packed {
            writePackedUsed(at: PackedPosition(batch.start), id: batch.lastHead, length: 0, next: PackedPosition(usedIndex))
            return
        }
        let e = used! + SplitRingLayout.usedRingOffset + SplitRingLayout.usedElementSize * RingIndex(batch.start).slot(mask)
        e.storeBytes(of: UInt32(batch.lastHead).littleEndian, as: UInt32.self)
        e.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
    }
}
