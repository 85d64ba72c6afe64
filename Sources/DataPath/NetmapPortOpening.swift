import Netmap

// Kernel mode's netmap ports: a registration on /dev/netmap made into a switch port.

extension NetmapRegistration {
    /// The switch port on this registration, synced as the registration says (ioctls and polls
    /// of its descriptor, or a kernel loop and its eventfds).
    public func makePort() throws -> NetmapKernelPort {
        let (sync, pollDescriptor) = try makeSync()
        return try NetmapKernelPort(name: name.text, region: region, headerLength: headerLength, sync: sync, pollDescriptor: pollDescriptor)
    }
}

/// A netmap port opened for the daemon's kernel mode.
public struct OpenedNetmapPort {
    public let name: NetmapPortName
    public let port: NetmapKernelPort
    public let memoryID: UInt16
    public let sync: NetmapSyncMode
    /// The kernel loop syncing the port (kloop mode), for its state.
    public let kernelLoop: KernelLoop?
    /// What keeps the binding alive (the registration: descriptor, mapping, kernel loop).
    public let owner: AnyObject

    /// The virtio-net header length the port's frames carry (0, 10 or 12), as registered.
    public var headerLength: Int { port.headerLength }

    public init(name: NetmapPortName, port: NetmapKernelPort, memoryID: UInt16, sync: NetmapSyncMode = .ioctl,
                kernelLoop: KernelLoop? = nil, owner: AnyObject) {
        self.name = name
        self.port = port
        self.memoryID = memoryID
        self.sync = sync
        self.kernelLoop = kernelLoop
        self.owner = owner
    }
}

/// How kernel mode opens netmap ports: through /dev/netmap (`KernelPortOpener`), or, in tests,
/// through a model of the kernel.
public protocol NetmapPortOpening: Sendable {
    func open(_ name: NetmapPortName, sync: NetmapSyncMode) throws -> OpenedNetmapPort
}

public struct KernelPortOpener: NetmapPortOpening {
    public init() {}
    public func open(_ name: NetmapPortName, sync: NetmapSyncMode) throws -> OpenedNetmapPort {
        let registration = try NetmapRegistration(name, sync: sync)
        return OpenedNetmapPort(name: name, port: try registration.makePort(),
                                memoryID: registration.memoryID, sync: sync, kernelLoop: registration.kernelLoop, owner: registration)
    }
}
