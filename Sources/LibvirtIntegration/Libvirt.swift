import CLibvirt
import Glibc

/// A libvirt call that failed, with libvirt's own message (virGetLastErrorMessage).
public struct LibvirtError: Error, CustomStringConvertible {
    public let operation: String
    public let message: String
    /// libvirt's virErrorNumber (VIR_ERR_NO_DOMAIN, ...).
    public let code: Int32

    init(_ operation: String) {
        self.operation = operation
        message = virGetLastErrorMessage().map { String(cString: $0) } ?? "unknown error"
        code = virGetLastError()?.pointee.code ?? 0
    }

    /// The domain is gone (undefined, or a transient domain that stopped).
    public var isNoDomain: Bool { code == Int32(VIR_ERR_NO_DOMAIN.rawValue) }

    public var description: String { "\(operation): \(message)" }
}

/// libvirt's default event loop (poll-based, one per process). It must be registered before the
/// first connection is opened; callbacks then run on the thread that calls `runOnce`.
public enum LibvirtEventLoop {
    private static let registered: Bool = {
        // libvirt prints every error to stderr by default; callers report errors themselves.
        virSetErrorFunc(nil) { _, _ in }
        return virEventRegisterDefaultImpl() == 0
    }()

    public static func register() throws(LibvirtError) {
        guard registered else { throw LibvirtError("virEventRegisterDefaultImpl") }
    }

    /// Waits for and dispatches one round of events (fd activity or a due timer).
    public static func runOnce() throws(LibvirtError) {
        guard virEventRunDefaultImpl() == 0 else { throw LibvirtError("virEventRunDefaultImpl") }
    }

    /// Calls `callback` in `runOnce` whenever `fd` is readable.
    public static func watchReadable(_ fd: Int32, _ callback: virEventHandleCallback) throws(LibvirtError) {
        guard virEventAddHandle(fd, Int32(VIR_EVENT_HANDLE_READABLE.rawValue), callback, nil, nil) >= 0 else {
            throw LibvirtError("virEventAddHandle")
        }
    }

    /// A repeating timer: `runOnce` returns at least every `milliseconds`.
    @discardableResult
    public static func addTick(milliseconds: Int32) -> Int32 {
        virEventAddTimeout(milliseconds, { _, _ in }, nil, nil)
    }
}

/// One connection to libvirtd (`qemu:///system` unless told), closed when released.
public final class LibvirtConnection {
    let raw: virConnectPtr
    public let uri: String
    private var callbackIDs: [Int32] = []
    private var closeCallback: virConnectCloseFunc?

    public init(uri: String) throws(LibvirtError) {
        guard let raw = virConnectOpen(uri) else { throw LibvirtError("virConnectOpen(\(uri))") }
        self.raw = raw
        self.uri = uri
    }

    deinit {
        for id in callbackIDs { _ = virConnectDomainEventDeregisterAny(raw, id) }
        if let closeCallback { _ = virConnectUnregisterCloseCallback(raw, closeCallback) }
        virConnectClose(raw)
    }

    /// Pings libvirtd every `interval` seconds through the event loop; after `count` unanswered
    /// pings the connection counts as closed (a libvirtd that hangs or vanishes is noticed).
    public func keepAlive(interval: Int32, count: UInt32) {
        _ = virConnectSetKeepAlive(raw, interval, count)
    }

    /// Every domain, running or only defined.
    public func allDomains() throws(LibvirtError) -> [LibvirtDomain] {
        var list: UnsafeMutablePointer<virDomainPtr?>?
        let n = virConnectListAllDomains(raw, &list, 0)
        guard n >= 0, let list else { throw LibvirtError("virConnectListAllDomains") }
        defer { free(list) }
        return (0..<Int(n)).compactMap { list[$0].map(LibvirtDomain.init(taking:)) }
    }

    public func domain(named name: String) throws(LibvirtError) -> LibvirtDomain {
        guard let raw = virDomainLookupByName(raw, name) else { throw LibvirtError("domain '\(name)'") }
        return LibvirtDomain(taking: raw)
    }

    /// Domain events, as C callbacks: `lifecycle` for defined/undefined/started/stopped/...,
    /// `deviceChange` for device hot-plug and unplug. Both run inside `LibvirtEventLoop.runOnce`.
    public func registerDomainEvents(
        lifecycle: virConnectDomainEventCallback,
        deviceChange: @escaping @convention(c) (virConnectPtr?, virDomainPtr?, UnsafePointer<CChar>?, UnsafeMutableRawPointer?) -> Void
    ) throws(LibvirtError) {
        let generic = unsafeBitCast(lifecycle, to: virConnectDomainEventGenericCallback.self)
        let id = virConnectDomainEventRegisterAny(raw, nil, Int32(VIR_DOMAIN_EVENT_ID_LIFECYCLE.rawValue), generic, nil, nil)
        guard id >= 0 else { throw LibvirtError("lifecycle events") }
        callbackIDs.append(id)
        let device = unsafeBitCast(deviceChange, to: virConnectDomainEventGenericCallback.self)
        for event in [VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED] {
            let id = virConnectDomainEventRegisterAny(raw, nil, Int32(event.rawValue), device, nil, nil)
            guard id >= 0 else { throw LibvirtError("device events") }
            callbackIDs.append(id)
        }
    }

    /// Called once when the connection drops (libvirtd restarted, keepalive timed out).
    public func onClose(_ callback: @escaping @convention(c) (virConnectPtr?, Int32, UnsafeMutableRawPointer?) -> Void) {
        if virConnectRegisterCloseCallback(raw, callback, nil, nil) == 0 { closeCallback = callback }
    }
}

/// A domain handle (virDomainPtr), released with the object.
public final class LibvirtDomain {
    let raw: virDomainPtr

    init(taking raw: virDomainPtr) { self.raw = raw }

    /// A handle of the caller's (an event callback's) domain, kept with a reference of its own.
    public convenience init(borrowing raw: virDomainPtr) {
        virDomainRef(raw)
        self.init(taking: raw)
    }

    deinit { virDomainFree(raw) }

    public var name: String { virDomainGetName(raw).map { String(cString: $0) } ?? "?" }
    public var isActive: Bool { virDomainIsActive(raw) == 1 }
    public var isPersistent: Bool { virDomainIsPersistent(raw) == 1 }

    /// The domain's XML: as it runs, or (`inactive`) as it is defined for its next start.
    public func xml(inactive: Bool = false) throws(LibvirtError) -> String {
        let flags = inactive ? UInt32(VIR_DOMAIN_XML_INACTIVE.rawValue) : 0
        guard let text = virDomainGetXMLDesc(raw, flags) else { throw LibvirtError("XML of domain '\(name)'") }
        defer { free(text) }
        return String(cString: text)
    }

    /// Hot-plugs a device into the running domain (and, with `persistent`, into its definition).
    public func attachDevice(_ xml: String, persistent: Bool) throws(LibvirtError) {
        var flags = UInt32(VIR_DOMAIN_AFFECT_LIVE.rawValue)
        if persistent { flags |= UInt32(VIR_DOMAIN_AFFECT_CONFIG.rawValue) }
        guard virDomainAttachDeviceFlags(raw, xml, flags) == 0 else { throw LibvirtError("attaching a device to '\(name)'") }
    }

    /// Asks the running domain (and, with `persistent`, its definition) to remove a device.
    public func detachDevice(_ xml: String, persistent: Bool) throws(LibvirtError) {
        var flags = UInt32(VIR_DOMAIN_AFFECT_LIVE.rawValue)
        if persistent { flags |= UInt32(VIR_DOMAIN_AFFECT_CONFIG.rawValue) }
        guard virDomainDetachDeviceFlags(raw, xml, flags) == 0 else { throw LibvirtError("detaching a device from '\(name)'") }
    }
}
