import Glibc
import VhostSystem
import VhostUser
import Virtio

/// A vhost-user front-end of our own, as a VM's driver would be: guest memory in a memfd, a
/// receive and a transmit ring of 256 entries (split, or packed with `vhost-user-packed:`) with
/// one 2 KiB buffer per id, kick and call eventfds. It drives any vhost-user back-end (ours,
/// DPDK's vhost PMD).
public final class VhostUserPort: PacketPort {
    static let ringSize = 256
    static let bufferSize = 2048
    let frontEnd: VhostUserFrontEnd
    let memory: DriverMemory
    let rx: FrontEndRing
    let tx: FrontEndRing
    let kicks: [OwnedDescriptor]
    let calls: [OwnedDescriptor]
    let headerLength: Int
    let rxBuffers: UInt64
    let txBuffers: UInt64
    var freeTX: [UInt16]
    public var macAddress: [UInt8]? { nil }

    public init(path: String, packed: Bool = false) throws {
        let socket = try UnixSocket.connect(path: path, nonBlocking: false)
        frontEnd = VhostUserFrontEnd(socket: socket)
        memory = try DriverMemory(size: 4 << 20)
        let version1 = VirtioFeatures.version1.rawValue
        let wanted = version1 | VirtioFeatures.protocolFeatures.rawValue | (packed ? VirtioFeatures.ringPacked.rawValue : 0)
        let features = try frontEnd.negotiate(wanted: wanted, protocol: ProtocolFeatures([.replyAck]).rawValue)
        if packed && features & VirtioFeatures.ringPacked.rawValue == 0 {
            throw PortError(description: "\(path): the back-end does not offer packed rings (VIRTIO_F_RING_PACKED); use vhost-user:")
        }
        headerLength = features & version1 != 0 ? 12 : 10
        let s = memory.regionSpec
        try frontEnd.setMemoryTable([MemoryRegionDescription(guestPhysicalAddress: s.guestPhysicalAddress.value, size: s.size,
                                                             userAddress: s.userAddress.value, mmapOffset: 0)],
                                    descriptors: [memory.descriptor.rawValue])
        rx = FrontEndRing(packed: packed, size: Self.ringSize, memory: memory)
        tx = FrontEndRing(packed: packed, size: Self.ringSize, memory: memory)
        rxBuffers = memory.allocate(Self.ringSize * Self.bufferSize, alignment: 4096)
        txBuffers = memory.allocate(Self.ringSize * Self.bufferSize, alignment: 4096)
        kicks = [try EventFD.make(), try EventFD.make()]
        calls = [try EventFD.make(), try EventFD.make()]
        freeTX = (0..<UInt16(Self.ringSize)).reversed().map { $0 }
        // Every receive id owns one buffer, posted once and re-posted as it comes back.
        for i in 0..<Self.ringSize {
            rx.post(id: UInt16(i), address: rxBuffers + UInt64(i * Self.bufferSize), length: UInt32(Self.bufferSize), writable: true)
        }
        rx.publish()
        for (i, q) in [rx, tx].enumerated() {
            let a = q.addresses
            try frontEnd.startRing(index: UInt32(i), size: UInt32(Self.ringSize),
                                   address: VringAddress(index: UInt32(i), flags: 0, descriptorTable: a.descriptorTable.value,
                                                         usedRing: a.usedRing.value, availRing: a.availRing.value, log: 0),
                                   kick: kicks[i].rawValue, call: calls[i].rawValue, enable: true,
                                   base: packed ? UInt32(PackedRingLayout.wrapBit) : 0)
        }
        EventFD.signal(kicks[0].rawValue)
    }

    func reclaimTX() {
        tx.takeUsed(max: .max) { id, _ in if Int(id) < Self.ringSize { freeTX.append(id) } }
    }

    public var transmitSpace: Int { reclaimTX(); return freeTX.count }

    public func send(count: Int, fill: (UnsafeMutableRawPointer, Int) -> Int) -> Int {
        if freeTX.count < count { reclaimTX() }
        var sent = 0
        while sent < count, let id = freeTX.popLast() {
            let address = txBuffers + UInt64(Int(id) * Self.bufferSize)
            let p = memory.host(address)
            memset(p, 0, headerLength)
            let length = fill(p + headerLength, Self.bufferSize - headerLength)
            tx.post(id: id, address: address, length: UInt32(headerLength + length), writable: false)
            sent += 1
        }
        return sent
    }

    public func flush() {
        tx.publish()
        if !tx.deviceSuppressesKicks { EventFD.signal(kicks[1].rawValue) }
    }

    public func drain(milliseconds: Int) {
        for _ in 0..<max(1, milliseconds) {
            reclaimTX()
            if freeTX.count == Self.ringSize { return }
            EventFD.signal(kicks[1].rawValue)
            usleep(1000)
        }
    }

    public func receive(max: Int, _ body: (UnsafeRawPointer, Int) -> Void) -> Int {
        var n = 0
        let taken = rx.takeUsed(max: max) { id, length in
            guard Int(id) < Self.ringSize else { return }
            let buffer = rxBuffers + UInt64(Int(id) * Self.bufferSize)
            if Int(length) > headerLength && Int(length) <= Self.bufferSize {
                body(UnsafeRawPointer(memory.host(buffer)) + headerLength, Int(length) - headerLength)
                n += 1
            }
            rx.post(id: id, address: buffer, length: UInt32(Self.bufferSize), writable: true)
        }
        if taken > 0 {
            rx.publish()
            if !rx.deviceSuppressesKicks { EventFD.signal(kicks[0].rawValue) }
        }
        return n
    }

    public func waitForReceive(milliseconds: Int32) {
        if rx.hasUsed { return }
        var pfd = pollfd(fd: calls[0].rawValue, events: Int16(POLLIN), revents: 0)
        if poll(&pfd, 1, milliseconds) > 0 { _ = EventFD.drain(calls[0].rawValue) }
    }
}

/// The driver side of one ring, split or packed, with one buffer per id and one descriptor per
/// chain: what the front-end needs of either layout.
enum FrontEndRing {
    case split(DriverQueue)
    case packed(PackedDriverQueue)

    init(packed: Bool, size: Int, memory: DriverMemory) {
        self = packed ? .packed(PackedDriverQueue(size: size, memory: memory)) : .split(DriverQueue(size: size, memory: memory))
    }

    var addresses: RingAddresses {
        switch self {
        case .split(let q): q.addresses
        case .packed(let q): q.addresses
        }
    }

    /// Makes one buffer available under `id` (split: descriptor `id`, published by `publish`;
    /// packed: the next slot, published at once).
    func post(id: UInt16, address: UInt64, length: UInt32, writable: Bool) {
        switch self {
        case .split(let q):
            q.writeDescriptor(Int(id), address: address, length: length, flags: writable ? DescriptorFlags.write.rawValue : 0, next: 0)
            q.pushAvail(head: id)
        case .packed(let q):
            q.post(id: id, address: address, length: length, writable: writable)
        }
    }

    func publish() {
        if case .split(let q) = self { q.publish() }
    }

    @discardableResult
    func takeUsed(max: Int, _ body: (UInt16, UInt32) -> Void) -> Int {
        switch self {
        case .split(let q): q.takeUsed(max: max, body)
        case .packed(let q): q.takeUsed(max: max, body)
        }
    }

    var hasUsed: Bool {
        switch self {
        case .split(let q): q.hasUsed
        case .packed(let q): q.hasUsed
        }
    }

    var deviceSuppressesKicks: Bool {
        switch self {
        case .split(let q): q.deviceSuppressesKicks
        case .packed(let q): q.deviceSuppressesKicks
        }
    }
}
