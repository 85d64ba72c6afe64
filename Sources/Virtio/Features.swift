/// Virtio feature bits (virtio 1.x; Linux `virtio_config.h`, `virtio_net.h`, `vhost.h`).
public struct VirtioFeatures: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    @inline(__always) static func bit(_ n: UInt64) -> VirtioFeatures { VirtioFeatures(rawValue: 1 << n) }

    public static let netCSUM = bit(0)
    public static let netGuestCSUM = bit(1)
    public static let netMTU = bit(3)
    public static let netMAC = bit(5)
    public static let netGuestTSO4 = bit(7)
    public static let netGuestTSO6 = bit(8)
    public static let netGuestECN = bit(9)
    public static let netGuestUFO = bit(10)
    public static let netHostTSO4 = bit(11)
    public static let netHostTSO6 = bit(12)
    public static let netHostECN = bit(13)
    public static let netHostUFO = bit(14)
    public static let netMergeableRxBuffers = bit(15)
    public static let netStatus = bit(16)
    public static let netControlVQ = bit(17)
    public static let netGuestAnnounce = bit(21)
    public static let netMQ = bit(22)
    public static let notifyOnEmpty = bit(24)
    public static let logAll = bit(26)
    public static let anyLayout = bit(27)
    public static let indirectDescriptors = bit(28)
    public static let eventIndex = bit(29)
    /// VHOST_USER_F_PROTOCOL_FEATURES.
    public static let protocolFeatures = bit(30)
    public static let version1 = bit(32)
    public static let accessPlatform = bit(33)
    public static let ringPacked = bit(34)
    public static let inOrder = bit(35)

    public var description: String { "0x" + String(rawValue, radix: 16) }

    /// Size of the virtio-net header for these negotiated features (12 with VERSION_1 or MRG_RXBUF, else 10).
    public var netHeaderLength: Int {
        contains(.version1) || contains(.netMergeableRxBuffers) ? 12 : 10
    }
}

/// The device status byte (virtio 1.x §2.1), as a vhost-user front-end mirrors it with
/// SET_STATUS / GET_STATUS.
public struct DeviceStatus: OptionSet, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let acknowledge = DeviceStatus(rawValue: 1)
    public static let driver = DeviceStatus(rawValue: 2)
    public static let driverOK = DeviceStatus(rawValue: 4)
    public static let featuresOK = DeviceStatus(rawValue: 8)
    public static let needsReset = DeviceStatus(rawValue: 64)
    public static let failed = DeviceStatus(rawValue: 128)

    public var description: String {
        let names: [(DeviceStatus, String)] = [(.acknowledge, "ACKNOWLEDGE"), (.driver, "DRIVER"), (.driverOK, "DRIVER_OK"),
                                                (.featuresOK, "FEATURES_OK"), (.needsReset, "NEEDS_RESET"), (.failed, "FAILED")]
        let set = names.filter { contains($0.0) }.map(\.1)
        return set.isEmpty ? "0 (reset)" : set.joined(separator: "|")
    }
}
