import Glibc
import Logging
import URing
import VhostSystem
import VhostUser

/// One front-end connection to a device: reads messages, lets the device handle them, replies.
final class Connection {
    let socket: OwnedDescriptor
    let device: VhostNetDevice
    private let reader = MessageReader()
    private let logger: Logger

    init(socket: OwnedDescriptor, device: VhostNetDevice, logger: Logger) {
        self.socket = socket
        self.device = device
        self.logger = device.logger  // with the device's port metadata
    }

    enum Outcome { case open, closed(String) }

    /// What the front-end did, to say why it left: messages handled, the last one, whether it
    /// read the queue count and whether it got as far as choosing features.
    private(set) var messagesHandled = 0
    private(set) var lastRequest: VhostUserRequest?
    private(set) var askedQueueCount = false
    private(set) var featuresChosen = false
    let connectedAt = ContinuousClock.now

    /// A likely reason when a front-end closes the connection itself before choosing features:
    /// it wants more queue pairs than offered (QEMU reads the count, sets up its first pair,
    /// then gives up), or needs features the back-end lacks.
    var probableLeaveReason: String? {
        guard !featuresChosen else { return nil }
        if askedQueueCount {
            return "it read the queue count (\(device.queuePairs) pair(s)) and left before choosing features: if it wants more (QEMU or virtio-user queues=N), serve the port with queues=N"
        }
        switch lastRequest {
        case .getFeatures?, .getProtocolFeatures?, .setProtocolFeatures?:
            return "it left during feature negotiation: it may need a feature this back-end does not offer (offered 0x\(String(VhostNetDevice.offeredFeatures.rawValue, radix: 16)))"
        case nil:
            return "it sent no message"
        default:
            return nil
        }
    }

    /// Bytes the next receive may take (the rest of the current message, so descriptors stay
    /// with their message).
    var wantedLength: Int { reader.wantedLength }

    /// Handles one receive completion. A framing error, or a refused message that the front-end
    /// did not ask an ACK for, closes the connection (with a log line).
    func consume(_ received: EventLoop.Received) -> Outcome {
        let descriptors = received.descriptors.map { OwnedDescriptor(adopting: $0) }
        if let error = received.error {
            return .closed("receive failed: \(error)")
        }
        if received.endOfStream { return .closed("front-end closed the connection") }
        if received.descriptorsTruncated { return .closed("protocol error: \(ProtocolError.descriptorsTruncated)") }
        do {
            if let m = try reader.consume(received.bytes, descriptors: descriptors) {
                return dispatch(m)
            }
            return .open
        } catch {
            return .closed("protocol error: \(error)")
        }
    }

    private func dispatch(_ m: VhostUserMessage) -> Outcome {
        messagesHandled += 1
        lastRequest = m.request
        if m.request == .setFeatures { featuresChosen = true }
        if m.request == .getQueueNum { askedQueueCount = true }
        let ackWanted = m.header.needsReply && device.protocolFeatures.contains(.replyAck)
        do {
            switch try device.handle(m) {
            case .reply(let payload):
                try send(MessageReader.reply(to: m.header.request, payload: payload))
            case .replyWithDescriptor(let payload, let descriptor):
                try send(MessageReader.reply(to: m.header.request, payload: payload), descriptors: [descriptor.rawValue])
            case .none:
                if ackWanted { try send(MessageReader.reply(to: m.header.request, payload: ack(0))) }
            }
            logger.trace("\(m.request) ok")
            return .open
        } catch let e as ProtocolError {
            logger.warning("refused \(e)")
            if ackWanted {
                do { try send(MessageReader.reply(to: m.header.request, payload: ack(1))) } catch {
                    return .closed("reply failed: \(error)")
                }
                return .open
            }
            return .closed("refused \(m.request) without REPLY_ACK")
        } catch {
            return .closed("reply failed: \(error)")
        }
    }

    private func ack(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

    private func send(_ bytes: [UInt8], descriptors: [CInt] = []) throws {
        try bytes.withUnsafeBytes { try UnixSocket.send(socket.rawValue, $0, descriptors: descriptors) }
    }
}
