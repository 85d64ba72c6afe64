import CLibXML2

/// A domain's `<interface type='vhostuser'>`: its unix socket, who listens, queue pairs, MAC.
public struct VhostUserInterface: Equatable, Sendable {
    public var socketPath: String
    /// libvirt `mode='server'`: QEMU listens and the back-end connects.
    public var qemuListens: Bool
    public var queues: Int
    public var mac: String?

    public init(socketPath: String, qemuListens: Bool, queues: Int = 1, mac: String? = nil) {
        self.socketPath = socketPath
        self.qemuListens = qemuListens
        self.queues = queues
        self.mac = mac
    }
}

public enum DomainXMLError: Error, CustomStringConvertible, Equatable {
    case unreadable
    case notADomain(String)

    public var description: String {
        switch self {
        case .unreadable: "the domain XML does not parse"
        case .notADomain(let root): "the XML's root is <\(root)>, not <domain>"
        }
    }
}

/// Reads the vhost-user interfaces out of a domain's XML (libxml2: no network access, no entity
/// substitution, libxml2's own limits on depth and size).
public enum DomainInterfaces {
    public static func parse(_ xml: String) throws(DomainXMLError) -> [VhostUserInterface] {
        let bytes = Array(xml.utf8)
        guard bytes.count < Int(Int32.max) else { throw .unreadable }
        let options = Int32(XML_PARSE_NONET.rawValue | XML_PARSE_NOERROR.rawValue | XML_PARSE_NOWARNING.rawValue)
        let document = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { xmlReadMemory($0.baseAddress, Int32($0.count), "domain.xml", nil, options) }
        }
        guard let document else { throw .unreadable }
        defer { xmlFreeDoc(document) }
        guard let root = xmlDocGetRootElement(document) else { throw .unreadable }
        guard name(of: root) == "domain" else { throw .notADomain(name(of: root)) }
        var found: [VhostUserInterface] = []
        for devices in children(of: root, named: "devices") {
            for interface in children(of: devices, named: "interface") where attribute("type", of: interface) == "vhostuser" {
                guard let source = children(of: interface, named: "source").first,
                      (attribute("type", of: source) ?? "unix") == "unix",
                      let path = attribute("path", of: source) else { continue }
                let driver = children(of: interface, named: "driver").first
                // A queue count that does not parse is kept as 0: the port mapping refuses it.
                let queues = driver.flatMap { attribute("queues", of: $0) }.map { Int($0) ?? 0 } ?? 1
                let mac = children(of: interface, named: "mac").first.flatMap { attribute("address", of: $0) }
                found.append(VhostUserInterface(socketPath: path, qemuListens: attribute("mode", of: source) == "server",
                                                queues: queues, mac: mac))
            }
        }
        return found
    }

    private static func name(of node: xmlNodePtr) -> String {
        node.pointee.name.map { String(cString: $0) } ?? ""
    }

    private static func children(of node: xmlNodePtr, named wanted: String) -> [xmlNodePtr] {
        var out: [xmlNodePtr] = []
        var child = node.pointee.children
        while let c = child {
            if c.pointee.type == XML_ELEMENT_NODE && name(of: c) == wanted { out.append(c) }
            child = c.pointee.next
        }
        return out
    }

    private static func attribute(_ key: String, of node: xmlNodePtr) -> String? {
        guard let value = xmlGetProp(node, key) else { return nil }
        defer { cxml_free(value) }
        return String(cString: value)
    }
}
