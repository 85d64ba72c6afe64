import Testing
@testable import Virtio

/// The split ring's vocabulary: layout, descriptors, wrapping indices.
@Suite struct SplitRingVocabulary {
    @Test func layoutMatchesTheSpecification() {
        #expect(SplitRingLayout.descriptorTableBytes(256) == 4096)
        #expect(SplitRingLayout.availBytes(256) == 6 + 2 * 256, "flags, idx, ring, used_event")
        #expect(SplitRingLayout.usedBytes(256) == 6 + 8 * 256, "flags, idx, ring, avail_event")
        #expect(SplitRingLayout.usedEventOffset(4) == 12 && SplitRingLayout.availEventOffset(4) == 36)
    }

    @Test func thePureLayoutCheckRefusesSizesAndAlignments() {
        let ok = RingAddresses(descriptorTable: 0x1000, availRing: 0x2000, usedRing: 0x3000)
        #expect(throws: Never.self) { try SplitRingLayout.check(size: 256, addresses: ok) }
        for bad: UInt32 in [0, 3, 100, 65536] {
            #expect(throws: RingSetupError.badSize(bad)) { try SplitRingLayout.check(size: bad, addresses: ok) }
        }
        #expect(throws: RingSetupError.misaligned("descriptor table")) { try SplitRingLayout.check(size: 8, addresses: RingAddresses(descriptorTable: 0x1008, availRing: 0x2000, usedRing: 0x3000)) }
        #expect(throws: RingSetupError.misaligned("avail ring")) { try SplitRingLayout.check(size: 8, addresses: RingAddresses(descriptorTable: 0x1000, availRing: 0x2001, usedRing: 0x3000)) }
        #expect(throws: RingSetupError.misaligned("used ring")) { try SplitRingLayout.check(size: 8, addresses: RingAddresses(descriptorTable: 0x1000, availRing: 0x2000, usedRing: 0x3002)) }
    }

    @Test func aDescriptorIsReadFieldByField() {
        var bytes = [UInt8](repeating: 0, count: 17)
        // At an odd offset: indirect tables may sit at any guest address.
        let fields: [UInt8] = [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00, 0x02, 0, 0, 0x07, 0, 0x05, 0]
        bytes.replaceSubrange(1...16, with: fields)
        let d = bytes.withUnsafeBytes { Descriptor(at: $0.baseAddress! + 1) }
        #expect(d.address == 0x1122_3344_5566_7788 && d.length == 0x200 && d.next == 5)
        #expect(d.hasNext && d.isWriteOnly && d.isIndirect)
    }

    @Test func ringIndicesWrapAt65536() {
        let a = RingIndex(65530)
        let b = a.advanced(by: 10)
        #expect(b.value == 4 && b.distance(from: a) == 10)
        #expect(b.isAtOrAfter(a) && !a.isAtOrAfter(b))
        #expect(b.slot(255) == 4 && RingIndex(300).slot(255) == 44)
    }
}
