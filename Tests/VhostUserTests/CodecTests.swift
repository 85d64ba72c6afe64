import Glibc
import Testing
import TestSupport
import VhostSystem
@testable import VhostUser

func message(_ request: VhostUserRequest, _ payload: [UInt8] = [], fds: [OwnedDescriptor] = [], flags: UInt32 = 1) -> VhostUserMessage {
    VhostUserMessage(header: MessageHeader(request: request.rawValue, flags: flags, size: UInt32(payload.count)),
                     request: request, payload: payload, descriptors: fds)
}

func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

@Suite struct HeaderAndPayloads {
    @Test func headerRoundTrip() {
        let h = MessageHeader(request: 5, flags: 0x9, size: 264)
        let bytes = h.encoded()
        #expect(bytes.count == 12)
        #expect(bytes == [5, 0, 0, 0, 9, 0, 0, 0, 8, 1, 0, 0])
        #expect(bytes.withUnsafeBytes { MessageHeader($0) } == h)
        #expect(h.needsReply)
    }

    @Test func replyHasExactlyReplyAndVersionFlags() {
        let r = MessageReader.reply(to: 11, payload: VringState(index: 1, num: 77).encoded())
        #expect(r.count == 20)
        let h = r.withUnsafeBytes { MessageHeader($0) }
        #expect(h.flags == 0x5)
        #expect(h.request == 11)
        #expect(h.size == 8)
    }

    @Test func vringAddressRoundTrip() {
        let a = VringAddress(index: 3, flags: 1, descriptorTable: 0x1000, usedRing: 0x3000, availRing: 0x2000, log: 0x4000)
        let bytes = a.encoded()
        #expect(bytes.count == VringAddress.byteCount)
        #expect(bytes.withUnsafeBytes { VringAddress($0) } == a)
    }

    @Test func memoryTableRoundTrip() {
        let t = MemoryTable(regions: [
            MemoryRegionDescription(guestPhysicalAddress: 0, size: 0x10000, userAddress: 0x7f00_0000_0000, mmapOffset: 0),
            MemoryRegionDescription(guestPhysicalAddress: 0x1_0000_0000, size: 0x20000, userAddress: 0x7f10_0000_0000, mmapOffset: 0x1000),
        ])
        let bytes = t.encoded()
        #expect(bytes.count == 8 + 64)
        #expect(bytes.withUnsafeBytes { MemoryTable($0) } == t)
    }

    @Test func kickPayloadMasks() {
        #expect(VringDescriptorPayload(0x105) == VringDescriptorPayload(0x105))
        let p = VringDescriptorPayload(0x105)!
        #expect(p.index == 5 && p.noDescriptor)
        #expect(VringDescriptorPayload(0x1ff)!.index == 0xff)
        #expect(VringDescriptorPayload(0x200) == nil)
        #expect(VringDescriptorPayload(1 << 40) == nil)
    }
}

@Suite struct Framing {
    @Test func headerChecks() throws {
        #expect(throws: ProtocolError.badVersion(flags: 0)) { try MessageFraming.validateHeader(MessageHeader(request: 1, flags: 0, size: 0)) }
        #expect(throws: ProtocolError.badVersion(flags: 2)) { try MessageFraming.validateHeader(MessageHeader(request: 1, flags: 2, size: 0)) }
        #expect(throws: ProtocolError.replyFlagFromFrontEnd) { try MessageFraming.validateHeader(MessageHeader(request: 1, flags: 5, size: 0)) }
        #expect(throws: ProtocolError.unknownRequest(0)) { try MessageFraming.validateHeader(MessageHeader(request: 0, flags: 1, size: 0)) }
        #expect(throws: ProtocolError.unknownRequest(999)) { try MessageFraming.validateHeader(MessageHeader(request: 999, flags: 1, size: 0)) }
        #expect(throws: ProtocolError.self) { try MessageFraming.validateHeader(MessageHeader(request: 5, flags: 1, size: 269)) }
        #expect(throws: ProtocolError.self) { try MessageFraming.validateHeader(MessageHeader(request: 5, flags: 1, size: .max)) }
        #expect(try MessageFraming.validateHeader(MessageHeader(request: 5, flags: 9, size: 268)) == .setMemTable)
    }

    @Test func exactSizes() throws {
        try MessageFraming.validate(message(.getFeatures))
        try MessageFraming.validate(message(.setFeatures, u64(1)))
        #expect(throws: ProtocolError.self) { try MessageFraming.validate(message(.getFeatures, [0])) }
        #expect(throws: ProtocolError.self) { try MessageFraming.validate(message(.setFeatures, [1, 2, 3, 4])) }
        #expect(throws: ProtocolError.self) { try MessageFraming.validate(message(.setFeatures, u64(1) + [0])) }
        #expect(throws: ProtocolError.self) { try MessageFraming.validate(message(.setVringNum, [0, 0, 0, 0])) }
        #expect(throws: ProtocolError.self) { try MessageFraming.validate(message(.setVringAddr, [UInt8](repeating: 0, count: 39))) }
        try MessageFraming.validate(message(.setVringAddr, [UInt8](repeating: 0, count: 40)))
    }

    @Test func descriptorCounts() throws {
        let fd = try EventFD.make()
        try MessageFraming.validate(message(.setVringKick, u64(0), fds: [fd]))
        try MessageFraming.validate(message(.setVringKick, u64(0x100)))
        #expect(throws: ProtocolError.badDescriptorCount(.setVringKick, got: 0, expected: 1)) {
            try MessageFraming.validate(message(.setVringKick, u64(0)))
        }
        #expect(throws: ProtocolError.badDescriptorCount(.setVringCall, got: 1, expected: 0)) {
            try MessageFraming.validate(message(.setVringCall, u64(0x100), fds: [fd]))
        }
        #expect(throws: ProtocolError.badDescriptorCount(.getFeatures, got: 1, expected: 0)) {
            try MessageFraming.validate(message(.getFeatures, fds: [fd]))
        }
        #expect(throws: ProtocolError.self) { try MessageFraming.validate(message(.setVringErr, u64(0x300), fds: [fd])) }
    }

    @Test func memoryTableCounts() throws {
        let fd = try EventFD.make()
        let one = MemoryTable(regions: [MemoryRegionDescription(guestPhysicalAddress: 0, size: 4096, userAddress: 0, mmapOffset: 0)]).encoded()
        try MessageFraming.validate(message(.setMemTable, one, fds: [fd]))
        #expect(throws: ProtocolError.self) { try MessageFraming.validate(message(.setMemTable, one)) }
        #expect(throws: ProtocolError.self) { try MessageFraming.validate(message(.setMemTable, one, fds: [fd, fd])) }
        var zero = one
        zero[0] = 0
        #expect(throws: ProtocolError.self) { try MessageFraming.validate(message(.setMemTable, zero, fds: [fd])) }
        var nine = one
        nine[0] = 9
        #expect(throws: ProtocolError.self) { try MessageFraming.validate(message(.setMemTable, nine, fds: [fd])) }
        var lying = one
        lying[0] = 2 // claims two regions, carries one
        #expect(throws: ProtocolError.self) { try MessageFraming.validate(message(.setMemTable, lying, fds: [fd, fd])) }
    }

    /// Thousands of random headers and payloads: every one is either accepted with a consistent
    /// request or refused with an error; nothing traps.
    @Test(arguments: [1, 2, 3] as [UInt64])
    func randomisedMessages(seed: UInt64) throws {
        var rng = SeededRandom(seed: seed)
        let fd = try EventFD.make()
        var accepted = 0
        var refused = 0
        for _ in 0..<5000 {
            let request = UInt32.random(in: 0...50, using: &rng)
            let flags: UInt32 = Bool.random(using: &rng) ? 1 : UInt32.random(in: 0...15, using: &rng)
            let size = Int.random(in: 0...300, using: &rng)
            let h = MessageHeader(request: request, flags: flags, size: UInt32(size))
            guard let r = try? MessageFraming.validateHeader(h) else { refused += 1; continue }
            #expect(r.rawValue == request)
            let payload = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let fds = (0..<Int.random(in: 0...2, using: &rng)).map { _ in fd }
            let m = VhostUserMessage(header: h, request: r, payload: payload, descriptors: fds)
            if (try? MessageFraming.validate(m)) != nil { accepted += 1 } else { refused += 1 }
        }
        #expect(accepted > 0 && refused > 0)
    }
}

@Suite struct Reader {
    @Test func reassemblesSplitMessagesAndKeepsDescriptors() throws {
        let (a, b) = try UnixSocket.pair()
        try Posix.setNonBlocking(b.rawValue)
        let reader = MessageReader()
        let kick = try EventFD.make()
        let bytes = MessageHeader(request: 12, flags: 1, size: 8).encoded() + u64(3)
        // Header (with the descriptor) first, payload later: the reader waits in between.
        try bytes[0..<12].withUnsafeBytes { try UnixSocket.send(a.rawValue, $0, descriptors: [kick.rawValue]) }
        guard case .wouldBlock = try reader.read(from: b.rawValue) else { Issue.record("expected wouldBlock"); return }
        try bytes[12...].withUnsafeBytes { try UnixSocket.send(a.rawValue, $0) }
        guard case .message(let m) = try reader.read(from: b.rawValue) else { Issue.record("expected a message"); return }
        #expect(m.request == .setVringKick)
        #expect(m.payload == u64(3))
        #expect(m.descriptors.count == 1)
        // The received descriptor is the same eventfd.
        EventFD.signal(m.descriptors[0].rawValue)
        #expect(EventFD.drain(kick.rawValue) == 1)
    }

    @Test func twoMessagesInOneWriteAreSeparated() throws {
        let (a, b) = try UnixSocket.pair()
        try Posix.setNonBlocking(b.rawValue)
        let reader = MessageReader()
        let bytes = MessageHeader(request: 1, flags: 1, size: 0).encoded() + MessageHeader(request: 2, flags: 1, size: 8).encoded() + u64(7)
        try bytes.withUnsafeBytes { try UnixSocket.send(a.rawValue, $0) }
        guard case .message(let m1) = try reader.read(from: b.rawValue), case .message(let m2) = try reader.read(from: b.rawValue) else {
            Issue.record("expected two messages"); return
        }
        #expect(m1.request == .getFeatures && m1.payload.isEmpty)
        #expect(m2.request == .setFeatures && m2.payload == u64(7))
    }

    @Test func oversizedOrBadHeaderIsAFramingError() throws {
        for header in [MessageHeader(request: 5, flags: 1, size: 100_000), MessageHeader(request: 1, flags: 3, size: 0),
                       MessageHeader(request: 77, flags: 1, size: 0)] {
            let (a, b) = try UnixSocket.pair()
            try Posix.setNonBlocking(b.rawValue)
            try header.encoded().withUnsafeBytes { try UnixSocket.send(a.rawValue, $0) }
            #expect(throws: ProtocolError.self) { _ = try MessageReader().read(from: b.rawValue) }
        }
    }

    @Test func tooManyDescriptorsIsAFramingError() throws {
        let (a, b) = try UnixSocket.pair()
        try Posix.setNonBlocking(b.rawValue)
        let fds = try (0..<12).map { _ in try EventFD.make() }
        try MessageHeader(request: 1, flags: 1, size: 0).encoded().withUnsafeBytes {
            try UnixSocket.send(a.rawValue, $0, descriptors: fds.map { $0.rawValue })
        }
        #expect(throws: ProtocolError.self) { _ = try MessageReader().read(from: b.rawValue) }
    }

    @Test func peerCloseIsReported() throws {
        var (a, b): (OwnedDescriptor?, OwnedDescriptor) = try UnixSocket.pair()
        try Posix.setNonBlocking(b.rawValue)
        #expect(a != nil)
        a = nil // closes our end of the pair
        guard case .closed = try MessageReader().read(from: b.rawValue) else { Issue.record("expected closed"); return }
    }
}
