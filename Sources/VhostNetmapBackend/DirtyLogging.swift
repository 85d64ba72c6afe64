import VhostSystem
import VhostUser
import Virtio

// Live migration: the dirty log the front-end gives with SET_LOG_BASE. The rings log into it
// while LOG_ALL is negotiated (`refreshDatapath`); QEMU turns LOG_ALL on and off with
// SET_FEATURES around a migration, and sends SET_LOG_BASE again when guest memory changes.
extension VhostNetDevice {
    /// SET_LOG_BASE: maps the log, refusing one that is empty, outside its file, or too small
    /// for the guest memory mapped now.
    func setLogBase(_ region: LogRegion, _ descriptor: OwnedDescriptor) throws(Refusal) {
        guard protocolFeatures.contains(.logSHMFD) else { throw .notNegotiated(.logSHMFD) }
        let memoryEnd = memory.map { m in m.regions.map { $0.guestPhysicalAddress.value &+ $0.size }.max() ?? 0 }
        let log: DirtyLog
        do throws(DirtyLog.SetupError) {
            log = try DirtyLog(descriptor: descriptor.rawValue, size: region.size, offset: region.offset, memoryEnd: memoryEnd)
        } catch {
            throw .dirtyLog(error.description)
        }
        withDatapathPaused { dirtyLog = log }
        logger.info("dirty log of \(region.size) bytes (\(region.size &* 8) pages)\(features.contains(.logAll) ? ", logging" : "")")
    }

    /// What the statistics show of the log: its size and the pages this back-end dirtied.
    struct DirtyLogStatus: Codable, Sendable {
        var bytes: UInt64
        var logging: Bool
        var pagesMarked: Int
        var writesBeyondLog: Int
    }

    var dirtyLogStatus: DirtyLogStatus? {
        dirtyLog.map {
            DirtyLogStatus(bytes: $0.byteCount, logging: features.contains(.logAll), pagesMarked: $0.pagesMarked,
                           writesBeyondLog: $0.writesBeyondLog)
        }
    }
}
