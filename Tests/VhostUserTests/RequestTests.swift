import Testing
import VhostSystem
@testable import VhostUser

/// The per-request rule table and the typed decoding built on it.
@Suite struct RequestRules {
    @Test func theTableSaysWhatTakesDescriptorsRepliesAndPauses() {
        #expect(VhostUserRequest.setVringKick.rule.descriptors == .oneUnlessFlagged)
        #expect(VhostUserRequest.setMemTable.rule.descriptors == .perRegion && VhostUserRequest.setMemTable.rule.payload == .memoryTable)
        for r: VhostUserRequest in [.getFeatures, .getProtocolFeatures, .getQueueNum, .getVringBase] {
            #expect(r.rule.replies, "\(r) always answers")
        }
        for r: VhostUserRequest in [.setFeatures, .setMemTable, .setVringAddr, .setVringKick, .setVringCall, .setVringErr,
                                    .setVringEnable, .getVringBase, .sendRARP, .resetOwner] {
            #expect(r.rule.pausesDataPath, "\(r) changes what the worker reads")
        }
        for r: VhostUserRequest in [.getFeatures, .setOwner, .setVringNum, .setVringBase, .setProtocolFeatures, .netSetMTU] {
            #expect(!r.rule.pausesDataPath, "\(r) leaves the data path alone")
        }
        #expect(VhostUserRequest.setLogBase.rule == RequestRule(payload: .exact(16), descriptors: .one, replies: true, pausesDataPath: true))
        #expect(VhostUserRequest.getConfig.rule.payload == .config && VhostUserRequest.iotlbMessage.rule.payload == .unchecked,
                "unimplemented: the device refuses it")
    }

    @Test func decodingTakesPayloadsAndDescriptors() throws {
        let fd = try EventFD.make()
        guard case .setVringCall(let p, let d) = try DeviceRequest(message(.setVringCall, u64(1), fds: [fd])) else { Issue.record("not SET_VRING_CALL"); return }
        #expect(p.index == 1 && !p.noDescriptor && d === fd)
        guard case .setVringKick(let q, let none) = try DeviceRequest(message(.setVringKick, u64(0x100))) else { Issue.record("not SET_VRING_KICK"); return }
        #expect(q.noDescriptor && none == nil, "the 0x100 flag: polled, no descriptor")
        guard case .setVringNum(let s) = try DeviceRequest(message(.setVringNum, VringState(index: 1, num: 256).encoded())) else { Issue.record("not SET_VRING_NUM"); return }
        #expect(s == VringState(index: 1, num: 256))
        guard case .setLogBase(let region, let log) = try DeviceRequest(message(.setLogBase, LogRegion(size: 4096, offset: 8).encoded(), fds: [fd])) else {
            Issue.record("not SET_LOG_BASE"); return
        }
        #expect(region == LogRegion(size: 4096, offset: 8) && log === fd)
        guard case .unsupported(.iotlbMessage) = try DeviceRequest(message(.iotlbMessage, [UInt8](repeating: 0, count: 64))) else { Issue.record("not unsupported"); return }
    }

    @Test func framingRefusalsNameTheirRule() throws {
        #expect(throws: ProtocolError.refused(.setVringErr, .reservedBits(0x300))) { try DeviceRequest(message(.setVringErr, u64(0x300))) }
        var nine = u64(9)
        nine += [UInt8](repeating: 0, count: 9 * 32)
        #expect(throws: ProtocolError.refused(.setMemTable, .regionCount(9, max: 8))) { try DeviceRequest(message(.setMemTable, nine)) }
    }
}
