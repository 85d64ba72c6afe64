/// What can wake a sleeping switch worker, as the io_uring user data of the operation armed on
/// it. One encoding, one decoding: the worker never packs or unpacks bits by hand.
///
/// Port sources are numbered in the worker's table of armed descriptors, which is rebuilt when
/// the switch's ports change; `epoch` names the table so a completion of an operation armed on
/// an older table (cancelled, or racing the cancel) is recognised and ignored.
enum WakeSource: Equatable, CustomStringConvertible {
    /// The control plane's eventfd (`SwitchWorker.poke`): configuration changed or stop.
    case control
    /// A port's eventfd that counts new frames (a guest's kick, a TAP read completion): an
    /// 8-byte read is armed on it, which consumes the count.
    case eventFD(epoch: UInt32, index: Int)
    /// A port's descriptor that polls readable when frames wait (a netmap file descriptor):
    /// a one-shot POLLIN is armed on it.
    case readable(epoch: UInt32, index: Int)

    /// Port tables hold at most this many sources of each kind.
    static let maxIndex = 0xFFFF

    private static let kindShift: UInt64 = 60
    private static let epochShift: UInt64 = 16

    private enum Kind: UInt64 {
        case control = 1, eventFD = 2, readable = 3
    }

    var userData: UInt64 {
        switch self {
        case .control:
            return Kind.control.rawValue << Self.kindShift
        case let .eventFD(epoch, index):
            return Self.pack(.eventFD, epoch, index)
        case let .readable(epoch, index):
            return Self.pack(.readable, epoch, index)
        }
    }

    private static func pack(_ kind: Kind, _ epoch: UInt32, _ index: Int) -> UInt64 {
        precondition(index >= 0 && index <= maxIndex, "wake source index \(index) out of range")
        return kind.rawValue << kindShift | UInt64(epoch) << epochShift | UInt64(index)
    }

    /// Nil for user data that no `WakeSource` produced (a cancel's own completion has none).
    init?(userData: UInt64) {
        guard let kind = Kind(rawValue: userData >> Self.kindShift) else { return nil }
        let epoch = UInt32(truncatingIfNeeded: userData >> Self.epochShift)
        let index = Int(userData & UInt64(Self.maxIndex))
        switch kind {
        case .control:
            guard userData == Kind.control.rawValue << Self.kindShift else { return nil }
            self = .control
        case .eventFD: self = .eventFD(epoch: epoch, index: index)
        case .readable: self = .readable(epoch: epoch, index: index)
        }
    }

    var description: String {
        switch self {
        case .control: return "control"
        case let .eventFD(epoch, index): return "eventfd #\(index) (table \(epoch))"
        case let .readable(epoch, index): return "readable descriptor #\(index) (table \(epoch))"
        }
    }
}
