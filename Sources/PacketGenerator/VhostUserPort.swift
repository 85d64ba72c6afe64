import Glibc
import VhostSystem
import VhostUser
import Virtio

/// A vhost-user front-end of our own, as a VM's driver would be: guest memory in a memfd, a
/// receive and a transmit ring of 256 entries (split, or packed with `vhost-user-packed:`) with
/// one 2 KiB buffer per id, kick and call eventfds. It drives any vhost-user back-end (ours,
/// DPDK's vhost PMD).
///
/// With `,reconnect` it outlives its back-end, as QEMU's `reconnect=1` does: when the connection
/// closes it connects again, keeps its rings and buffers, and sends the bases QEMU sends after a
/// back-end died (the used index of a split ring, the initial position of a packed one). It then
/// also asks for the back-end's inflight buffer (INFLIGHT_SHMFD) and hands it back on every
/// connection. Every completion is checked against what was posted: a buffer completed twice,
/// or never, is counted (`connectionReport`).
public final class VhostUserPort: PacketPort {
    static let ringSize = 256
    static let bufferSize = 2048
    let path: String
    let packed: Bool
    let reconnects: Bool
    var frontEnd: VhostUserFrontEnd
    let memory: DriverMemory
    let rx: FrontEndRing
    let tx: FrontEndRing
    let kicks: [OwnedDescriptor]
    let calls: [OwnedDescriptor]
    var headerLength = 12
    let rxBuffers: UInt64
    let txBuffers: UInt64
    var freeTX: [UInt16]
    /// What the back-end holds: transmit ids posted and not completed, receive ids posted.
    var txOutstanding: [Bool]
    var rxPosted: [Bool]
    var duplicateCompletions = 0
    var reconnectCount = 0
    var inflightBuffer: (InflightBufferDescription, OwnedDescriptor)?
    private var callsSinceCheck = 0
    public var macAddress: [UInt8]? { nil }

    public init(path: String, packed: Bool = false, reconnect: Bool = false) throws {
        self.path = path
        self.packed = packed
        self.reconnects = reconnect
        frontEnd = VhostUserFrontEnd(socket: try UnixSocket.connect(path: path, nonBlocking: false))
        memory = try DriverMemory(size: 4 << 20)
        rx = FrontEndRing(packed: packed, size: Self.ringSize, memory: memory)
        tx = FrontEndRing(packed: packed, size: Self.ringSize, memory: memory)
        rxBuffers = memory.allocate(Self.ringSize * Self.bufferSize, alignment: 4096)
        txBuffers = memory.allocate(Self.ringSize * Self.bufferSize, alignment: 4096)
        kicks = [try EventFD.make(), try EventFD.make()]
        calls = [try EventFD.make(), try EventFD.make()]
        freeTX = (0..<UInt16(Self.ringSize)).reversed().map { $0 }
        txOutstanding = [Bool](repeating: false, count: Self.ringSize)
        rxPosted = [Bool](repeating: false, count: Self.ringSize)
        // Every receive id owns one buffer, posted once and re-posted as it comes back.
        for i in 0..<Self.ringSize { postReceive(UInt16(i)) }
        rx.publish()
        try setUp(restarted: false)
    }

    /// The start-up sequence on the current connection. After a reconnect the rings start where
    /// QEMU would start them: a split ring at its used index, a packed one at its first position.
    func setUp(restarted: Bool) throws {
        let version1 = VirtioFeatures.version1.rawValue
        let wanted = version1 | VirtioFeatures.protocolFeatures.rawValue | (packed ? VirtioFeatures.ringPacked.rawValue : 0)
        let wantedProtocol: ProtocolFeatures = reconnects ? [.replyAck, .inflightSHMFD] : [.replyAck]
        let features = try frontEnd.negotiate(wanted: wanted, protocol: wantedProtocol.rawValue)
        if packed && features & VirtioFeatures.ringPacked.rawValue == 0 {
            throw PortError(description: "\(path): the back-end does not offer packed rings (VIRTIO_F_RING_PACKED); use vhost-user:")
        }
        headerLength = features & version1 != 0 ? 12 : 10
        let s = memory.regionSpec
        try frontEnd.setMemoryTable([MemoryRegionDescription(guestPhysicalAddress: s.guestPhysicalAddress.value, size: s.size,
                                                             userAddress: s.userAddress.value, mmapOffset: 0)],
                                    descriptors: [memory.descriptor.rawValue])
        if frontEnd.protocolFeatures & ProtocolFeatures.inflightSHMFD.rawValue != 0 {
            if inflightBuffer == nil { inflightBuffer = try frontEnd.getInflightBuffer(queues: 2, size: UInt16(Self.ringSize)) }
            if let (d, fd) = inflightBuffer { try frontEnd.setInflightBuffer(d, descriptor: fd.rawValue) }
        }
        for (i, q) in [rx, tx].enumerated() {
            let a = q.addresses
            let base: UInt32 = packed ? UInt32(PackedRingLayout.wrapBit) : UInt32(restarted ? q.deviceUsedIndex : 0)
            try frontEnd.startRing(index: UInt32(i), size: UInt32(Self.ringSize),
                                   address: VringAddress(index: UInt32(i), flags: 0, descriptorTable: a.descriptorTable.value,
                                                         usedRing: a.usedRing.value, availRing: a.availRing.value, log: 0),
                                   kick: kicks[i].rawValue, call: calls[i].rawValue, enable: true, base: base)
        }
        EventFD.signal(kicks[0].rawValue)
        EventFD.signal(kicks[1].rawValue)
    }

    /// With `reconnect`: notices a closed connection (at most every 256 calls, or when asked)
    /// and connects again, for up to 60 s.
    func keepConnected(now: Bool = false) {
        guard reconnects else { return }
        callsSinceCheck += 1
        guard now || callsSinceCheck >= 256 else { return }
        callsSinceCheck = 0
        var byte: UInt8 = 0
        let n = recv(frontEnd.socket.rawValue, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        guard n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) else { return }
        Self.log("vhost-user: \(path): the back-end closed the connection; reconnecting")
        for _ in 0..<3000 {
            usleep(20_000)
            guard let socket = try? UnixSocket.connect(path: path, nonBlocking: false) else { continue }
            frontEnd = VhostUserFrontEnd(socket: socket)
            do {
                try setUp(restarted: true)
                reconnectCount += 1
                Self.log("vhost-user: \(path): reconnected (\(reconnectCount))")
                return
            } catch {
                continue  // the back-end went away again while starting: retry
            }
        }
        Self.log("vhost-user: \(path): no back-end for 60 s; giving up")
        exit(1)
    }

    static func log(_ s: String) { Posix.printError(s + "\n") }

    public var connectionReport: String? {
        let lost = txOutstanding.filter { $0 }.count
        return "vhost-user: \(reconnectCount) reconnect(s), \(duplicateCompletions) duplicate completion(s), \(lost) transmit buffer(s) not completed"
    }

    func postReceive(_ id: UInt16) {
        rxPosted[Int(id)] = true
        rx.post(id: id, address: rxBuffers + UInt64(Int(id) * Self.bufferSize), length: UInt32(Self.bufferSize), writable: true)
    }

    func reclaimTX() {
        tx.takeUsed(max: .max) { id, _ in
            guard Int(id) < Self.ringSize, txOutstanding[Int(id)] else { duplicateCompletions += 1; return }
            txOutstanding[Int(id)] = false
            freeTX.append(id)
        }
    }

    public var transmitSpace: Int { reclaimTX(); return freeTX.count }

    public func send(count: Int, fill: (UnsafeMutableRawPointer, Int) -> Int) -> Int {
        if freeTX.count < count { reclaimTX() }
        if freeTX.isEmpty { keepConnected() }
        var sent = 0
        while sent < count, let id = freeTX.popLast() {
            let address = txBuffers + UInt64(Int(id) * Self.bufferSize)
            let p = memory.host(address)
            memset(p, 0, headerLength)
            let length = fill(p + headerLength, Self.bufferSize - headerLength)
            txOutstanding[Int(id)] = true
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
            keepConnected()
            usleep(1000)
        }
    }

    public func receive(max: Int, _ body: (UnsafeRawPointer, Int) -> Void) -> Int {
        var n = 0
        let taken = rx.takeUsed(max: max) { id, length in
            guard Int(id) < Self.ringSize, rxPosted[Int(id)] else { duplicateCompletions += 1; return }
            rxPosted[Int(id)] = false
            let buffer = rxBuffers + UInt64(Int(id) * Self.bufferSize)
            if Int(length) > headerLength && Int(length) <= Self.bufferSize {
                body(UnsafeRawPointer(memory.host(buffer)) + headerLength, Int(length) - headerLength)
                n += 1
            }
            postReceive(id)
        }
        if taken > 0 {
            rx.publish()
            if !rx.deviceSuppressesKicks { EventFD.signal(kicks[0].rawValue) }
        }
        return n
    }

    public func waitForReceive(milliseconds: Int32) {
        if rx.hasUsed { return }
        keepConnected(now: true)
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

    /// A split ring's used index in memory (what QEMU restores a ring to after a back-end died).
    var deviceUsedIndex: UInt16 {
        if case .split(let q) = self { return q.deviceUsedIndex }
        return 0
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
