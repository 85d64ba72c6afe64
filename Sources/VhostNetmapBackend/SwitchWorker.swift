import Glibc
import Logging
import Synchronization
import URing
import VALESwitch
import VhostSystem

/// The thread that runs one switch's data path: it lets each port move a batch of frames,
/// and when no port has work it re-enables guest kicks and sleeps on io_uring until a kick
/// eventfd (or the control plane's wake-up) fires. Each wake-up descriptor has an io_uring read
/// armed on it, so a kick is consumed by the completion itself (no poll-then-read). In busy-poll
/// mode it never sleeps.
public final class SwitchWorker: @unchecked Sendable {
    public static let batch = 32

    public let vale: VALESwitch
    private let wake: OwnedDescriptor
    private let busyPoll: Bool
    private let cpu: Int?
    private let logger: Logger
    private let stopping = Atomic<Bool>(false)
    private var thread: pthread_t?
    /// Where the kernel writes the 8-byte counters of consumed kicks; nobody reads them, so one
    /// sink serves every armed read (it outlives the worker's ring).
    private let kickSink = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)

    public init(vale: VALESwitch, busyPoll: Bool, cpu: Int?, logger: Logger) throws {
        self.vale = vale
        self.busyPoll = busyPoll
        self.cpu = cpu
        self.logger = logger
        wake = try EventFD.make()
    }

    deinit { kickSink.deallocate() }

    /// Wakes the worker so it notices configuration changes (called by the control plane).
    public func poke() {
        EventFD.signal(wake.rawValue)
    }

    public func start() {
        let unmanaged = Unmanaged.passRetained(self)
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let worker = Unmanaged<SwitchWorker>.fromOpaque(arg!).takeRetainedValue()
            worker.run()
            return nil
        }, unmanaged.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        thread = t
    }

    public func stop() {
        stopping.store(true, ordering: .releasing)
        poke()
        if let t = thread { pthread_join(t, nil) }
        thread = nil
    }

    private static let wakeToken: UInt64 = 1 << 62

    private func run() {
        Posix.setThreadName("vale-\(vale.name)")
        if let cpu, !Posix.pinThread(toCPU: cpu) {
            logger.warning("switch \(vale.name): could not pin worker to CPU \(cpu)")
        }
        let ring: IOURing
        do {
            ring = try IOURing(entries: 512)
        } catch {
            logger.critical("switch \(vale.name): io_uring unavailable for the worker: \(error)")
            return
        }
        ring.read(fd: wake.rawValue, into: kickSink, length: 8, userData: Self.wakeToken)
        var armedGeneration: UInt64 = .max
        var armEpoch: UInt64 = 0
        var armed: [CInt] = []
        var pollable: [CInt] = []
        let pollBit: UInt64 = 0x8000
        var fired: [UInt64] = []
        fired.reserveCapacity(64)

        while !stopping.load(ordering: .acquiring) {
            let moved = vale.lock.withLock { _ in vale.runPass(budget: Self.batch) }
            if moved > 0 || busyPoll { continue }

            // Nothing to do: ask for kicks, re-check, then sleep.
            let mustStayAwake: Bool = vale.lock.withLock { _ in
                var pending = false
                var polled = false
                for p in vale.attachedPorts {
                    if p.port.prepareToSleep() { pending = true }
                    if p.port.needsPolling { polled = true }
                }
                if vale.generation != armedGeneration {
                    for i in armed.indices { ring.cancel(userData: armEpoch << 16 | UInt64(i)) }
                    for i in pollable.indices { ring.cancel(userData: armEpoch << 16 | pollBit | UInt64(i)) }
                    armEpoch &+= 1
                    armed = vale.attachedPorts.flatMap { $0.port.wakeDescriptors() }
                    pollable = vale.attachedPorts.flatMap { $0.port.pollDescriptors() }
                    for (i, fd) in armed.enumerated() { ring.read(fd: fd, into: kickSink, length: 8, userData: armEpoch << 16 | UInt64(i)) }
                    for (i, fd) in pollable.enumerated() { ring.pollAdd(fd: fd, userData: armEpoch << 16 | pollBit | UInt64(i)) }
                    armedGeneration = vale.generation
                }
                if pending || polled {
                    for p in vale.attachedPorts { p.port.finishSleeping() }
                }
                return pending || polled
            }
            if mustStayAwake { continue }

            fired.removeAll(keepingCapacity: true)
            ring.submitAndWait { c in if c.result > 0 { fired.append(c.userData) } }
            vale.lock.withLock { _ in
                for token in fired {
                    if token == Self.wakeToken {
                        EventFD.drain(wake.rawValue)
                        ring.read(fd: wake.rawValue, into: kickSink, length: 8, userData: Self.wakeToken)
                    } else if token >> 16 == armEpoch && vale.generation == armedGeneration {
                        // The descriptor table is unchanged since arming, so the number is still ours.
                        let i = Int(token & 0xffff)
                        if i < armed.count {
                            EventFD.drain(armed[i])
                            ring.pollAdd(fd: armed[i], userData: token)
                        }
                    }
                }
                for p in vale.attachedPorts { p.port.finishSleeping() }
            }
        }
        vale.lock.withLock { _ in vale.flushDeliveries() }
    }
}
