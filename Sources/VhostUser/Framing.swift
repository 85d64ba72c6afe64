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

    /// Checks the payload size and descriptor count of a complete message against its request's
    /// rule (`VhostUserRequest.rule`).
    public static func validate(_ m: VhostUserMessage) throws(ProtocolError) {
        let size = Int(m.header.size)
        func exact(_ n: Int) throws(ProtocolError) {
            if size != n { throw .badPayloadSize(m.request, got: m.header.size, expected: "\(n)") }
        }
        func fds(_ n: Int) throws(ProtocolError) {
            if m.descriptors.count != n { throw .badDescriptorCount(m.request, got: m.descriptors.count, expected: n) }
        }
        let rule = m.request.rule
        var regions = 0
        switch rule.payload {
        case .exact(let n):
            try exact(n)
        case .memoryTable:
            let n = m.withPayload { MemoryTable.declaredCount($0) }
            guard n >= 1 && n <= UInt32(MemoryTable.maxRegions) else {
                throw .refused(m.request, .regionCount(n, max: MemoryTable.maxRegions))
            }
            try exact(MemoryTable.headerByteCount + Int(n) * MemoryRegionDescription.byteCount)
            regions = Int(n)
        case .config:
            guard size >= 12 else { throw .badPayloadSize(m.request, got: m.header.size, expected: "at least 12") }
            let declared = m.withPayload { Int($0.loadUnaligned(fromByteOffset: 4, as: UInt32.self)) }
            try exact(12 + min(declared, 256))
            if declared > 256 { throw .refused(m.request, .configSize(declared)) }
        case .unchecked:
            // Requests we do not implement: refused by the device; the header bounds the size.
            break
        }
        switch rule.descriptors {
        case .none:
            try fds(0)
        case .oneUnlessFlagged:
            let value = m.withPayload { $0.u64 }
            guard let p = VringDescriptorPayload(value) else { throw .refused(m.request, .reservedBits(value)) }
            try fds(p.noDescriptor ? 0 : 1)
        case .perRegion:
            try fds(regions)
        case .one:
            try fds(1)
        case .ignoredIfAny:
            if m.descriptors.count > 1 { try fds(1) }
        case .unchecked:
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

    /// How many bytes the next receive may take: the rest of the current header or message,
    /// never more, so descriptors stay with the message they came with.
    public var wantedLength: Int {
        let target = header.map { MessageHeader.byteCount + Int($0.size) } ?? MessageHeader.byteCount
        return target - filled
    }

    /// Takes `bytes` (at most `wantedLength`) and the descriptors received with them. Returns the
    /// message once it is complete. Throws on a framing error: the caller closes the connection.
    public func consume(_ bytes: UnsafeRawBufferPointer, descriptors received: [OwnedDescriptor]) throws(ProtocolError) -> VhostUserMessage? {
        precondition(bytes.count <= wantedLength, "received past the current message")
        descriptors.append(contentsOf: received)
        if descriptors.count > MemoryTable.maxRegions { throw .descriptorsTruncated }
        buffer.withUnsafeMutableBytes { raw in
            UnsafeMutableRawBufferPointer(rebasing: raw[filled..<filled + bytes.count]).copyMemory(from: bytes)
        }
        filled += bytes.count
        if header == nil && filled == MessageHeader.byteCount {
            let h = buffer.withUnsafeBytes { MessageHeader(UnsafeRawBufferPointer(rebasing: $0[0..<12])) }
            request = try MessageFraming.validateHeader(h)
            header = h
        }
        guard let h = header, let r = request, wantedLength == 0 else { return nil }
        let end = MessageHeader.byteCount + Int(h.size)
        let msg = VhostUserMessage(header: h, request: r, payload: Array(buffer[MessageHeader.byteCount..<end]),
                                   descriptors: descriptors)
        reset()
        return msg
    }

    /// Reads what is available from a non-blocking socket (the synchronous form of `consume`).
    /// Throws on a framing error or a socket error: the caller closes.
    public func read(from fd: CInt) throws -> Event {
        var chunk = [UInt8](repeating: 0, count: MessageHeader.byteCount + MessageFraming.maxPayload)
        while true {
            let wanted = wantedLength
            let received = try chunk.withUnsafeMutableBytes { raw in
                try UnixSocket.receive(fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<wanted]))
            }
            guard let received else { return .wouldBlock }
            if received.byteCount == 0 { return .closed }
            if received.controlTruncated || received.droppedDescriptors > 0 { throw ProtocolError.descriptorsTruncated }
            let message = try chunk.withUnsafeBytes { raw in
                try consume(UnsafeRawBufferPointer(rebasing: raw[0..<received.byteCount]), descriptors: received.descriptors)
            }
            if let message { return .message(message) }
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
