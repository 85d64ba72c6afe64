import Glibc
import Testing
import TestSupport
import VhostSystem
@testable import Virtio

/// VIRTIO_F_IN_ORDER's folded used elements: a batch of chains used in order becomes one used
/// element (the last chain's id, at the batch's first position), and an in-order driver takes
/// every chain of the batch back from it.
@Suite struct InOrder {
    @Test(arguments: [false, true]) func aBatchIsOneUsedElementAtItsFirstPosition(packed: Bool) throws {
        let memory = try DriverMemory(size: 4 << 20)
        let guest = try GuestMemory(specs: [memory.regionSpec], descriptors: [memory.descriptor])
        let size = 8
        let split = packed ? nil : DriverQueue(size: size, memory: memory)
        let packedDriver = packed ? PackedDriverQueue(size: size, memory: memory) : nil
        split?.inOrder = true
        packedDriver?.inOrder = true
        let device = Virtqueue(index: 1)
        try device.attach(size: UInt32(size), addresses: split?.addresses ?? packedDriver!.addresses, memory: guest, format: packed ? .packed : .split)
        device.resume(at: packed ? PackedRingLayout.wrapBit : 0)
        let segments = SegmentList(capacity: Virtqueue.maxSegmentsPerChain)
        var reaped: [UInt16] = []
        var posted: [UInt16] = []
        // Batches of 1 to 5 chains (of one and two descriptors) until the rings wrapped several times.
        for round in 0..<12 {
            let batch = 1 + round % 5
            var ids: [UInt16] = []
            for k in 0..<batch {
                let buffers: [DriverQueue.Buffer] = (0...(k % 2)).map { _ in .readable(memory.allocate(64), length: 64) }
                guard let id = split?.add(buffers) ?? packedDriver?.add(buffers) else { Issue.record("ring full at round \(round)"); return }
                ids.append(id)
            }
            split?.publish()
            posted += ids
            let usedBefore = split?.deviceUsedIndex
            for _ in 0..<batch {
                guard case .chain(let head, _) = device.nextChain(writable: false, into: segments) else { Issue.record("no chain"); return }
                device.foldUsed(head: head)
            }
            device.publishUsed()
            if let split, let usedBefore {
                #expect(split.deviceUsedIndex == usedBefore &+ UInt16(batch), "used->idx moves by the batch")
                let e = memory.host(split.usedRing) + 4 + 8 * (Int(usedBefore) & (size - 1))
                #expect(UInt16(e.load(as: UInt32.self)) == ids.last!, "round \(round): the element at the batch's first slot names its last chain")
                reaped += split.reapUsed().map(\.head)
            } else if let packedDriver {
                let got = packedDriver.reapUsed()
                #expect(got.map(\.id) == ids, "round \(round)")
                reaped += got.map(\.id)
                #expect(!packedDriver.hasUsed, "one used descriptor for the batch, nothing after it")
            }
        }
        #expect(reaped == posted, "every chain back once, in order")
    }
}
