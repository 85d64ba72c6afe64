import VhostSystem

/// The rules of one request, in one place: the payload it carries, the descriptors it may bring,
/// whether the back-end always replies, and whether handling it pauses the data path (it changes
/// what the switch worker reads: rings, memory, eventfds, features).
public struct RequestRule: Sendable, Equatable {
    public enum Payload: Sendable, Equatable {
        /// Exactly this many bytes.
        case exact(Int)
        /// A memory table: its declared region count fixes the size.
        case memoryTable
        /// GET/SET_CONFIG: a 12-byte header and the size it declares (at most 256).
        case config
        /// Not decoded (requests the device refuses); only the header's bound applies.
        case unchecked
    }

    public enum Descriptors: Sendable, Equatable {
        case none
        /// One eventfd unless the payload's no-descriptor flag (0x100) is set.
        case oneUnlessFlagged
        /// One per memory region.
        case perRegion
        /// Exactly one (the dirty log's memory, SET_LOG_BASE and SET_LOG_FD; ADD_MEM_REG's region).
        case one
        /// None or one, which is closed unread (REM_MEM_REG: QEMU sends the region's fd along).
        case ignoredIfAny
        /// Not checked (requests the device refuses).
        case unchecked
    }

    public let payload: Payload
    public let descriptors: Descriptors
    /// The back-end answers with a payload whether or not the front-end asked (GET_* requests).
    public let replies: Bool
    public let pausesDataPath: Bool
}

extension VhostUserRequest {
    /// This request's rules.
    public var rule: RequestRule {
        switch self {
        case .getFeatures, .getProtocolFeatures, .getQueueNum, .getStatus:
            return RequestRule(payload: .exact(0), descriptors: .none, replies: true, pausesDataPath: false)
        case .setOwner:
            return RequestRule(payload: .exact(0), descriptors: .none, replies: false, pausesDataPath: false)
        case .resetOwner, .resetDevice:
            return RequestRule(payload: .exact(0), descriptors: .none, replies: false, pausesDataPath: true)
        case .getMaxMemSlots:
            return RequestRule(payload: .exact(0), descriptors: .none, replies: true, pausesDataPath: false)
        case .addMemReg:
            return RequestRule(payload: .exact(SingleMemoryRegion.byteCount), descriptors: .one, replies: false, pausesDataPath: true)
        case .remMemReg:
            return RequestRule(payload: .exact(SingleMemoryRegion.byteCount), descriptors: .ignoredIfAny, replies: false, pausesDataPath: true)
        case .setFeatures:
            return RequestRule(payload: .exact(8), descriptors: .none, replies: false, pausesDataPath: true)
        case .setProtocolFeatures, .netSetMTU, .setStatus:
            return RequestRule(payload: .exact(8), descriptors: .none, replies: false, pausesDataPath: false)
        case .sendRARP:
            return RequestRule(payload: .exact(8), descriptors: .none, replies: false, pausesDataPath: true)
        case .setVringNum, .setVringBase:
            return RequestRule(payload: .exact(VringState.byteCount), descriptors: .none, replies: false, pausesDataPath: false)
        case .getVringBase:
            return RequestRule(payload: .exact(VringState.byteCount), descriptors: .none, replies: true, pausesDataPath: true)
        case .setVringEnable:
            return RequestRule(payload: .exact(VringState.byteCount), descriptors: .none, replies: false, pausesDataPath: true)
        case .setVringAddr:
            return RequestRule(payload: .exact(VringAddress.byteCount), descriptors: .none, replies: false, pausesDataPath: true)
        case .setVringKick, .setVringCall, .setVringErr:
            return RequestRule(payload: .exact(8), descriptors: .oneUnlessFlagged, replies: false, pausesDataPath: true)
        case .setMemTable:
            return RequestRule(payload: .memoryTable, descriptors: .perRegion, replies: false, pausesDataPath: true)
        case .setLogBase:
            // Replies (an empty payload) once LOG_SHMFD is negotiated, which it must be.
            return RequestRule(payload: .exact(LogRegion.byteCount), descriptors: .one, replies: true, pausesDataPath: true)
        case .setLogFD:
            return RequestRule(payload: .exact(0), descriptors: .one, replies: false, pausesDataPath: false)
        case .getInflightFD:
            // Replies with the buffer's description and its descriptor.
            return RequestRule(payload: .exact(InflightBufferDescription.byteCount), descriptors: .none, replies: true, pausesDataPath: false)
        case .setInflightFD:
            // Rings take the buffer when they start (paused then): setting it changes nothing the worker reads.
            return RequestRule(payload: .exact(InflightBufferDescription.byteCount), descriptors: .one, replies: false, pausesDataPath: false)
        case .getConfig, .setConfig:
            return RequestRule(payload: .config, descriptors: .none, replies: false, pausesDataPath: false)
        default:
            return RequestRule(payload: .unchecked, descriptors: .unchecked, replies: false, pausesDataPath: false)
        }
    }
}

/// A front-end's request, decoded: framing checked against its rule, payload parsed, descriptors
/// taken. What the device implements has a case; the rest arrive as `unsupported`.
public enum DeviceRequest {
    case getFeatures
    case setFeatures(UInt64)
    case getProtocolFeatures
    case setProtocolFeatures(ProtocolFeatures)
    case setOwner
    case resetOwner
    case getQueueNum
    case setMemTable(MemoryTable, descriptors: [OwnedDescriptor])
    case setVringNum(VringState)
    case setVringAddr(VringAddress)
    case setVringBase(VringState)
    case getVringBase(VringState)
    case setVringKick(VringDescriptorPayload, OwnedDescriptor?)
    case setVringCall(VringDescriptorPayload, OwnedDescriptor?)
    case setVringErr(VringDescriptorPayload, OwnedDescriptor?)
    case setVringEnable(VringState)
    case sendRARP(mac: [UInt8])
    case netSetMTU(UInt64)
    case resetDevice
    case setLogBase(LogRegion, OwnedDescriptor)
    case setLogFD(OwnedDescriptor)
    case setStatus(UInt64)
    case getStatus
    case getMaxMemorySlots
    case addMemoryRegion(MemoryRegionDescription, OwnedDescriptor)
    case removeMemoryRegion(MemoryRegionDescription)
    case getInflightFD(InflightBufferDescription)
    case setInflightFD(InflightBufferDescription, OwnedDescriptor)
    case unsupported(VhostUserRequest)

    public init(_ m: VhostUserMessage) throws(ProtocolError) {
        try MessageFraming.validate(m)
        func descriptor() -> OwnedDescriptor? { m.descriptors.first }
        func ringDescriptor() -> VringDescriptorPayload { VringDescriptorPayload(m.withPayload { $0.u64 })! }  // validated
        switch m.request {
        case .getFeatures: self = .getFeatures
        case .setFeatures: self = .setFeatures(m.withPayload { $0.u64 })
        case .getProtocolFeatures: self = .getProtocolFeatures
        case .setProtocolFeatures: self = .setProtocolFeatures(ProtocolFeatures(rawValue: m.withPayload { $0.u64 }))
        case .setOwner: self = .setOwner
        case .resetOwner: self = .resetOwner
        case .getQueueNum: self = .getQueueNum
        case .setMemTable: self = .setMemTable(m.withPayload { MemoryTable($0) }, descriptors: m.descriptors)
        case .setVringNum: self = .setVringNum(m.withPayload { VringState($0) })
        case .setVringAddr: self = .setVringAddr(m.withPayload { VringAddress($0) })
        case .setVringBase: self = .setVringBase(m.withPayload { VringState($0) })
        case .getVringBase: self = .getVringBase(m.withPayload { VringState($0) })
        case .setVringKick: self = .setVringKick(ringDescriptor(), descriptor())
        case .setVringCall: self = .setVringCall(ringDescriptor(), descriptor())
        case .setVringErr: self = .setVringErr(ringDescriptor(), descriptor())
        case .setVringEnable: self = .setVringEnable(m.withPayload { VringState($0) })
        case .sendRARP: self = .sendRARP(mac: m.withPayload { Array($0[0..<6]) })
        case .netSetMTU: self = .netSetMTU(m.withPayload { $0.u64 })
        case .resetDevice: self = .resetDevice
        case .setLogBase: self = .setLogBase(m.withPayload { LogRegion($0) }, m.descriptors[0])  // validated: one
        case .setLogFD: self = .setLogFD(m.descriptors[0])  // validated: one
        case .setStatus: self = .setStatus(m.withPayload { $0.u64 })
        case .getStatus: self = .getStatus
        case .getMaxMemSlots: self = .getMaxMemorySlots
        case .addMemReg: self = .addMemoryRegion(m.withPayload { SingleMemoryRegion($0) }.region, m.descriptors[0])  // validated: one
        case .remMemReg: self = .removeMemoryRegion(m.withPayload { SingleMemoryRegion($0) }.region)
        case .getInflightFD: self = .getInflightFD(m.withPayload { InflightBufferDescription($0) })
        case .setInflightFD: self = .setInflightFD(m.withPayload { InflightBufferDescription($0) }, m.descriptors[0])  // validated: one
        default: self = .unsupported(m.request)
        }
    }
}

/// Why a request was refused, one case per rule, so a test asserts the rule that refused it.
public enum Refusal: Error, Equatable, Sendable, CustomStringConvertible {
    case featuresNotOffered(UInt64)
    case protocolFeaturesNotOffered(UInt64)
    case ringIndexOutOfRange(UInt32, rings: Int)
    case ringRunning(UInt32)
    case ringSize(UInt32, max: Int)
    case unknownAddressFlags(UInt32)
    case noMemoryTable
    case ringHasNoSize(UInt32)
    case baseTooLarge(UInt32)
    case ringNotSetUp(UInt32)
    case notAnEventFD(String)
    case enableNotBoolean(UInt32)
    case notNegotiated(ProtocolFeatures)
    case mtuOutOfRange(UInt64)
    /// A ring layout outside guest memory, or misaligned (Virtio's reason).
    case ringLayout(String)
    /// A memory table GuestMemory refused (its reason).
    case memoryTable(String)
    case reservedBits(UInt64)
    case regionCount(UInt32, max: Int)
    case configSize(Int)
    case statusNotAByte(UInt64)
    /// A dirty log the back-end cannot use (DirtyLog's reason).
    case dirtyLog(String)
    /// ADD_MEM_REG beyond the slots offered (GET_MAX_MEM_SLOTS).
    case memorySlotsFull(max: Int)
    /// REM_MEM_REG of a region that is not mapped.
    case noSuchRegion(MemoryRegionDescription)
    /// An inflight buffer the back-end cannot use (Virtio's reason).
    case inflight(String)

    public var description: String {
        switch self {
        case .featuresNotOffered(let bits): "features include bits not offered (0x\(String(bits, radix: 16)))"
        case .protocolFeaturesNotOffered(let bits): "protocol features 0x\(String(bits, radix: 16)) include bits not offered"
        case .ringIndexOutOfRange(let i, let n): "ring index \(i) out of range (device has \(n) rings)"
        case .ringRunning(let i): "ring \(i) is running"
        case .ringSize(let s, let max): "size \(s) is not in 1...\(max) (and a power of two, for a split ring)"
        case .unknownAddressFlags(let f): "unknown flags 0x\(String(f, radix: 16))"
        case .noMemoryTable: "no memory table yet"
        case .ringHasNoSize(let i): "ring \(i) has no size yet (SET_VRING_NUM)"
        case .baseTooLarge(let b): "base \(b) does not fit 16 bits (split ring)"
        case .ringNotSetUp(let i): "ring \(i) is not set up (needs SET_MEM_TABLE, SET_VRING_NUM, SET_VRING_ADDR)"
        case .notAnEventFD(let what): "descriptor is not an eventfd (\(what))"
        case .enableNotBoolean(let v): "enable must be 0 or 1, got \(v)"
        case .notNegotiated(let f): "protocol feature 0x\(String(f.rawValue, radix: 16)) not negotiated"
        case .mtuOutOfRange(let v): "MTU \(v) outside 68...65535"
        case .ringLayout(let why): why
        case .memoryTable(let why): why
        case .reservedBits(let v): "reserved bits set in 0x\(String(v, radix: 16))"
        case .regionCount(let n, let max): "\(n) regions (1...\(max) allowed)"
        case .configSize(let n): "config size \(n) > 256"
        case .statusNotAByte(let v): "device status 0x\(String(v, radix: 16)) does not fit 8 bits"
        case .dirtyLog(let why): why
        case .memorySlotsFull(let max): "all \(max) memory slots are in use"
        case .inflight(let why): why
        case .noSuchRegion(let r): "no mapped region at guest address 0x\(String(r.guestPhysicalAddress, radix: 16)), user address 0x\(String(r.userAddress, radix: 16)), size 0x\(String(r.size, radix: 16))"
        }
    }
}
