import Glibc

/// The driver side of a packed virtqueue (virtio 1.1 §2.8) in `DriverMemory`, for tests, fuzzing
/// and front-ends of our own: chains made available with the driver's wrap counter, used
/// descriptors taken back with the device's. Buffer ids are the driver's (0..<size here).
public final class PackedDriverQueue: @unchecked Sendable {
    public let size: Int
    public let memory: DriverMemory
    public let descriptorRing: UInt64
    public let driverEventArea: UInt64
    public let deviceEventArea: UInt64
    /// Where the next chain goes, with the avail wrap counter (as SET_VRING_BASE carries it).
    public private(set) var availPosition = PackedPosition(PackedRingLayout.wrapBit)
    /// Where the next used descriptor is expected, with the used wrap counter.
    public private(set) var usedPosition = PackedPosition(PackedRingLayout.wrapBit)
    private var freeIDs: [UInt16]
    private var descriptorsOfID: [Int]
    /// Ids of raw chains (hostile tests) and their descriptor counts: not from the free list.
    private var rawChains: [UInt16: Int] = [:]
    public private(set) var freeDescriptors: Int
    /// VIRTIO_F_IN_ORDER negotiated: one used descriptor may stand for a batch (the last
    /// buffer's id, at the batch's first slot), so ids are remembered in ring order.
    public var inOrder = false
    private var idsInOrder = InOrderHeads()

    public init(size: Int, memory: DriverMemory) {
        precondition(size >= 1 && size <= 32768)
        self.size = size
        self.memory = memory
        descriptorRing = memory.allocate(PackedRingLayout.ringBytes(size), alignment: 16)
        driverEventArea = memory.allocate(PackedRingLayout.eventAreaBytes, alignment: 4)
        deviceEventArea = memory.allocate(PackedRingLayout.eventAreaBytes, alignment: 4)
        memset(memory.host(descriptorRing), 0, PackedRingLayout.ringBytes(size))
        memset(memory.host(driverEventArea), 0, PackedRingLayout.eventAreaBytes)
        memset(memory.host(deviceEventArea), 0, PackedRingLayout.eventAreaBytes)
        freeIDs = (0..<UInt16(size)).reversed().map { $0 }
        descriptorsOfID = Array(repeating: 0, count: size)
        freeDescriptors = size
    }

    /// SET_VRING_ADDR's three addresses: descriptor ring, driver area, device area.
    public var addresses: RingAddresses {
        RingAddresses(descriptorTable: memory.userAddress(descriptorRing), availRing: memory.userAddress(driverEventArea),
                      usedRing: memory.userAddress(deviceEventArea))
    }

    /// Writes a raw descriptor at `slot` (hostile tests write anything they like).
    public func writeDescriptor(_ slot: Int, address: UInt64, length: UInt32, id: UInt16, flags: UInt16) {
        let d = memory.host(descriptorRing) + PackedRingLayout.descriptorSize * slot
        d.storeBytes(of: address.littleEndian, as: UInt64.self)
        d.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
        d.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
        Virtqueue.storeRelease16(d + PackedRingLayout.flagsOffset, flags)
    }

    /// The flags that make a descriptor available in the lap of `position`.
    public static func availableFlags(_ position: PackedPosition) -> UInt16 {
        position.wrap ? PackedRingLayout.availFlag : PackedRingLayout.usedFlag
    }

    /// Makes `buffers` available as one chain (its head's flags written last). Returns the
    /// buffer id, or nil when ids or descriptors run out.
    public func add(_ buffers: [DriverQueue.Buffer]) -> UInt16? {
        guard !buffers.isEmpty, buffers.count <= freeDescriptors, let id = freeIDs.popLast() else { return nil }
        let start = availPosition
        var position = start
        var headFlags: UInt16 = 0
        for (k, b) in buffers.enumerated() {
            var flags = b.flags.rawValue | Self.availableFlags(position)
            if k < buffers.count - 1 { flags |= DescriptorFlags.next.rawValue }
            if k == 0 {
                headFlags = flags
                let d = memory.host(descriptorRing) + PackedRingLayout.descriptorSize * position.slot
                d.storeBytes(of: b.address.littleEndian, as: UInt64.self)
                d.storeBytes(of: b.length.littleEndian, toByteOffset: 8, as: UInt32.self)
                d.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
            } else {
                writeDescriptor(position.slot, address: b.address, length: b.length, id: id, flags: flags)
            }
            position = position.advanced(by: 1, size: size)
        }
        Virtqueue.storeRelease16(memory.host(descriptorRing) + PackedRingLayout.descriptorSize * start.slot + PackedRingLayout.flagsOffset, headFlags)
        availPosition = position
        descriptorsOfID[Int(id)] = buffers.count
        freeDescriptors -= buffers.count
        if inOrder { idsInOrder.push(id) }
        return id
    }

    /// Makes `buffers` available through one indirect descriptor (a table allocated once).
    public func addIndirect(_ buffers: [DriverQueue.Buffer]) -> UInt16? {
        guard freeDescriptors >= 1, let id = freeIDs.popLast() else { return nil }
        let table = memory.allocate(PackedRingLayout.descriptorSize * buffers.count, alignment: 16)
        for (k, b) in buffers.enumerated() {
            let e = memory.host(table) + PackedRingLayout.descriptorSize * k
            e.storeBytes(of: b.address.littleEndian, as: UInt64.self)
            e.storeBytes(of: b.length.littleEndian, toByteOffset: 8, as: UInt32.self)
            e.storeBytes(of: UInt16(0), toByteOffset: 12, as: UInt16.self)
            e.storeBytes(of: b.flags.rawValue.littleEndian, toByteOffset: 14, as: UInt16.self)
        }
        writeDescriptor(availPosition.slot, address: table, length: UInt32(PackedRingLayout.descriptorSize * buffers.count), id: id,
                        flags: DescriptorFlags.indirect.rawValue | Self.availableFlags(availPosition))
        availPosition = availPosition.advanced(by: 1, size: size)
        descriptorsOfID[Int(id)] = 1
        freeDescriptors -= 1
        if inOrder { idsInOrder.push(id) }
        return id
    }

    /// Moves the avail position past a chain of `n` raw descriptors with buffer id `id` (hostile
    /// tests that write raw descriptors), so its used descriptor is found.
    public func skip(_ n: Int, id: UInt16) {
        availPosition = availPosition.advanced(by: n, size: size)
        rawChains[id] = n
    }

    /// Takes the used descriptors the device wrote since the last call: (id, length). Each one
    /// frees its chain's descriptors and id.
    public func reapUsed() -> [(id: UInt16, length: UInt32)] {
        var out: [(id: UInt16, length: UInt32)] = []
        while hasUsed {
            let d = memory.host(descriptorRing) + PackedRingLayout.descriptorSize * usedPosition.slot
            let element = (Virtqueue.load16(d + PackedRingLayout.idOffset), UInt32(littleEndian: d.load(fromByteOffset: 8, as: UInt32.self)))
            // In order, the element stands for every buffer up to its id: taken one by one.
            repeat {
                let (id, length) = inOrder ? idsInOrder.take(batchElement: element) ?? element : element
                reclaim(id: id, length: length, into: &out)
            } while inOrder && idsInOrder.inBatch
        }
        return out
    }

    private func reclaim(id: UInt16, length: UInt32, into out: inout [(id: UInt16, length: UInt32)]) {
        out.append((id, length))
        var n = 1
        if let raw = rawChains.removeValue(forKey: id) {
            n = raw
        } else if Int(id) < size && descriptorsOfID[Int(id)] > 0 {
            n = descriptorsOfID[Int(id)]
            freeDescriptors += descriptorsOfID[Int(id)]
            descriptorsOfID[Int(id)] = 0
            freeIDs.append(id)
        }
        usedPosition = usedPosition.advanced(by: n, size: size)
    }

    // One-descriptor chains whose ids the caller keeps (one buffer per id, as simple drivers and
    // pkt-gen have it): not to be mixed with add/reapUsed on the same ring.

    /// Makes one buffer available under `id`. The caller keeps at most `size` outstanding.
    @inline(__always)
    public func post(id: UInt16, address: UInt64, length: UInt32, writable: Bool) {
        let flags = (writable ? DescriptorFlags.write.rawValue : 0) | Self.availableFlags(availPosition)
        writeDescriptor(availPosition.slot, address: address, length: length, id: id, flags: flags)
        availPosition = availPosition.advanced(by: 1, size: size)
        if inOrder { idsInOrder.push(id) }
    }

    /// Hands up to `max` used descriptors to `body` as (id, length); returns how many.
    @inline(__always)
    @discardableResult
    public func takeUsed(max: Int = .max, _ body: (UInt16, UInt32) -> Void) -> Int {
        var n = 0
        while n < max && (hasUsed || inOrder && idsInOrder.inBatch) {
            let d = memory.host(descriptorRing) + PackedRingLayout.descriptorSize * usedPosition.slot
            let element = (Virtqueue.load16(d + PackedRingLayout.idOffset), UInt32(littleEndian: d.load(fromByteOffset: 8, as: UInt32.self)))
            let (id, length) = inOrder ? idsInOrder.take(batchElement: element) ?? element : element
            body(id, length)
            usedPosition = usedPosition.advanced(by: 1, size: size)
            n += 1
        }
        return n
    }

    /// Whether the descriptor at the used position was used in its lap.
    public var hasUsed: Bool {
        let flags = Virtqueue.loadAcquire16(memory.host(descriptorRing) + PackedRingLayout.descriptorSize * usedPosition.slot + PackedRingLayout.flagsOffset)
        return PackedRingLayout.isUsed(flags, wrap: usedPosition.wrap)
    }

    /// Driver event suppression: ENABLE, DISABLE, or DESC at `position` (EVENT_IDX).
    public func setInterrupts(flags: UInt16, at position: PackedPosition = PackedPosition(0)) {
        (memory.host(driverEventArea) + PackedRingLayout.eventOffWrapOffset).storeBytes(of: position.encoded.littleEndian, as: UInt16.self)
        (memory.host(driverEventArea) + PackedRingLayout.eventFlagsOffset).storeBytes(of: flags.littleEndian, as: UInt16.self)
    }

    /// Whether the device asked not to be kicked (its event suppression flags say DISABLE).
    public var deviceSuppressesKicks: Bool {
        Virtqueue.load16(memory.host(deviceEventArea) + PackedRingLayout.eventFlagsOffset) == PackedRingLayout.eventDisable
    }
}
