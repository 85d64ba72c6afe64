internal import CNetmap
import Glibc
import SystemPackage
import VhostSystem

/// /dev/netmap and its control requests (NIOCCTRL with an `nmreq_header`, API 14). Every call
/// opens its own descriptor unless it is a registration, which keeps it (a binding lives as long
/// as its descriptor).
public enum NetmapControl {
    public static let devicePath = "/dev/netmap"
    public static let apiVersion = Int(VNM_API)

    public struct Failure: Error, CustomStringConvertible, Equatable {
        public let request: String
        public let errno: Errno
        public var description: String { "netmap \(request): \(errno)" }
    }

    /// Opens /dev/netmap.
    public static func open() throws(Failure) -> OwnedDescriptor {
        let fd = Glibc.open(devicePath, O_RDWR | O_CLOEXEC)
        if fd < 0 { throw Failure(request: "open \(devicePath)", errno: Errno(rawValue: errno)) }
        return OwnedDescriptor(adopting: fd)
    }

    /// Sends one request; `body` is the request's body structure (or nil), `options` the head of
    /// an option list (or 0).
    /// A request header for API 14: version, type, name (NUL-terminated, at most 63 bytes).
    static func header(_ type: Int32, name: String) -> vnm_req_header {
        var header = vnm_req_header()
        header.nr_version = UInt16(VNM_API)
        header.nr_reqtype = UInt16(type)
        withUnsafeMutableBytes(of: &header.nr_name) { raw in
            raw.initializeMemory(as: UInt8.self, repeating: 0)
            raw.copyBytes(from: Array(name.utf8.prefix(raw.count - 1)))
        }
        return header
    }

    static func request<Body>(_ fd: CInt, _ type: Int32, name: String, body: inout Body, options: UInt64 = 0, what: String) throws(Failure) {
        var header = header(type, name: name)
        header.nr_options = options
        let rc = withUnsafeMutablePointer(to: &body) { p in
            header.nr_body = UInt64(UInt(bitPattern: p))
            return vnm_ctrl(fd, &header)
        }
        if rc < 0 { throw Failure(request: "\(what) \(name)", errno: Errno(rawValue: -rc)) }
    }

    static func requestWithoutBody(_ fd: CInt, _ type: Int32, name: String, what: String) throws(Failure) {
        var header = header(type, name: name)
        let rc = vnm_ctrl(fd, &header)
        if rc < 0 { throw Failure(request: "\(what) \(name)", errno: Errno(rawValue: -rc)) }
    }

    // MARK: Information

    public struct PortInfo: Equatable, Sendable, Codable {
        public var memorySize: UInt64
        public var txSlots: UInt32, rxSlots: UInt32
        public var txRings: UInt16, rxRings: UInt16, hostTXRings: UInt16, hostRXRings: UInt16
        public var memoryID: UInt16
    }

    /// PORT_INFO_GET. An empty name asks only for the memory of allocator `memoryID` (1 = global).
    public static func portInfo(_ name: String, memoryID: UInt16 = 0) throws(Failure) -> PortInfo {
        let fd = try open()
        var body = vnm_req_port_info_get()
        body.nr_mem_id = memoryID
        try request(fd.rawValue, Int32(VNM_REQ_PORT_INFO_GET), name: name, body: &body, what: "PORT_INFO_GET")
        return PortInfo(memorySize: body.nr_memsize, txSlots: body.nr_tx_slots, rxSlots: body.nr_rx_slots,
                        txRings: body.nr_tx_rings, rxRings: body.nr_rx_rings, hostTXRings: body.nr_host_tx_rings,
                        hostRXRings: body.nr_host_rx_rings, memoryID: body.nr_mem_id)
    }

    public struct PoolsInfo: Equatable, Sendable, Codable {
        public var memorySize: UInt64
        public var memoryID: UInt16
        public var interfaces: (total: UInt32, size: UInt32)
        public var rings: (total: UInt32, size: UInt32)
        public var buffers: (total: UInt32, size: UInt32)
        public static func == (a: PoolsInfo, b: PoolsInfo) -> Bool {
            a.memorySize == b.memorySize && a.memoryID == b.memoryID && a.interfaces == b.interfaces && a.rings == b.rings && a.buffers == b.buffers
        }
        enum CodingKeys: String, CodingKey { case memorySize, memoryID, interfaces, interfaceSize, rings, ringSize, buffers, bufferSize }
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(memorySize, forKey: .memorySize); try c.encode(memoryID, forKey: .memoryID)
            try c.encode(interfaces.total, forKey: .interfaces); try c.encode(interfaces.size, forKey: .interfaceSize)
            try c.encode(rings.total, forKey: .rings); try c.encode(rings.size, forKey: .ringSize)
            try c.encode(buffers.total, forKey: .buffers); try c.encode(buffers.size, forKey: .bufferSize)
        }
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            memorySize = try c.decode(UInt64.self, forKey: .memorySize); memoryID = try c.decode(UInt16.self, forKey: .memoryID)
            interfaces = (try c.decode(UInt32.self, forKey: .interfaces), try c.decode(UInt32.self, forKey: .interfaceSize))
            rings = (try c.decode(UInt32.self, forKey: .rings), try c.decode(UInt32.self, forKey: .ringSize))
            buffers = (try c.decode(UInt32.self, forKey: .buffers), try c.decode(UInt32.self, forKey: .bufferSize))
        }
        init(_ b: vnm_req_pools_info) {
            memorySize = b.nr_memsize; memoryID = b.nr_mem_id
            interfaces = (b.nr_if_pool_objtotal, b.nr_if_pool_objsize)
            rings = (b.nr_ring_pool_objtotal, b.nr_ring_pool_objsize)
            buffers = (b.nr_buf_pool_objtotal, b.nr_buf_pool_objsize)
        }
    }

    /// POOLS_INFO_GET for the allocator of port `name`. The module looks the port up as a
    /// registration would (an absent VALE port is created for the request and released after
    /// it, on allocator `memoryID` when that is not 0); an empty name is refused by the module
    /// (ENXIO), so it is refused here.
    public static func poolsInfo(_ name: String, memoryID: UInt16 = 0) throws(Failure) -> PoolsInfo {
        guard !name.isEmpty else { throw Failure(request: "POOLS_INFO_GET (needs a port name)", errno: .noSuchAddressOrDevice) }
        let fd = try open()
        var body = vnm_req_pools_info()
        body.nr_mem_id = memoryID
        try request(fd.rawValue, Int32(VNM_REQ_POOLS_INFO_GET), name: name, body: &body, what: "POOLS_INFO_GET")
        return PoolsInfo(body)
    }

    /// The pools of the global allocator (memory id 1), through a VALE port that exists only for
    /// the request.
    public static func globalPoolsInfo() throws(Failure) -> PoolsInfo {
        try poolsInfo("valevnprobe:p\(getpid())", memoryID: 1)
    }

    /// PORT_HDR_GET: the virtio-net header length of a port.
    public static func headerLength(_ name: String) throws(Failure) -> Int {
        let fd = try open()
        var body = vnm_req_port_hdr()
        try request(fd.rawValue, Int32(VNM_REQ_PORT_HDR_GET), name: name, body: &body, what: "PORT_HDR_GET")
        return Int(body.nr_hdr_len)
    }

    /// PORT_HDR_SET on a VALE port (0, 10 or 12; other ports answer ENXIO).
    public static func setHeaderLength(_ name: String, _ length: Int, on fd: CInt? = nil) throws(Failure) {
        let own = fd == nil ? try open() : nil
        var body = vnm_req_port_hdr()
        body.nr_hdr_len = UInt32(length)
        try request(fd ?? own!.rawValue, Int32(VNM_REQ_PORT_HDR_SET), name: name, body: &body, what: "PORT_HDR_SET")
    }

    // MARK: VALE management (what vale-ctl does)

    public struct ListedPort: Equatable, Sendable, Codable {
        public var name: String
        public var bridge: Int
        public var port: Int
    }

    /// VALE_LIST over every switch and port (the kernel hands back one port per call and the
    /// indices of the next).
    public static func listVALE(_ name: String = "") throws(Failure) -> [ListedPort] {
        let fd = try open()
        var out: [ListedPort] = []
        var body = vnm_req_vale_list()
        for _ in 0..<(8 * 256) {
            // The kernel writes the port's name back into the header: a fresh one each time.
            var header = header(Int32(VNM_REQ_VALE_LIST), name: name)
            let rc = withUnsafeMutablePointer(to: &body) { p in
                header.nr_body = UInt64(UInt(bitPattern: p))
                return vnm_ctrl(fd.rawValue, &header)
            }
            if rc == -ENOENT { break }
            if rc < 0 { throw Failure(request: "VALE_LIST", errno: Errno(rawValue: -rc)) }
            let portName = withUnsafeBytes(of: header.nr_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            out.append(ListedPort(name: portName, bridge: Int(body.nr_bridge_idx), port: Int(body.nr_port_idx)))
            if !name.isEmpty { break }
            body.nr_port_idx += 1
        }
        return out
    }

    /// VALE_ATTACH `valeX:ifname` (a NIC, or a persistent port); `hostRings` also attaches the
    /// host stack (vale-ctl -h).
    public static func attach(_ name: String, hostRings: Bool) throws(Failure) -> Int {
        let fd = try open()
        var body = vnm_req_vale_attach()
        body.reg.nr_mode = UInt32(hostRings ? VNM_REG_NIC_SW : VNM_REG_ALL_NIC)
        try request(fd.rawValue, Int32(VNM_REQ_VALE_ATTACH), name: name, body: &body, what: "VALE_ATTACH")
        return Int(body.port_index)
    }

    public static func detach(_ name: String) throws(Failure) {
        let fd = try open()
        var body = vnm_req_vale_detach()
        try request(fd.rawValue, Int32(VNM_REQ_VALE_DETACH), name: name, body: &body, what: "VALE_DETACH")
    }

    /// VALE_NEWIF: a persistent VALE port that is also a netdev (vale-ctl -n).
    public static func newInterface(_ name: String, txSlots: UInt32 = 0, rxSlots: UInt32 = 0, rings: UInt16 = 0) throws(Failure) {
        let fd = try open()
        var body = vnm_req_vale_newif()
        body.nr_tx_slots = txSlots; body.nr_rx_slots = rxSlots
        body.nr_tx_rings = rings; body.nr_rx_rings = rings
        try request(fd.rawValue, Int32(VNM_REQ_VALE_NEWIF), name: name, body: &body, what: "VALE_NEWIF")
    }

    /// VALE_DELIF (vale-ctl -r); EBUSY while the port is in use.
    public static func deleteInterface(_ name: String) throws(Failure) {
        let fd = try open()
        try requestWithoutBody(fd.rawValue, Int32(VNM_REQ_VALE_DELIF), name: name, what: "VALE_DELIF")
    }

    /// VALE_POLLING_ENABLE / DISABLE on an attached NIC (vale-ctl -p / -P).
    public static func setPolling(_ name: String, enabled: Bool, firstCPU: UInt32 = 0, cpus: UInt32 = 1) throws(Failure) {
        let fd = try open()
        var body = vnm_req_vale_polling()
        body.nr_mode = UInt32(cpus > 1 ? VNM_POLLING_MODE_MULTI_CPU : VNM_POLLING_MODE_SINGLE_CPU)
        body.nr_first_cpu_id = firstCPU
        body.nr_num_polling_cpus = cpus
        try request(fd.rawValue, Int32(enabled ? VNM_REQ_VALE_POLLING_ENABLE : VNM_REQ_VALE_POLLING_DISABLE),
                    name: name, body: &body, what: enabled ? "VALE_POLLING_ENABLE" : "VALE_POLLING_DISABLE")
    }
}

/// A port registered on /dev/netmap and mapped: the binding, its memory, and what the kernel
/// reported. Closing the descriptor (releasing this) unregisters it.
public final class NetmapRegistration: @unchecked Sendable {
    public let name: NetmapPortName
    public let descriptor: OwnedDescriptor
    public let mapping: MemoryMapping
    public let region: NetmapRegion
    public let headerLength: Int
    public let memoryID: UInt16

    /// How the rings are synced (`makeSync`).
    public let syncMode: NetmapSyncMode
    /// The kernel loop, once `makeSync` started it (kloop mode); stopped before the descriptor
    /// closes.
    public private(set) var kernelLoop: KernelLoop?

    /// REGISTER `name` with its mode and flags (ACCEPT_VNET_HDR always, NO_TX_POLL: we sync TX
    /// ourselves; EXCLUSIVE for the kernel loop, whose CSB mode requires it), set a
    /// `wantedHeader`-byte virtio-net header on VALE ports (falling back to none where the port
    /// refuses it), and map the memory.
    public init(_ name: NetmapPortName, wantedHeader: Int = 12, sync: NetmapSyncMode = .ioctl) throws(NetmapControl.Failure) {
        self.name = name
        syncMode = sync
        let fd = try NetmapControl.open()
        var header = 0
        if name.isVALE && wantedHeader > 0 {
            // Before REGISTER the ephemeral port does not exist; set the header after it.
            header = wantedHeader
        }
        var body = vnm_req_register()
        let (mode, ringID) = name.mode.registerMode
        body.nr_mode = mode
        body.nr_ringid = ringID
        body.nr_flags = name.flags.rawValue | VNM_NR_ACCEPT_VNET_HDR | VNM_NR_NO_TX_POLL | (sync == .kloop ? VNM_NR_EXCLUSIVE : 0)
        body.nr_mem_id = UInt16(name.memoryID ?? 0)
        if let r = name.configuration.txRings { body.nr_tx_rings = UInt16(r) }
        if let r = name.configuration.rxRings { body.nr_rx_rings = UInt16(r) }
        if let r = name.configuration.hostRings { body.nr_host_tx_rings = UInt16(r); body.nr_host_rx_rings = UInt16(r) }
        if let s = name.configuration.txSlots { body.nr_tx_slots = UInt32(s) }
        if let s = name.configuration.rxSlots { body.nr_rx_slots = UInt32(s) }
        try NetmapControl.request(fd.rawValue, Int32(VNM_REQ_REGISTER), name: name.kernelName, body: &body, what: "REGISTER")
        if header > 0 {
            do {
                try NetmapControl.setHeaderLength(name.kernelName, header, on: fd.rawValue)
            } catch {
                header = 0
            }
        } else if !name.isVALE {
            header = (try? NetmapControl.headerLength(name.kernelName)) ?? 0
        }
        let map: MemoryMapping
        do {
            map = try MemoryMapping(descriptor: fd.rawValue, length: Int(body.nr_memsize))
        } catch {
            throw NetmapControl.Failure(request: "mmap \(name.kernelName)", errno: error)
        }
        descriptor = fd
        mapping = map
        do {
            region = try NetmapRegion(base: map.base, size: map.length, interfaceOffset: Int(body.nr_offset))
        } catch {
            throw NetmapControl.Failure(request: "REGISTER \(name.kernelName) (\(error))", errno: .badAddress)
        }
        headerLength = header
        memoryID = body.nr_mem_id
    }

    deinit { kernelLoop?.stop() }

    /// How the rings of this registration are synced, and the descriptor a sleeping worker
    /// polls (-1: none, the sync's notification eventfds wake it): ioctls on the registration's
    /// descriptor, or a kernel loop started here.
    public func makeSync() throws -> (sync: NetmapSync, pollDescriptor: CInt) {
        switch syncMode {
        case .ioctl:
            return (KernelSync(fd: descriptor.rawValue), descriptor.rawValue)
        case .kloop:
            precondition(kernelLoop == nil, "one kernel loop per registration")
            let loop = try KernelLoop(name: name.kernelName, fd: descriptor.rawValue, region: region)
            kernelLoop = loop
            return (loop.sync, -1)
        }
    }
}

/// What `auto` switch selection and `kernel-check` look at.
public enum NetmapAvailability: Equatable, Sendable {
    case available(globalMemory: UInt64)
    case noDevice(String)
    case apiMismatch(String)
    case failed(String)

    public var isAvailable: Bool { if case .available = self { true } else { false } }

    public static func probe() -> NetmapAvailability {
        guard access(NetmapControl.devicePath, F_OK) == 0 else {
            return .noDevice("\(NetmapControl.devicePath) does not exist (the netmap module is not loaded)")
        }
        do {
            let info = try NetmapControl.portInfo("", memoryID: 1)
            return .available(globalMemory: info.memorySize)
        } catch {
            if error.errno == .invalidArgument {
                return .apiMismatch("the module refused API \(NetmapControl.apiVersion) (it accepts a different NETMAP_API); rebuild netmap or vhost-netmap so they match")
            }
            if error.errno == .permissionDenied {
                return .failed("\(NetmapControl.devicePath): permission denied (see kernel/udev: group netmap)")
            }
            return .failed(error.description)
        }
    }
}
