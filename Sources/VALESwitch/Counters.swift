/// Per-port counters, from the switch's point of view: "in" is what the port sent into the
/// switch (its guest's TX), "out" what the switch delivered to it (its guest's RX).
/// Each lane of the switch keeps its own, written only by its worker; read (summed) under the
/// switch lock.
public struct PortCounters: Sendable, Equatable, Codable {
    public var inPackets: UInt64 = 0
    public var inBytes: UInt64 = 0
    public var outPackets: UInt64 = 0
    public var outBytes: UInt64 = 0
    /// Frames shorter than an Ethernet header (14 bytes), from this port.
    public var dropShort: UInt64 = 0
    /// Malformed descriptor chains of this port, transmit or receive (completed with length 0).
    public var dropBadDescriptor: UInt64 = 0
    /// Frames for this port dropped because it had no room (ring full, buffers too small).
    public var dropNoRoom: UInt64 = 0
    /// Frames for this port dropped because it had no running receive queue.
    public var dropNotReady: UInt64 = 0
    /// Frames for this port dropped because they need an offload it did not negotiate.
    public var dropOffload: UInt64 = 0
    /// Frames from this port addressed to a MAC learned on this same port.
    public var dropSamePort: UInt64 = 0

    public init() {}
}

extension PortCounters {
    /// Adds `other`'s counts (the switch sums its lanes').
    mutating func add(_ other: PortCounters) {
        inPackets &+= other.inPackets
        inBytes &+= other.inBytes
        outPackets &+= other.outPackets
        outBytes &+= other.outBytes
        dropShort &+= other.dropShort
        dropBadDescriptor &+= other.dropBadDescriptor
        dropNoRoom &+= other.dropNoRoom
        dropNotReady &+= other.dropNotReady
        dropOffload &+= other.dropOffload
        dropSamePort &+= other.dropSamePort
    }
}
