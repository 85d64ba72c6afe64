/// The two address spaces a vhost-user back-end meets, kept apart by type: a descriptor's buffer
/// is a guest-physical address; the rings' addresses (SET_VRING_ADDR) and the regions'
/// `userAddress` are the front-end's own virtual addresses (QEMU's process). Mixing them up is a
/// classic vhost bug that would translate through the wrong table; here it does not compile.
/// Both are plain 64-bit values at run time. A literal is taken as an address of the type the
/// context asks for (tests write them); a `UInt64` variable must say which it is.
public struct GuestPhysicalAddress: Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public var value: UInt64
    @inline(__always) public init(_ value: UInt64) { self.value = value }
    @inline(__always) public init(integerLiteral value: UInt64) { self.value = value }
    @inline(__always) public static func < (a: Self, b: Self) -> Bool { a.value < b.value }
    public var description: String { "gpa 0x\(String(value, radix: 16))" }
}

public struct FrontEndAddress: Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public var value: UInt64
    @inline(__always) public init(_ value: UInt64) { self.value = value }
    @inline(__always) public init(integerLiteral value: UInt64) { self.value = value }
    @inline(__always) public static func < (a: Self, b: Self) -> Bool { a.value < b.value }
    public var description: String { "front-end address 0x\(String(value, radix: 16))" }
}
