import Glibc
import SystemPackage
import VhostSystem

/// Guest memory as a front-end owns it: one memfd, mapped here, handed to a back-end with
/// SET_MEM_TABLE. Guest-physical addresses start at `guestPhysicalBase`; the front-end's
/// "user address" of a byte is its address in this process (as for QEMU).
public final class DriverMemory: @unchecked Sendable {
    public let descriptor: OwnedDescriptor
    public let mapping: MemoryMapping
    public let guestPhysicalBase: UInt64
    public var size: Int { mapping.length }
    private var next = 0

    public init(size: Int, guestPhysicalBase: UInt64 = 0) throws(Errno) {
        descriptor = try MemFD.make(name: "vhost-netmap-driver", size: size)
        mapping = try MemoryMapping(descriptor: descriptor.rawValue, length: size, populate: true)
        self.guestPhysicalBase = guestPhysicalBase
    }

    /// Bump allocation; returns the guest-physical address.
    public func allocate(_ bytes: Int, alignment: Int = 64) -> UInt64 {
        next = (next + alignment - 1) & ~(alignment - 1)
        let offset = next
        next += bytes
        precondition(next <= size, "driver memory exhausted")
        return guestPhysicalBase + UInt64(offset)
    }

    public func host(_ gpa: UInt64) -> UnsafeMutableRawPointer {
        mapping.base + Int(gpa - guestPhysicalBase)
    }

    /// The front-end's (our) virtual address of guest-physical `gpa`: what ring addresses use.
    public func userAddress(_ gpa: UInt64) -> FrontEndAddress {
        FrontEndAddress(UInt64(UInt(bitPattern: host(gpa))))
    }

    public var regionSpec: GuestRegionSpec {
        GuestRegionSpec(guestPhysicalAddress: GuestPhysicalAddress(guestPhysicalBase), size: UInt64(size),
                        userAddress: FrontEndAddress(UInt64(UInt(bitPattern: mapping.base))), mmapOffset: 0)
    }
}

/// The driver side of a split virtqueue: posts buffers, reaps used entries. Used by the
/// project's own front-end (tests, benchmarks, pkt-gen over vhost-user).
public final class DriverQueue: @unchecked Sendable {
    public let size: Int
    public let memory: DriverMemory
    public let descriptorTable: UInt64
    public let availRing: UInt64
    public let usedRing: UInt64
    private var freeDescriptors: [UInt16]
    private var chainLength: [Int]
    public private(set) var availIndex: UInt16 = 0
    public private(set) var lastUsedIndex: UInt16 = 0
    /// VIRTIO_F_IN_ORDER negotiated: the device may write one used element for a batch (the
    /// last buffer's id, at the batch's first slot), so heads are remembered in ring order.
    public var inOrder = false
    private var headsInOrder = InOrderHeads()

    public init(size: Int, memory: DriverMemory) {
        precondition(size > 0 && size <= 32768 && size & (size - 1) == 0)
        self.size = size
        self.memory = memory
        descriptorTable = memory.allocate(16 * size, alignment: 16)
        availRing = memory.allocate(6 + 2 * size, alignment: 2)
        usedRing = memory.allocate(6 + 8 * size, alignment: 4)
        freeDescriptors = (0..<UInt16(size)).reversed().map { $0 }
        chainLength = Array(repeating: 0, count: size)
        memset(memory.host(descriptorTable), 0, 16 * size)
        memset(memory.host(availRing), 0, 6 + 2 * size)
        memset(memory.host(usedRing), 0, 6 + 8 * size)
    }

    public var addresses: RingAddresses {
        RingAddresses(descriptorTable: memory.userAddress(descriptorTable),
                      availRing: memory.userAddress(availRing), usedRing: memory.userAddress(usedRing))
    }

    public var freeCount: Int { freeDescriptors.count }

    /// One buffer of a chain: what a descriptor will say.
    public struct Buffer {
        public var address: UInt64
        public var length: UInt32
        public var flags: DescriptorFlags

        /// A buffer the device reads (a frame to transmit).
        public static func readable(_ address: UInt64, length: UInt32) -> Buffer {
            Buffer(address: address, length: length, flags: [])
        }

        /// A buffer the device writes (a receive buffer).
        public static func writable(_ address: UInt64, length: UInt32) -> Buffer {
            Buffer(address: address, length: length, flags: .write)
        }
    }

    /// Writes one raw descriptor (hostile tests write anything they like).
    public func writeDescriptor(_ index: Int, address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        let d = memory.host(descriptorTable) + 16 * index
        d.storeBytes(of: address.littleEndian, as: UInt64.self)
        d.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
        d.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
        d.storeBytes(of: next.littleEndian, toByteOffset: 14, as: UInt16.self)
    }

    /// Chains `buffers` into free descriptors and makes the chain available (not yet published).
    /// Returns the head, or nil when there are not enough free descriptors.
    public func add(_ buffers: [Buffer]) -> UInt16? {
        guard !buffers.isEmpty, buffers.count <= freeDescriptors.count else { return nil }
        let ids = (0..<buffers.count).map { _ in freeDescriptors.removeLast() }
        for (k, b) in buffers.enumerated() {
            let last = k == buffers.count - 1
            let flags = last ? b.flags : b.flags.union(.next)
            writeDescriptor(Int(ids[k]), address: b.address, length: b.length, flags: flags.rawValue, next: last ? 0 : ids[k + 1])
        }
        chainLength[Int(ids[0])] = buffers.count
        pushAvail(head: ids[0])
        return ids[0]
    }

    /// Puts `head` in the avail ring without touching descriptors (hostile tests).
    public func pushAvail(head: UInt16) {
        let slot = memory.host(availRing) + 4 + 2 * (Int(availIndex) & (size - 1))
        slot.storeBytes(of: head.littleEndian, as: UInt16.self)
        availIndex &+= 1
        if inOrder { headsInOrder.push(head) }
    }

    /// Makes everything added so far visible to the device (store-release of avail->idx).
    public func publish() {
        Virtqueue.storeRelease16(memory.host(availRing) + 2, availIndex)
    }

    /// Sets avail->idx to any value (hostile tests).
    public func forceAvailIndex(_ value: UInt16) {
        availIndex = value
        publish()
    }

    /// Moves an idle ring (every chain used) to `index`, as a ring that has run that far: avail
    /// and used indices both there, in guest memory too (a device restarted under it).
    public func moveIdleRing(to index: UInt16) {
        precondition(availIndex == deviceUsedIndex, "the ring is not idle")
        availIndex = index
        lastUsedIndex = index
        Virtqueue.storeRelease16(memory.host(usedRing) + 2, index)
        publish()
    }

    /// The device's used->idx.
    public var deviceUsedIndex: UInt16 { Virtqueue.loadAcquire16(memory.host(usedRing) + 2) }

    /// Whether the device asked not to be kicked (VRING_USED_F_NO_NOTIFY).
    public var deviceSuppressesKicks: Bool { Virtqueue.load16(memory.host(usedRing)) & 1 != 0 }

    /// Hands up to `max` used entries published since the last call to `body` as (id, length),
    /// without allocating and without touching descriptors (for drivers that keep one buffer per
    /// descriptor, like pkt-gen). Returns how many.
    @inline(__always)
    @discardableResult
    public func takeUsed(max: Int = .max, _ body: (UInt16, UInt32) -> Void) -> Int {
        let end = deviceUsedIndex
        var n = 0
        while lastUsedIndex != end && n < max {
            let e = memory.host(usedRing) + 4 + 8 * (Int(lastUsedIndex) & (size - 1))
            let id = UInt16(truncatingIfNeeded: UInt32(littleEndian: e.load(as: UInt32.self)))
            let length = UInt32(littleEndian: e.load(fromByteOffset: 4, as: UInt32.self))
            if inOrder, let head = headsInOrder.take(batchElement: (id, length)) {
                body(head.id, head.length)
            } else {
                body(id, length)
            }
            lastUsedIndex &+= 1
            n += 1
        }
        return n
    }

    /// Whether the device published used entries not taken yet.
    public var hasUsed: Bool { deviceUsedIndex != lastUsedIndex }

    /// Takes the used entries the device published since the last call: (head, length), and
    /// returns their chains' descriptors to the free list.
    public func reapUsed() -> [(head: UInt16, length: UInt32)] {
        var out: [(UInt16, UInt32)] = []
        takeUsed { id, len in
            out.append((id, len))
            if Int(id) < size {
                let n = chainLength[Int(id)]
                var d = Int(id)
                for _ in 0..<n {
                    freeDescriptors.append(UInt16(d))
                    d = Int(UInt16(littleEndian: (memory.host(descriptorTable) + 16 * d).load(fromByteOffset: 14, as: UInt16.self)))
                }
                chainLength[Int(id)] = 0
            }
        }
        return out
    }

    /// EVENT_IDX: ask for an interrupt once used->idx passes `index`.
    public func setUsedEvent(_ index: UInt16) {
        (memory.host(availRing) + 4 + 2 * size).storeBytes(of: index.littleEndian, as: UInt16.self)
    }

    /// EVENT_IDX: the device's avail_event.
    public var availEvent: UInt16 { Virtqueue.load16(memory.host(usedRing) + 4 + 8 * size) }
}

/// A driver's heads in the order it made them available, for IN_ORDER's folded used elements:
/// one element (read at the batch's first position) names the batch's last head, and every
/// head before it in ring order is used too, with length 0.
struct InOrderHeads {
    private var heads: [UInt16] = []
    private var first = 0
    private var batchLast: (id: UInt16, length: UInt32)?
    /// Within a batch: the next heads are used without an element of their own.
    var inBatch: Bool { batchLast != nil }

    mutating func push(_ head: UInt16) {
        if first > 1024 && first * 2 > heads.count {
            heads.removeFirst(first)
            first = 0
        }
        heads.append(head)
    }

    /// The next head used, given the element at the used position (read only at a batch's start).
    mutating func take(batchElement element: (UInt16, UInt32)) -> (id: UInt16, length: UInt32)? {
        guard first < heads.count else { return nil }
        let last = batchLast ?? element
        let head = heads[first]
        first += 1
        if head == last.0 {
            batchLast = nil
            return (head, last.1)
        }
        batchLast = last
        return (head, 0)
    }
}
