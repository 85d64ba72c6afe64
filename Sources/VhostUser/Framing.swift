import VhostSystem

/// A complete front-end message: header, exact payload, and the descriptors that came with it.
public struct VhostUserMessage {
    public var header: MessageHeader
    public var request: VhostUserRequest
    public var payload: [UInt8]
    public var descriptors: [OwnedDescriptor]

    public init(header: MessageHeader, request: VhostUserRequest, payload: [UInt8], descriptors: [OwnedDescriptor]) {
        self.header = header
        self.request = request
        self.payload = payload
        self.descriptors = descriptors
    }

    public func withPayload<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try payload.withUnsafeBytes(body)
    }
}

/// The framing rules: exact payload sizes per request and descriptor counts.
public enum MessageFraming {
    /// The largest payload any accepted request may carry (SET_CONFIG: 12 + 256 bytes).
    public static let maxPayload = 12 + 256

    /// Checks the header alone, before the payload is read: version, reply bit, known request,
    /// and a size this request may have. A failure here closes the connection.
    public static func validateHeader(_ h: MessageHeader) throws(ProtocolError) -> VhostUserRequest {
        guard h.flags & MessageHeader.versionMask == MessageHeader.version else { throw .badVersion(flags: h.flags) }
        guard h.flags & MessageHeader.replyFlag == 0 else { throw .replyFlagFromFrontEnd }
        guard let request = VhostUserRequest(rawValue: h.request) else { throw .unknownRequest(h.request) }
        guard h.size <= UInt32(maxPayload) else {
            throw .badPayloadSize(request, got: h.size, expected: "at most \(maxPayload)")
        }
        return request
    }

    /// Checks the payload size and descriptor count of a complete message.
    public static func validate(_ m: VhostUserMessage) throws(ProtocolError) {
        let size = Int(m.header.size)
        func exact(_ n: Int) throws(ProtocolError) {
            if size != n { throw .badPayloadSize(m.request, got: m.header.size, expected: "\(n)") }
        }
        func fds(_ n: Int) throws(ProtocolError) {
            if m.descriptors.count != n { throw .badDescriptorCount(m.request, got: m.descriptors.count, expected: n) }
        }
        switch m.request {
        case .getFeatures, .setOwner, .resetOwner, .getProtocolFeatures, .getQueueNum, .getMaxMemSlots, .resetDevice, .getStatus:
            try exact(0); try fds(0)
        case .setFeatures, .setProtocolFeatures, .netSetMTU, .sendRARP, .setStatus:
            try exact(8); try fds(0)
        case .setVringNum, .setVringBase, .getVringBase, .setVringEnable:
            try exact(VringState.byteCount); try fds(0)
        case .setVringAddr:
            try exact(VringAddress.byteCount); try fds(0)
        case .setVringKick, .setVringCall, .setVringErr:
            try exact(8)
            let value = m.withPayload { $0.u64 }
            guard let p = VringDescriptorPayload(value) else {
                throw .invalid(m.request, "reserved bits set in 0x\(String(value, radix: 16))")
            }
            try fds(p.noDescriptor ? 0 : 1)
        case .setMemTable:
            let n = m.withPayload { MemoryTable.declaredCount($0) }
            guard n >= 1 && n <= UInt32(MemoryTable.maxRegions) else {
                throw .invalid(m.request, "\(n) regions (1...\(MemoryTable.maxRegions) allowed)")
            }
            try exact(MemoryTable.headerByteCount + Int(n) * MemoryRegionDescription.byteCount)
            try fds(Int(n))
        case .getConfig, .setConfig:
            guard size >= 12 else { throw .badPayloadSize(m.request, got: m.header.size, expected: "at least 12") }
            let declared = m.withPayload { Int($0.loadUnaligned(fromByteOffset: 4, as: UInt32.self)) }
            try exact(12 + min(declared, 256))
            if declared > 256 { throw .invalid(m.request, "config size \(declared) > 256") }
            try fds(0)
        default:
            // Requests we do not implement: refused by the device; framing only bounds the size.
            break
        }
    }
}

/// Reassembles messages from a non-blocking stream socket. It never reads past the end of the
/// current message, so descriptors stay attached to the message they were sent with, and a
/// front-end that stops mid-message only leaves a partial message here (no thread blocks on it).
public final class MessageReader {
    public enum Event {
        case message(VhostUserMessage)
        case wouldBlock
        case closed
    }

    private var buffer: [UInt8]
    private var filled = 0
    private var header: MessageHeader?
    private var request: VhostUserRequest?
    private var descriptors: [OwnedDescriptor] = []

    public init() {
        buffer = [UInt8](repeating: 0, count: MessageHeader.byteCount + MessageFraming.maxPayload)
    }

    /// Reads what is available. Throws on a framing error or a socket error: the caller closes.
    public func read(from fd: CInt) throws -> Event {
        while true {
            let target = header.map { MessageHeader.byteCount + Int($0.size) } ?? MessageHeader.byteCount
            if filled == target, let h = header, let r = request {
                let msg = VhostUserMessage(header: h, request: r,
                                           payload: Array(buffer[MessageHeader.byteCount..<target]),
                                           descriptors: descriptors)
                reset()
                return .message(msg)
            }
            let received = try buffer.withUnsafeMutableBytes { raw in
                try UnixSocket.receive(fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[filled..<target]))
            }
            guard let received else { return .wouldBlock }
            if received.byteCount == 0 { return .closed }
            if received.controlTruncated || received.droppedDescriptors > 0 { throw ProtocolError.descriptorsTruncated }
            descriptors.append(contentsOf: received.descriptors)
            if descriptors.count > MemoryTable.maxRegions { throw ProtocolError.descriptorsTruncated }
            filled += received.byteCount
            if header == nil && filled == MessageHeader.byteCount {
                let h = buffer.withUnsafeBytes { MessageHeader(UnsafeRawBufferPointer(rebasing: $0[0..<12])) }
                request = try MessageFraming.validateHeader(h)
                header = h
            }
        }
    }

    private func reset() {
        filled = 0
        header = nil
        request = nil
        descriptors = []
    }

    /// Encodes a reply to `request`: flags exactly REPLY|VERSION, as QEMU requires.
    public static func reply(to request: UInt32, payload: [UInt8]) -> [UInt8] {
        MessageHeader(request: request, flags: MessageHeader.replyFlag | MessageHeader.version, size: UInt32(payload.count)).encoded() + payload
    }
}
