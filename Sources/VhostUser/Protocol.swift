/// Front-end → back-end requests (QEMU `docs/interop/vhost-user.rst`).
public enum VhostUserRequest: UInt32, Sendable, CustomStringConvertible {
    case getFeatures = 1
    case setFeatures = 2
    case setOwner = 3
    case resetOwner = 4
    case setMemTable = 5
    case setLogBase = 6
    case setLogFD = 7
    case setVringNum = 8
    case setVringAddr = 9
    case setVringBase = 10
    case getVringBase = 11
    case setVringKick = 12
    case setVringCall = 13
    case setVringErr = 14
    case getProtocolFeatures = 15
    case setProtocolFeatures = 16
    case getQueueNum = 17
    case setVringEnable = 18
    case sendRARP = 19
    case netSetMTU = 20
    case setBackendReqFD = 21
    case iotlbMessage = 22
    case setVringEndian = 23
    case getConfig = 24
    case setConfig = 25
    case createCryptoSession = 26
    case closeCryptoSession = 27
    case postcopyAdvise = 28
    case postcopyListen = 29
    case postcopyEnd = 30
    case getInflightFD = 31
    case setInflightFD = 32
    case gpuSetSocket = 33
    case resetDevice = 34
    case vringKick = 35
    case getMaxMemSlots = 36
    case addMemReg = 37
    case remMemReg = 38
    case setStatus = 39
    case getStatus = 40
    case getSharedObject = 41
    case setDeviceStateFD = 42
    case checkDeviceState = 43

    public var description: String {
        switch self {
        case .getFeatures: "GET_FEATURES"
        case .setFeatures: "SET_FEATURES"
        case .setOwner: "SET_OWNER"
        case .resetOwner: "RESET_OWNER"
        case .setMemTable: "SET_MEM_TABLE"
        case .setLogBase: "SET_LOG_BASE"
        case .setLogFD: "SET_LOG_FD"
        case .setVringNum: "SET_VRING_NUM"
        case .setVringAddr: "SET_VRING_ADDR"
        case .setVringBase: "SET_VRING_BASE"
        case .getVringBase: "GET_VRING_BASE"
        case .setVringKick: "SET_VRING_KICK"
        case .setVringCall: "SET_VRING_CALL"
        case .setVringErr: "SET_VRING_ERR"
        case .getProtocolFeatures: "GET_PROTOCOL_FEATURES"
        case .setProtocolFeatures: "SET_PROTOCOL_FEATURES"
        case .getQueueNum: "GET_QUEUE_NUM"
        case .setVringEnable: "SET_VRING_ENABLE"
        case .sendRARP: "SEND_RARP"
        case .netSetMTU: "NET_SET_MTU"
        case .setBackendReqFD: "SET_BACKEND_REQ_FD"
        case .iotlbMessage: "IOTLB_MSG"
        case .setVringEndian: "SET_VRING_ENDIAN"
        case .getConfig: "GET_CONFIG"
        case .setConfig: "SET_CONFIG"
        case .createCryptoSession: "CREATE_CRYPTO_SESSION"
        case .closeCryptoSession: "CLOSE_CRYPTO_SESSION"
        case .postcopyAdvise: "POSTCOPY_ADVISE"
        case .postcopyListen: "POSTCOPY_LISTEN"
        case .postcopyEnd: "POSTCOPY_END"
        case .getInflightFD: "GET_INFLIGHT_FD"
        case .setInflightFD: "SET_INFLIGHT_FD"
        case .gpuSetSocket: "GPU_SET_SOCKET"
        case .resetDevice: "RESET_DEVICE"
        case .vringKick: "VRING_KICK"
        case .getMaxMemSlots: "GET_MAX_MEM_SLOTS"
        case .addMemReg: "ADD_MEM_REG"
        case .remMemReg: "REM_MEM_REG"
        case .setStatus: "SET_STATUS"
        case .getStatus: "GET_STATUS"
        case .getSharedObject: "GET_SHARED_OBJECT"
        case .setDeviceStateFD: "SET_DEVICE_STATE_FD"
        case .checkDeviceState: "CHECK_DEVICE_STATE"
        }
    }
}

/// vhost-user protocol feature bits (GET/SET_PROTOCOL_FEATURES).
public struct ProtocolFeatures: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static let mq = ProtocolFeatures(rawValue: 1 << 0)
    public static let logSHMFD = ProtocolFeatures(rawValue: 1 << 1)
    public static let rarp = ProtocolFeatures(rawValue: 1 << 2)
    public static let replyAck = ProtocolFeatures(rawValue: 1 << 3)
    public static let mtu = ProtocolFeatures(rawValue: 1 << 4)
    public static let backendReq = ProtocolFeatures(rawValue: 1 << 5)
    public static let crossEndian = ProtocolFeatures(rawValue: 1 << 6)
    public static let config = ProtocolFeatures(rawValue: 1 << 9)
    public static let inflightSHMFD = ProtocolFeatures(rawValue: 1 << 12)
    public static let resetDevice = ProtocolFeatures(rawValue: 1 << 13)
    public static let configureMemSlots = ProtocolFeatures(rawValue: 1 << 15)
    public static let status = ProtocolFeatures(rawValue: 1 << 16)
}

/// The 12-byte message header: request, flags, payload size (native byte order).
public struct MessageHeader: Equatable, Sendable {
    public static let byteCount = 12
    public static let versionMask: UInt32 = 0x3
    public static let version: UInt32 = 0x1
    public static let replyFlag: UInt32 = 0x4
    public static let needReplyFlag: UInt32 = 0x8

    public var request: UInt32
    public var flags: UInt32
    public var size: UInt32

    public init(request: UInt32, flags: UInt32, size: UInt32) {
        self.request = request
        self.flags = flags
        self.size = size
    }

    public init(_ bytes: UnsafeRawBufferPointer) {
        request = bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self)
        flags = bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        size = bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
    }

    public var needsReply: Bool { flags & MessageHeader.needReplyFlag != 0 }

    public func encoded() -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(12)
        out.appendLittleEndian(request)
        out.appendLittleEndian(flags)
        out.appendLittleEndian(size)
        return out
    }
}

extension Array where Element == UInt8 {
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}

/// Why a message was refused. Each case names the rule that was broken.
public enum ProtocolError: Error, Equatable, CustomStringConvertible {
    case badVersion(flags: UInt32)
    case replyFlagFromFrontEnd
    case unknownRequest(UInt32)
    case badPayloadSize(VhostUserRequest, got: UInt32, expected: String)
    case badDescriptorCount(VhostUserRequest, got: Int, expected: Int)
    case descriptorsTruncated
    /// The device (or the framing) refused it by the rule `Refusal` names.
    case refused(VhostUserRequest, Refusal)
    case unsupported(VhostUserRequest)

    public var description: String {
        switch self {
        case .badVersion(let f): "bad version in flags 0x\(String(f, radix: 16)) (want version 1)"
        case .replyFlagFromFrontEnd: "front-end set the reply flag"
        case .unknownRequest(let r): "unknown request \(r)"
        case .badPayloadSize(let r, let got, let expected): "\(r): payload size \(got), expected \(expected)"
        case .badDescriptorCount(let r, let got, let expected): "\(r): \(got) file descriptors, expected \(expected)"
        case .descriptorsTruncated: "control data truncated (too many file descriptors)"
        case .refused(let r, let why): "\(r): \(why)"
        case .unsupported(let r): "\(r): not supported by this back-end"
        }
    }
}
