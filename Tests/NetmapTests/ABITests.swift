import CNetmap
import Foundation
import Testing

/// Our declarations of netmap's user ABI against the numbers compiled from netmap's own headers
/// (`../shared/reference/netmap-abi.json`): every size, field offset, ioctl number and constant
/// the code uses must match, and every structure we declare must be covered by the file.
@Suite struct NetmapABI {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    /// The shared reference beside the project (the source of truth) when it is there.
    static let sharedPath = repositoryRoot.deletingLastPathComponent().appendingPathComponent("shared/reference/netmap-abi.json").path
    /// The copy kept in kernel/abi/ so a clone without ../shared still checks the ABI.
    static let copyPath = repositoryRoot.appendingPathComponent("kernel/abi/netmap-abi.json").path

    static var referencePath: String {
        if let p = ProcessInfo.processInfo.environment["VHOST_NETMAP_ABI_JSON"] { return p }
        return FileManager.default.fileExists(atPath: sharedPath) ? sharedPath : copyPath
    }

    static func reference() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: referencePath))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The copy in kernel/abi/ must be the shared reference, byte for byte, wherever both exist.
    @Test func theKeptCopyIsTheReference() throws {
        let copy = try Data(contentsOf: URL(fileURLWithPath: Self.copyPath))
        #expect(copy.count > 1000)
        if FileManager.default.fileExists(atPath: Self.sharedPath) {
            #expect(copy == (try Data(contentsOf: URL(fileURLWithPath: Self.sharedPath))), "kernel/abi/netmap-abi.json differs from ../shared/reference/netmap-abi.json: copy it again")
        }
    }

    static func table(_ kind: Int32) -> [(String, UInt64)] {
        var count: Int32 = 0
        let p = vnm_layout(&count, kind)!
        return (0..<Int(count)).map { (String(cString: p[$0].name), p[$0].value) }
    }

    @Test(arguments: [(Int32(0), "sizes"), (1, "offsets"), (2, "constants")])
    func matchesTheReference(kind: Int32, section: String) throws {
        let reference = try Self.reference()[section] as! [String: Any]
        let ours = Self.table(kind)
        #expect(ours.count > 10)
        for (name, value) in ours {
            guard let theirs = reference[name] as? NSNumber else {
                Issue.record("\(section): \(name) is not in netmap-abi.json")
                continue
            }
            #expect(value == theirs.uint64Value, "\(section) \(name): ours \(value), netmap's \(theirs)")
        }
    }

    /// Every field of every structure we declare is checked: the reference's fields of those
    /// structures all appear in our offset table.
    @Test func everyFieldOfOurStructuresIsCompared() throws {
        let reference = try Self.reference()["offsets"] as! [String: Any]
        let ours = Set(Self.table(1).map(\.0))
        let structs = Set(Self.table(0).map { $0.0 })
        for name in reference.keys {
            let owner = String(name.split(separator: ".")[0])
            if structs.contains(owner) {
                #expect(ours.contains(name), "field \(name) of a declared structure is not compared")
            }
        }
    }

    @Test func swiftSeesTheSameLayout() {
        #expect(MemoryLayout<vnm_ring>.size == 256)
        #expect(MemoryLayout<vnm_slot>.size == 16)
        #expect(MemoryLayout<vnm_req_header>.size == 88)
        #expect(MemoryLayout<vnm_req_register>.size == 56)
        #expect(MemoryLayout<vnm_req_register>.offset(of: \.nr_flags) == 48)
        #expect(MemoryLayout<vnm_ring>.offset(of: \.head) == 20)
    }
}
