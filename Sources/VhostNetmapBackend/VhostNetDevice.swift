import DataPath
import Glibc
import Logging
import VALESwitch
import VhostSystem
import VhostUser
import Virtio

/// One vhost-user virtio-net device: the protocol state machine for a front-end, attached to a
/// switch port. Runs on the control thread; every change that the data path can see is made
/// with the switch lock held.
public final class VhostNetDevice: @unchecked Sendable {
    /// Per-ring control state (vhost-user's view of a virtqueue).
    final class Vring {
        var size: UInt32 = 0
        var addresses: RingAddresses?
        var base: UInt16 = 0
        var kick: OwnedDescriptor?
        var call: OwnedDescriptor?
        var error: OwnedDescriptor?
        var kickPolled = false
        /// Started by SET_VRING_KICK, stopped by GET_VRING_BASE.
        var started = false
        var enabled = false
        /// Where used-ring writes are logged during a migration (VHOST_VRING_F_LOG).
        var usedRingLogAddress: GuestPhysicalAddress?
    }

    public static let offeredFeatures: VirtioFeatures = [
        .version1, .anyLayout, .indirectDescriptors, .eventIndex, .ringPacked, .inOrder, .netMergeableRxBuffers,
        .protocolFeatures, .netMQ, .netMTU, .netGuestAnnounce, .logAll,
        .netCSUM, .netGuestCSUM, .netGuestTSO4, .netGuestTSO6, .netGuestECN, .netGuestUFO,
        .netHostTSO4, .netHostTSO6, .netHostECN, .netHostUFO,
    ]
    public static let offeredProtocolFeatures: ProtocolFeatures = [.mq, .logSHMFD, .replyAck, .rarp, .mtu, .inflightSHMFD, .resetDevice, .configureMemSlots, .status]

    public let name: String
    public let queuePairs: Int
    let vale: VALESwitch
    let port: VirtioNetPort
    public private(set) var portIndex: Int = -1
    /// Carries the device's name as `port` metadata.
    let logger: Logger
    private let wakeWorker: () -> Void

    var vrings: [Vring]
    var memory: GuestMemory?
    private(set) var features: VirtioFeatures = []
    private var featuresSet = false
    /// The features the front-end set, once it has (control thread).
    public var negotiatedFeatures: VirtioFeatures? { featuresSet ? features : nil }
    /// The rings' layout, as the features say (VIRTIO_F_RING_PACKED).
    var ringFormat: RingFormat { features.contains(.ringPacked) ? .packed : .split }
    private(set) var protocolFeatures: ProtocolFeatures = []
    /// SET_PROTOCOL_FEATURES was received: QEMU then sends SET_VRING_ENABLE even before SET_FEATURES.
    private var protocolFeaturesNegotiated = false
    public private(set) var mtu: Int = 1500
    /// Live migration's dirty log (SET_LOG_BASE), used while LOG_ALL is negotiated.
    var dirtyLog: DirtyLog?
    /// SET_LOG_FD's eventfd: kept, as the spec has it; QEMU's vhost-user never sends one.
    private var logDescriptor: OwnedDescriptor?
    /// INFLIGHT_SHMFD's buffer (GET/SET_INFLIGHT_FD); rings that start take their region of it.
    var inflight: InflightRegion?
    /// The status byte the front-end last set (SET_STATUS), as GET_STATUS reports it.
    private(set) var status: DeviceStatus = []

    public init(name: String, queuePairs: Int, vale: VALESwitch, logger: Logger, wakeWorker: @escaping () -> Void) throws {
        precondition(queuePairs >= 1 && queuePairs <= 64)
        self.name = name
        self.queuePairs = queuePairs
        self.vale = vale
        let deviceLogger = logger.with("port", name)
        self.logger = deviceLogger
        self.wakeWorker = wakeWorker
        vrings = (0..<(2 * queuePairs)).map { _ in Vring() }
        let log = deviceLogger
        port = VirtioNetPort(queueCount: 2 * queuePairs) { q in
            log.error("ring \(q.index) broken: \(q.brokenReason ?? "?"); it stays stopped until the front-end resets it")
        }
        let portName = name.split(separator: ":", maxSplits: 1).last.map(String.init) ?? name
        let p = port
        portIndex = try vale.lock.withLock { _ throws(SwitchError) in try vale.attach(p, named: portName) }
    }

    public func detachFromSwitch() {
        reset(reason: "port removed")
        vale.lock.withLock { _ in vale.detach(index: portIndex) }
        wakeWorker()
    }

    // MARK: Message handling

    /// What to send back for a message.
    public enum Response {
        case none
        case reply([UInt8])
        case replyWithDescriptor([UInt8], OwnedDescriptor)
    }

    /// Handles one message: decoded (`DeviceRequest`, which checks the framing), then applied.
    /// Throws `ProtocolError` to refuse it; `.refused` names the rule.
    public func handle(_ m: VhostUserMessage) throws(ProtocolError) -> Response {
        let request = try DeviceRequest(m)
        if case .unsupported(let r) = request { throw .unsupported(r) }
        let pausesBefore = datapathPauses
        let response: Response
        do {
            response = try apply(request)
        } catch {
            throw .refused(m.request, error)
        }
        // The rule table and the handlers agree on which requests change what the worker reads.
        assert(!m.request.rule.pausesDataPath || datapathPauses > pausesBefore, "\(m.request) must pause the data path")
        return response
    }

    private func apply(_ request: DeviceRequest) throws(Refusal) -> Response {
        switch request {
        case .getFeatures:
            return .reply(u64(Self.offeredFeatures.rawValue))
        case .setFeatures(let bits):
            let f = VirtioFeatures(rawValue: bits)
            guard Self.offeredFeatures.isSuperset(of: f) else {
                throw .featuresNotOffered(f.rawValue & ~Self.offeredFeatures.rawValue)
            }
            setFeatures(f)
        case .getProtocolFeatures:
            return .reply(u64(Self.offeredProtocolFeatures.rawValue))
        case .setProtocolFeatures(let p):
            guard Self.offeredProtocolFeatures.isSuperset(of: p) else { throw .protocolFeaturesNotOffered(p.rawValue) }
            protocolFeatures = p
            protocolFeaturesNegotiated = true
        case .setOwner:
            break // one front-end per connection: ownership needs no state
        case .resetOwner:
            reset(reason: "RESET_OWNER")
        case .getQueueNum:
            // Queue pairs, as QEMU's and DPDK's front-ends compare it with their queues= option.
            return .reply(u64(UInt64(queuePairs)))
        case .setMemTable(let table, let descriptors):
            try setMemoryTable(table, descriptors)
        case .getMaxMemorySlots:
            return .reply(u64(try maxMemorySlots()))
        case .addMemoryRegion(let region, let descriptor):
            try addMemoryRegion(region, descriptor)
        case .removeMemoryRegion(let region):
            try removeMemoryRegion(region)
        case .setVringNum(let s):
            let v = try vring(s.index)
            guard !v.started else { throw .ringRunning(s.index) }
            // A packed ring may have any size; a split ring's is a power of two.
            guard s.num >= 1, s.num <= UInt32(Virtqueue.maxSize), ringFormat == .packed || s.num & (s.num - 1) == 0 else {
                throw .ringSize(s.num, max: Virtqueue.maxSize)
            }
            v.size = s.num
        case .setVringAddr(let a):
            let v = try vring(a.index)
            guard a.flags & ~VringAddress.logFlag == 0 else { throw .unknownAddressFlags(a.flags) }
            guard let memory else { throw .noMemoryTable }
            guard v.size != 0 else { throw .ringHasNoSize(a.index) }
            // The wire's ring addresses are the front-end's virtual addresses.
            let addresses = RingAddresses(descriptorTable: FrontEndAddress(a.descriptorTable), availRing: FrontEndAddress(a.availRing),
                                          usedRing: FrontEndAddress(a.usedRing))
            try checkLayout(addresses, size: v.size, memory: memory)
            try withDatapathPaused { () throws(Refusal) in
                v.addresses = addresses
                v.usedRingLogAddress = a.flags & VringAddress.logFlag != 0 ? GuestPhysicalAddress(a.log) : nil
                if v.started { try attach(a.index) }
            }
        case .setVringBase(let s):
            let v = try vring(s.index)
            guard !v.started else { throw .ringRunning(s.index) }
            // Packed: avail slot and wrap counter in the low half; QEMU puts the used position in
            // the high half, which is the same once a ring was stopped (DPDK ignores it too).
            guard s.num <= 0xffff || ringFormat == .packed else { throw .baseTooLarge(s.num) }
            v.base = UInt16(truncatingIfNeeded: s.num)
        case .getVringBase(let s):
            _ = try vring(s.index) // validates the index
            let base = UInt32(stop(Int(s.index)))
            // Packed: every chain taken is used when the ring stops, so the used position (QEMU
            // reads it from the high half) is the avail position.
            return .reply(VringState(index: s.index, num: ringFormat == .packed ? base | base << 16 : base).encoded())
        case .setVringKick(let p, let descriptor):
            let v = try vring(p.index)
            let fd = try eventDescriptor(descriptor)
            guard memory != nil, v.size != 0, v.addresses != nil else { throw .ringNotSetUp(p.index) }
            try withDatapathPaused { () throws(Refusal) in
                v.kick = fd
                v.kickPolled = p.noDescriptor
                let starting = !v.started
                if starting {
                    port.queues[Int(p.index)].resume(at: v.base)
                }
                v.started = true
                try attach(p.index)
                if starting {
                    startInflightTracking(Int(p.index))
                    resynchroniseIfTheBaseCannotBeRight(Int(p.index))
                }
            }
            logger.info("ring \(p.index) started (size \(v.size), base \(v.base)\(p.noDescriptor ? ", polled" : ""))")
        case .setVringCall(let p, let descriptor):
            let v = try vring(p.index)
            let fd = try eventDescriptor(descriptor)
            withDatapathPaused { v.call = fd }
        case .setVringErr(let p, let descriptor):
            let v = try vring(p.index)
            let fd = try eventDescriptor(descriptor)
            withDatapathPaused { v.error = fd }
        case .setVringEnable(let s):
            let v = try vring(s.index)
            guard s.num <= 1 else { throw .enableNotBoolean(s.num) }
            // The spec says it "should" follow PROTOCOL_FEATURES; DPDK's virtio-user sends it
            // first when it reconnects, and DPDK's and QEMU's back-ends accept it. So do we: the
            // flag only decides whether a started ring moves frames.
            if !(protocolFeaturesNegotiated || features.contains(.protocolFeatures)) {
                logger.debug("ring \(s.index) \(s.num == 1 ? "enabled" : "disabled") before PROTOCOL_FEATURES was negotiated")
            }
            withDatapathPaused { v.enabled = s.num == 1 }
        case .sendRARP(let mac):
            guard protocolFeatures.contains(.rarp) else { throw .notNegotiated(.rarp) }
            withDatapathPaused { port.pendingAnnouncement = mac }
            logger.info("RARP announcement for \(mac.map { String($0, radix: 16) }.joined(separator: ":"))")
        case .netSetMTU(let value):
            guard protocolFeatures.contains(.mtu) else { throw .notNegotiated(.mtu) }
            guard value >= 68 && value <= 65535 else { throw .mtuOutOfRange(value) }
            mtu = Int(value)
        case .setLogBase(let region, let descriptor):
            try setLogBase(region, descriptor)
            return .reply([])
        case .setLogFD(let descriptor):
            logDescriptor = try eventDescriptor(descriptor)
        case .resetDevice:
            guard protocolFeatures.contains(.resetDevice) else { throw .notNegotiated(.resetDevice) }
            reset(reason: "RESET_DEVICE")
        case .setStatus(let value):
            guard protocolFeatures.contains(.status) else { throw .notNegotiated(.status) }
            guard value <= 0xff else { throw .statusNotAByte(value) }
            setStatus(DeviceStatus(rawValue: UInt8(value)))
        case .getStatus:
            guard protocolFeatures.contains(.status) else { throw .notNegotiated(.status) }
            return .reply(u64(UInt64(status.rawValue)))
        case .getInflightFD(let wanted):
            return try getInflightBuffer(wanted)
        case .setInflightFD(let given, let descriptor):
            try setInflightBuffer(given, descriptor)
        case .unsupported:
            preconditionFailure("refused by handle(_:)")
        }
        return .none
    }

    private func u64(_ v: UInt64) -> [UInt8] {
        withUnsafeBytes(of: v.littleEndian) { Array($0) }
    }

    private func setFeatures(_ f: VirtioFeatures) {
        withDatapathPaused {
            features = f
            featuresSet = true
            if !f.contains(.protocolFeatures) {
                // Without PROTOCOL_FEATURES every ring is enabled (vhost-user spec).
                for v in vrings { v.enabled = true }
            }
        }
        logger.info("features \(f) (header \(f.netHeaderLength) bytes, \(f.contains(.ringPacked) ? "packed" : "split") rings\(f.contains(.inOrder) ? " in order" : "")\(f.contains(.netMergeableRxBuffers) ? ", mergeable RX" : ""))")
    }

    private func setMemoryTable(_ table: MemoryTable, _ descriptors: [OwnedDescriptor]) throws(Refusal) {
        let specs = table.regions.map {
            GuestRegionSpec(guestPhysicalAddress: GuestPhysicalAddress($0.guestPhysicalAddress), size: $0.size,
                            userAddress: FrontEndAddress($0.userAddress), mmapOffset: $0.mmapOffset)
        }
        let newMemory: GuestMemory
        do {
            newMemory = try GuestMemory(specs: specs, descriptors: descriptors)
        } catch {
            throw .memoryTable(error.description)
        }
        // Running rings move to the new table; one whose layout falls outside it is refused
        // before anything changes. The old mappings go away once nothing holds them.
        for v in vrings where v.started {
            guard let a = v.addresses else { continue }
            try checkLayout(a, size: v.size, memory: newMemory)
        }
        try withDatapathPaused { () throws(Refusal) in
            memory = newMemory
            for (i, v) in vrings.enumerated() where v.started {
                try attach(UInt32(i))
            }
        }
        logger.info("memory table with \(specs.count) region(s), \(newMemory.totalSize >> 20) MiB")
    }

    /// Attaches the ring's queue to memory (datapath paused by the caller).
    /// SET_STATUS: kept for GET_STATUS. FEATURES_OK is kept only once features are set (the
    /// driver reads it back to learn whether the device accepted them). 0 resets nothing: QEMU
    /// sends it when it stops the device and then asks each ring's base with GET_VRING_BASE,
    /// which a reset would lose (RESET_DEVICE is the reset).
    private func setStatus(_ wanted: DeviceStatus) {
        var s = wanted
        if s.contains(.featuresOK) && !featuresSet { s.remove(.featuresOK) }
        if s.contains(.failed) && !status.contains(.failed) { logger.warning("the driver set FAILED in the device status") }
        if s != status { logger.info("status \(s)") }
        status = s
    }

    /// Back to the state of a new connection: rings stopped and unmapped, descriptors closed.
    public func reset(reason: String, logLevel: Logger.Level = .info) {
        withDatapathPaused {
            for (i, v) in vrings.enumerated() {
                let q = port.queues[i]
                if v.started && q.isAttached { q.publishUsed() }
                q.detach()
                q.resume(at: 0)
                vrings[i] = Vring()
            }
            memory = nil
            features = []
            featuresSet = false
            protocolFeatures = []
            protocolFeaturesNegotiated = false
            status = []
            dirtyLog = nil
            inflight = nil
            logDescriptor = nil
            port.pendingAnnouncement = nil
            vale.learning.forget(port: portIndex)
        }
        logger.log(level: logLevel, "reset (\(reason))")
    }

    /// Runs `body` with the switch worker paused (switch lock held), then republishes what the
    /// data path may use and wakes the worker so it re-reads its wake-up descriptors.
    func withDatapathPaused<E: Error>(_ body: () throws(E) -> Void) throws(E) {
        var failure: E?
        datapathPauses &+= 1
        vale.lock.withLock { _ in
            pausedDepth += 1
            defer { pausedDepth -= 1 }
            do throws(E) {
                try body()
            } catch {
                failure = error
            }
            refreshDatapath()
            vale.configurationChanged()
        }
        wakeWorker()
        if let failure { throw failure }
    }

    /// How often the data path was paused (debug check of the request rule table).
    private var datapathPauses = 0
    /// Inside `withDatapathPaused`: the switch lock is held (control thread only).
    private var pausedDepth = 0

    /// What the worker reads changes only with the switch lock held.
    @inline(__always)
    func assertPaused(_ function: StaticString = #function) {
        assert(pausedDepth > 0, "\(function) changes what the switch worker reads: only inside withDatapathPaused")
    }

    /// Recomputes the port's ready rings: started, enabled, attached, not broken.
    private func refreshDatapath() {
        assertPaused()
        let hdr = features.netHeaderLength
        var tx: [Virtqueue] = []
        var rx: [Virtqueue] = []
        var polled = false
        for (i, v) in vrings.enumerated() {
            let q = port.queues[i]
            q.eventIndex = features.contains(.eventIndex)
            q.indirectAllowed = features.contains(.indirectDescriptors)
            q.setDirtyLog(features.contains(.logAll) ? dirtyLog : nil)
            q.usedRingLogAddress = v.usedRingLogAddress
            port.callDescriptors[i] = v.call?.rawValue ?? -1
            port.errorDescriptors[i] = v.error?.rawValue ?? -1
            port.kickDescriptors[i] = v.kick?.rawValue ?? -1
            guard featuresSet, v.started, v.enabled, q.isAttached, !q.broken else { continue }
            if i & 1 == 1 {
                tx.append(q)
                if v.kickPolled { polled = true }
            } else {
                rx.append(q)
            }
        }
        port.setReady(tx: tx, rx: rx)
        port.polledTX = polled
        port.features = features
        port.headerLength = hdr
        port.mergeable = features.contains(.netMergeableRxBuffers)
    }
}
