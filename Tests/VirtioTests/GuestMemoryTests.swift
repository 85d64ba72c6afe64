import Glibc
import Testing
import VhostSystem
@testable import Virtio

@Suite struct GuestMemoryValidation {
    let fd: OwnedDescriptor

    init() throws {
        fd = try MemFD.make(name: "test", size: 1 << 20)
    }

    func spec(_ gpa: UInt64, _ size: UInt64, uva: UInt64 = 0x7000_0000, offset: UInt64 = 0) -> GuestRegionSpec {
        GuestRegionSpec(guestPhysicalAddress: GuestPhysicalAddress(gpa), size: size, userAddress: FrontEndAddress(uva), mmapOffset: offset)
    }

    @Test func refusesBadTables() throws {
        #expect(throws: GuestMemoryError.noRegions) { try GuestMemory(specs: [], descriptors: []) }
        #expect(throws: GuestMemoryError.emptyRegion(0)) { try GuestMemory(specs: [spec(0, 0)], descriptors: [fd]) }
        #expect(throws: GuestMemoryError.descriptorCountMismatch(regions: 1, descriptors: 0)) { try GuestMemory(specs: [spec(0, 4096)], descriptors: []) }
        #expect(throws: GuestMemoryError.addressOverflow(0)) { try GuestMemory(specs: [spec(.max - 10, 4096)], descriptors: [fd]) }
        #expect(throws: GuestMemoryError.addressOverflow(0)) { try GuestMemory(specs: [spec(0, 4096, uva: .max - 1)], descriptors: [fd]) }
        #expect(throws: GuestMemoryError.addressOverflow(0)) { try GuestMemory(specs: [spec(0, 4096, offset: .max - 100)], descriptors: [fd]) }
        // Past the end of the file: mapping it would SIGBUS on first touch.
        #expect(throws: GuestMemoryError.beyondFileEnd(region: 0, needed: 2 << 20, fileSize: 1 << 20)) {
            try GuestMemory(specs: [spec(0, 2 << 20)], descriptors: [fd])
        }
        #expect(throws: GuestMemoryError.beyondFileEnd(region: 0, needed: (1 << 20) + 4096, fileSize: 1 << 20)) {
            try GuestMemory(specs: [spec(0, 1 << 20, offset: 4096)], descriptors: [fd])
        }
        #expect(throws: GuestMemoryError.overlapping(0, 1)) {
            try GuestMemory(specs: [spec(0, 8192), spec(4096, 8192, uva: 0x9000_0000)], descriptors: [fd, fd])
        }
        #expect(throws: GuestMemoryError.tooManyRegions(9)) {
            try GuestMemory(specs: (0..<9).map { spec(UInt64($0) << 16, 4096, uva: UInt64($0) << 32) }, descriptors: Array(repeating: fd, count: 9))
        }
        // An eventfd has size 0: nothing can be mapped from it.
        let efd = try EventFD.make()
        #expect(throws: GuestMemoryError.self) { try GuestMemory(specs: [spec(0, 4096)], descriptors: [efd]) }
    }

    @Test func translatesInsideRegionsOnly() throws {
        let m = try GuestMemory(specs: [spec(0x1000, 0x10000, uva: 0x5000_0000), spec(0x11000, 0x10000, uva: 0x6000_0000, offset: 0x10000)],
                                descriptors: [fd, fd])
        #expect(m.translate(guestPhysical: 0x1000, length: 0x10000) != nil)
        #expect(m.translate(guestPhysical: 0x1000, length: 0x10001) == nil)
        #expect(m.translate(guestPhysical: 0xfff, length: 1) == nil)
        #expect(m.translate(guestPhysical: 0x21000, length: 1) == nil)
        #expect(m.translate(guestPhysical: 0x20fff, length: 1) != nil)
        #expect(m.translate(guestPhysical: GuestPhysicalAddress(.max), length: 2) == nil)
        #expect(m.translate(guestPhysical: 0x2000, length: .max) == nil)
        // Both regions map the same file at different offsets: writes through one show at the right place.
        let p = m.translate(guestPhysical: 0x11000, length: 4)!
        p.storeBytes(of: 0xdead_beef as UInt32, as: UInt32.self)
        #expect(m.translate(guestPhysical: 0x11000, length: 4) == p)
        #expect(m.translate(userAddress: 0x6000_0000, length: 4) == p)
        #expect(m.translate(userAddress: 0x5fff_ffff, length: 1) == nil)
        // A buffer that spans the two regions is split in two prefixes.
        let (_, first) = m.translatePrefix(guestPhysical: 0x10f00, length: 0x200)!
        #expect(first == 0x100)
        let (_, second) = m.translatePrefix(guestPhysical: 0x11000, length: 0x100)!
        #expect(second == 0x100)
    }
}
