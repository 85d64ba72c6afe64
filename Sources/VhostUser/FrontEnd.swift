import Glibc
import SystemPackage
import VhostSystem

/// The front-end (driver) side of the protocol, as QEMU or DPDK virtio-user speak it: sends
/// requests with descriptors and reads replies. Blocking, with a bounded wait for each reply.
public final class VhostUserFrontEnd {
    public let socket: OwnedDescriptor
    public private(set) var protocolFeatures: UInt64 = 0
    public var replyTimeoutMilliseconds: Int32 = 5000

    public enum FrontEndError: Error, Equatable, CustomStringConvertible {
        case closed
        case timeout
        case badReply(String)
        case nack(VhostUserRequest)
        case system(Int32)

        public var description: String {
            switch self {
            case .closed: "back-end closed the connection"
            case .timeout: "no reply from the back-end"
            case .badReply(let s): "bad reply: \(s)"
            case .nack(let r): "back-end refused \(r)"
            case .system(let e): "socket error \(e)"
            }
        }
    }

    public init(socket: OwnedDescriptor) {
        self.socket = socket
    }

    public convenience init(path: String) throws(FrontEndError) {
        do {
            self.init(socket: try UnixSocket.connect(path: path, nonBlocking: false))
        } catch {
            throw .system(error.rawValue)
        }
    }

    /// Sends raw bytes (hostile tests craft their own headers).
    public func sendRaw(_ bytes: [UInt8], descriptors: [CInt] = []) throws(FrontEndError) {
        do {
            try bytes.withUnsafeBytes { b in try UnixSocket.send(socket.rawValue, b, descriptors: descriptors) }
        } catch let e as Errno {
            throw e.rawValue == EPIPE || e.rawValue == ECONNRESET ? .closed : .system(e.rawValue)
        } catch {
            throw .system(EIO)
        }
    }

    public var replyAckNegotiated: Bool { protocolFeatures & ProtocolFeatures.replyAck.rawValue != 0 }

    /// Sends a request; asks for an ACK when REPLY_ACK is negotiated and `ack` is set, and
    /// throws `.nack` if the back-end refuses.
    public func send(_ request: VhostUserRequest, _ payload: [UInt8] = [], descriptors: [CInt] = [], ack: Bool = true) throws(FrontEndError) {
        let wantAck = ack && replyAckNegotiated
        let flags = MessageHeader.version | (wantAck ? MessageHeader.needReplyFlag : 0)
        try sendRaw(MessageHeader(request: request.rawValue, flags: flags, size: UInt32(payload.count)).encoded() + payload,
                    descriptors: descriptors)
        if wantAck {
            let reply = try readReply(for: request)
            guard reply.count == 8 else { throw .badReply("ACK of \(reply.count) bytes") }
            let v = reply.withUnsafeBytes { $0.u64 }
            if v != 0 { throw .nack(request) }
        }
    }

    /// Sends a request that has a reply, and returns the reply's payload.
    public func call(_ request: VhostUserRequest, _ payload: [UInt8] = []) throws(FrontEndError) -> [UInt8] {
        var ignored: [OwnedDescriptor] = []
        return try call(request, payload, descriptors: &ignored)
    }

    /// The same, keeping the descriptors the reply brought (GET_INFLIGHT_FD's buffer).
    public func call(_ request: VhostUserRequest, _ payload: [UInt8] = [], descriptors: inout [OwnedDescriptor]) throws(FrontEndError) -> [UInt8] {
        try sendRaw(MessageHeader(request: request.rawValue, flags: MessageHeader.version, size: UInt32(payload.count)).encoded() + payload)
        return try readReply(for: request, descriptors: &descriptors)
    }

    public func callU64(_ request: VhostUserRequest) throws(FrontEndError) -> UInt64 {
        let r = try call(request)
        guard r.count == 8 else { throw .badReply("\(request): \(r.count) bytes") }
        return r.withUnsafeBytes { $0.u64 }
    }

    /// Reads one reply; checks flags (exactly REPLY|VERSION, as QEMU does) and the request id.
    public func readReply(for request: VhostUserRequest) throws(FrontEndError) -> [UInt8] {
        var ignored: [OwnedDescriptor] = []
        return try readReply(for: request, descriptors: &ignored)
    }

    private func readReply(for request: VhostUserRequest, descriptors: inout [OwnedDescriptor]) throws(FrontEndError) -> [UInt8] {
        let header = try readExactly(MessageHeader.byteCount, descriptors: &descriptors)
        let h = header.withUnsafeBytes { MessageHeader($0) }
        guard h.flags == MessageHeader.replyFlag | MessageHeader.version else { throw .badReply("flags 0x\(String(h.flags, radix: 16))") }
        guard h.request == request.rawValue else { throw .badReply("reply to \(h.request), expected \(request.rawValue)") }
        guard h.size <= 4096 else { throw .badReply("size \(h.size)") }
        return try readExactly(Int(h.size), descriptors: &descriptors)
    }

    /// GET_INFLIGHT_FD: the back-end's inflight buffer for `queues` queues of `size` entries,
    /// its description and descriptor (kept by the front-end and handed back after a reconnect).
    public func getInflightBuffer(queues: UInt16, size: UInt16) throws(FrontEndError) -> (InflightBufferDescription, OwnedDescriptor) {
        let wanted = InflightBufferDescription(mmapSize: 0, mmapOffset: 0, queueCount: queues, queueSize: size)
        var descriptors: [OwnedDescriptor] = []
        let reply = try call(.getInflightFD, wanted.encoded(), descriptors: &descriptors)
        guard reply.count == InflightBufferDescription.byteCount else { throw .badReply("GET_INFLIGHT_FD reply of \(reply.count) bytes") }
        guard let descriptor = descriptors.first else { throw .badReply("GET_INFLIGHT_FD reply without a descriptor") }
        return (reply.withUnsafeBytes { InflightBufferDescription($0) }, descriptor)
    }

    /// SET_INFLIGHT_FD: hands a kept inflight buffer (back) to the back-end.
    public func setInflightBuffer(_ d: InflightBufferDescription, descriptor: CInt) throws(FrontEndError) {
        try send(.setInflightFD, d.encoded(), descriptors: [descriptor])
    }

    /// Reads `count` bytes with recvmsg, collecting the descriptors that come with them.
    private func readExactly(_ count: Int, descriptors: inout [OwnedDescriptor]) throws(FrontEndError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var filled = 0
        let fd = socket.rawValue
        while filled < count {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, Int32(replyTimeoutMilliseconds))
            if ready == 0 { throw .timeout }
            let start = filled
            let result: Result<UnixSocket.Received?, Errno> = out.withUnsafeMutableBytes { b in
                Result { () throws(Errno) in try UnixSocket.receive(fd, into: UnsafeMutableRawBufferPointer(rebasing: b[start...])) }
            }
            switch result {
            case .failure(let e):
                if e.rawValue == EINTR { continue }
                throw e.rawValue == ECONNRESET ? .closed : .system(e.rawValue)
            case .success(nil):
                continue  // EAGAIN
            case .success(let r?):
                if r.byteCount == 0 { throw .closed }
                descriptors += r.descriptors
                filled += r.byteCount
            }
        }
        return out
    }

    /// Whether the back-end has closed the connection (reads EOF within `milliseconds`).
    public func waitForClose(milliseconds: Int32 = 2000) -> Bool {
        var pfd = pollfd(fd: socket.rawValue, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, Int32(milliseconds)) > 0 else { return false }
        var byte: UInt8 = 0
        return recv(socket.rawValue, &byte, 1, Int32(MSG_DONTWAIT)) == 0 || (pfd.revents & Int16(POLLHUP)) != 0
    }

    // MARK: The usual start-up sequence

    /// GET/SET_FEATURES and protocol features; returns the negotiated virtio features.
    public func negotiate(wanted: UInt64, protocol wantedProtocol: UInt64) throws(FrontEndError) -> UInt64 {
        try send(.setOwner, ack: false)
        let offered = try callU64(.getFeatures)
        let features = offered & wanted
        if features & (1 << 30) != 0 {
            let offeredProtocol = try callU64(.getProtocolFeatures)
            let p = offeredProtocol & wantedProtocol
            try send(.setProtocolFeatures, u64(p), ack: false)
            protocolFeatures = p
        }
        try send(.setFeatures, u64(features))
        return features
    }

    public func setMemoryTable(_ regions: [MemoryRegionDescription], descriptors: [CInt]) throws(FrontEndError) {
        try send(.setMemTable, MemoryTable(regions: regions).encoded(), descriptors: descriptors)
    }

    /// NUM, BASE, ADDR, CALL, KICK and (with protocol features) ENABLE for one ring.
    /// `base`: 0 for a new split ring; 0x8000 (slot 0, wrap counter 1) for a new packed ring.
    public func startRing(index: UInt32, size: UInt32, address: VringAddress, kick: CInt, call: CInt, enable: Bool, base: UInt32 = 0) throws(FrontEndError) {
        try send(.setVringNum, VringState(index: index, num: size).encoded())
        try send(.setVringBase, VringState(index: index, num: base).encoded())
        try send(.setVringAddr, address.encoded())
        try send(.setVringCall, u64(UInt64(index)), descriptors: [call])
        try send(.setVringKick, u64(UInt64(index)), descriptors: [kick])
        if enable && protocolFeatures != 0 || enable && replyAckNegotiated {
            try send(.setVringEnable, VringState(index: index, num: 1).encoded())
        }
    }

    public func u64(_ v: UInt64) -> [UInt8] { Swift.withUnsafeBytes(of: v.littleEndian) { Array($0) } }
}
