import Logging
import VhostSystem
import VhostUser
import Virtio

// INFLIGHT_SHMFD: the buffer in which rings record the chains they have taken and not used, kept
// by the front-end across back-end restarts (GET_INFLIGHT_FD hands it out, SET_INFLIGHT_FD back).
extension VhostNetDevice {
    struct InflightStatus: Codable, Sendable {
        var queues: Int
        var queueSize: Int
        /// Rings recording in the buffer now.
        var trackingRings: [Int]
    }

    var inflightStatus: InflightStatus? {
        inflight.map { r in
            InflightStatus(queues: r.queueCount, queueSize: r.queueSize, trackingRings: port.queues.filter(\.tracksInflight).map(\.index))
        }
    }

    /// GET_INFLIGHT_FD: a new buffer for the queues the front-end names (at most this device's).
    func getInflightBuffer(_ wanted: InflightBufferDescription) throws(Refusal) -> Response {
        guard protocolFeatures.contains(.inflightSHMFD) else { throw .notNegotiated(.inflightSHMFD) }
        let made: (InflightRegion, OwnedDescriptor, UInt64)
        do {
            made = try InflightRegion.allocate(queueCount: Int(wanted.queueCount), queueSize: Int(wanted.queueSize), maxQueues: vrings.count)
        } catch {
            throw .inflight(error.description)
        }
        let (region, descriptor, size) = made
        inflight = region  // the worker never reads it: a ring takes its region when it starts
        logger.info("inflight buffer for \(wanted.queueCount) queue(s) of \(wanted.queueSize), \(size) bytes")
        let reply = InflightBufferDescription(mmapSize: size, mmapOffset: 0, queueCount: wanted.queueCount, queueSize: wanted.queueSize)
        return .replyWithDescriptor(reply.encoded(), descriptor)
    }

    /// SET_INFLIGHT_FD: the buffer a front-end kept, checked against its file before it is mapped.
    func setInflightBuffer(_ given: InflightBufferDescription, _ descriptor: OwnedDescriptor) throws(Refusal) {
        guard protocolFeatures.contains(.inflightSHMFD) else { throw .notNegotiated(.inflightSHMFD) }
        let region: InflightRegion
        do {
            region = try InflightRegion(descriptor: descriptor.rawValue, mmapSize: given.mmapSize, mmapOffset: given.mmapOffset,
                                        queueCount: Int(given.queueCount), queueSize: Int(given.queueSize), maxQueues: vrings.count)
        } catch {
            throw .inflight(error.description)
        }
        inflight = region
        logger.info("inflight buffer set: \(given.queueCount) queue(s) of \(given.queueSize)")
    }

    /// A starting ring takes its region and its position from it (datapath paused).
    func startInflightTracking(_ index: Int) {
        assertPaused()
        guard let region = inflight else { return }
        let q = port.queues[index]
        guard q.isAttached else { return }
        guard let view = region.queue(index, ringSize: q.size) else {
            logger.warning("ring \(index) (size \(q.size)) is not covered by the inflight buffer (\(region.queueCount) queue(s) of \(region.queueSize)): it runs untracked")
            return
        }
        let base = q.lastAvailIndex
        let recovery = q.startInflightTracking(view, region: region)
        switch recovery {
        case .fresh:
            logger.debug("ring \(index): \(recovery)")
        case .reinitialised:
            logger.warning("ring \(index): \(recovery)")
        case .splitResumed(let used, let n, let agrees, _):
            let level: Logger.Level = used != base || n > 0 || !agrees ? .notice : .info
            logger.log(level: level, "ring \(index): base \(base) from the front-end; \(recovery)")
        case .packedResumed(let position, _, _):
            let level: Logger.Level = position.encoded != base ? .notice : .info
            logger.log(level: level, "ring \(index): base \(PackedPosition(base)) from the front-end; \(recovery)")
        }
    }
}
