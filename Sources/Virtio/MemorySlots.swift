import SystemPackage
import VhostSystem

// Memory slots (CONFIGURE_MEM_SLOTS): the front-end adds and removes guest memory one region at
// a time (memory hot-plug) instead of sending a whole table. Each change builds a new immutable
// table that shares the mappings it keeps, so rings switch tables under the paused data path
// and a removed region's mapping goes away once no ring holds the old table.
extension GuestMemory {
    /// Slots offered by GET_MAX_MEM_SLOTS: what QEMU allows on x86 (VHOST_USER_MAX_RAM_SLOTS 512)
    /// less a few, as DPDK's vhost library and libvhost-user answer.
    public static let maxSlots = 509

    /// An empty table: memory slots start from nothing and ADD_MEM_REG fills them.
    public static func empty() -> GuestMemory { GuestMemory(regions: [], mappings: []) }

    /// This table plus `spec` (mapped from `descriptor`), checked like a region of SET_MEM_TABLE
    /// against its file and against every region already here.
    public func adding(_ spec: GuestRegionSpec, descriptor: OwnedDescriptor) throws(GuestMemoryError) -> GuestMemory {
        guard regions.count < Self.maxSlots else { throw .tooManyRegions(regions.count + 1) }
        let index = regions.count
        let existing = regions.enumerated().map { (i, r) in
            (i, GuestRegionSpec(guestPhysicalAddress: r.guestPhysicalAddress, size: r.size, userAddress: r.userAddress, mmapOffset: 0))
        }
        try Self.validate(spec, at: index, descriptor: descriptor.rawValue, against: existing)
        let mapping: MemoryMapping
        do {
            mapping = try MemoryMapping(descriptor: descriptor.rawValue, length: Int(spec.mmapOffset + spec.size))
        } catch {
            throw .notMappable(region: index, errno: error)
        }
        let added = MappedRegion(guestPhysicalAddress: spec.guestPhysicalAddress, userAddress: spec.userAddress,
                                 size: spec.size, host: mapping.base + Int(spec.mmapOffset))
        return GuestMemory(regions: Array(regions) + [added], mappings: mappings + [mapping])
    }

    /// This table without the region at exactly this guest address, front-end address and size
    /// (REM_MEM_REG ignores the mmap offset), or nil when there is none.
    public func removing(guestPhysicalAddress gpa: GuestPhysicalAddress, userAddress uva: FrontEndAddress, size: UInt64) -> GuestMemory? {
        guard let i = regions.firstIndex(where: { $0.guestPhysicalAddress == gpa && $0.userAddress == uva && $0.size == size }) else {
            return nil
        }
        var kept = Array(regions)
        var keptMappings = mappings
        kept.remove(at: i)
        keptMappings.remove(at: i)
        return GuestMemory(regions: kept, mappings: keptMappings)
    }
}
