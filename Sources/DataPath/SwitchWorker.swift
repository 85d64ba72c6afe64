import Glibc
import Logging
import Synchronization
import SystemPackage
import URing
import VALESwitch
import VhostSystem

/// The thread that runs one lane of a switch's data path (`SwitchLane`: with one lane, the whole
/// switch): it lets each of the lane's sources move a batch of frames, and when none has work
/// it re-enables guest kicks and sleeps on io_uring until a kick eventfd (or the control
/// plane's wake-up) fires. Each wake-up descriptor has an io_uring read
/// armed on it, so a kick is consumed by the completion itself (no poll-then-read). In busy-poll
/// mode it never sleeps.
public final class SwitchWorker: @unchecked Sendable {
    public static let batch = 32

    public let vale: VALESwitch
    public let lane: SwitchLane
    private let wake: OwnedDescriptor
    private let busyPoll: Bool
    private let cpu: Int?
    private let logger: Logger
    private let stopping = Atomic<Bool>(false)
    private var thread: pthread_t?
    /// Where the kernel writes the 8-byte counters of consumed kicks; nobody reads them, so one
    /// sink serves every armed read (it outlives the worker's ring).
    private let kickSink = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)

    public init(lane: SwitchLane, of vale: VALESwitch, busyPoll: Bool, cpu: Int?, logger: Logger) throws {
        self.vale = vale
        self.lane = lane
        self.busyPoll = busyPoll
        self.cpu = cpu
        self.logger = vale.lanes.count == 1 ? logger.with("switch", vale.name)
            : logger.with("switch", vale.name).with("lane", "\(lane.index)")
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

    private func run() {
        Posix.setThreadName(vale.lanes.count == 1 ? "vale-\(vale.name)" : "vale-\(vale.name)/\(lane.index)")
        if let cpu, !Posix.pinThread(toCPU: cpu) {
            logger.warning("could not pin worker to CPU \(cpu)")
        }
        let ring: IOURing
        do {
            ring = try IOURing(entries: 512)
        } catch {
            logger.critical("io_uring unavailable for the worker: \(error)")
            return
        }
        var sources = WakeTable(control: wake.rawValue, sink: kickSink)
        sources.arm(.control, on: ring)
        var fired: [WakeSource] = []
        fired.reserveCapacity(64)

        // Busy-polling, the worker never sleeps, so the guests need not kick: kicks are turned off
        // (VRING_USED_F_NO_NOTIFY) on the rings running at each configuration change. A kick costs
        // the guest a syscall per batch (DPDK's vhost turns them off the same way).
        var kicksOffGeneration: UInt64 = .max
        while !stopping.load(ordering: .acquiring) {
            let moved = lane.lock.withLock {
                let moved = lane.runPass(budget: Self.batch)
                if busyPoll && vale.generation != kicksOffGeneration {
                    kicksOffGeneration = vale.generation
                    for s in lane.sources { s.port.finishSleeping(for: lane, as: s.index) }
                }
                return moved
            }
            if moved > 0 || busyPoll { continue }

            // Nothing to do: ask for wake-ups, re-check, then sleep.
            let mustStayAwake: Bool = lane.lock.withLock {
                var pending = false
                var polled = false
                let owned = lane.sources
                for s in owned {
                    if s.port.prepareToSleep(for: lane, as: s.index) { pending = true }
                    if s.port.needsPolling(for: lane, as: s.index) { polled = true }
                }
                if vale.generation != sources.generation {
                    sources.rebuild(on: ring, generation: vale.generation,
                                    eventFDs: owned.flatMap { $0.port.wakeDescriptors(for: lane, as: $0.index) },
                                    readable: owned.flatMap { $0.port.pollDescriptors(for: lane, as: $0.index) })
                }
                if pending || polled {
                    for s in owned { s.port.finishSleeping(for: lane, as: s.index) }
                }
                return pending || polled
            }
            if mustStayAwake { continue }

            fired.removeAll(keepingCapacity: true)
            ring.submitAndWait { c in
                guard let source = WakeSource(userData: c.userData) else { return }
                if c.result >= 0 {
                    fired.append(source)
                } else if c.result != -ECANCELED {
                    // Not re-armed: a source that fails once would fail in a tight loop.
                    logger.error("wake-up \(source) failed: \(Errno(rawValue: -c.result)); it is no longer watched")
                }
            }
            lane.lock.withLock {
                // Every source that fired is armed again before the ports run, so a frame that
                // arrives from here on wakes the next sleep.
                for source in fired { sources.arm(source, on: ring) }
                for s in lane.sources { s.port.finishSleeping(for: lane, as: s.index) }
            }
        }
        lane.lock.withLock { lane.flushDeliveries() }
    }
}

/// The descriptors a sleeping worker watches, each with the operation armed on it. Rebuilt (old
/// operations cancelled, a new epoch) when the switch's ports change; every source is re-armed
/// by `rearm` after its completion, the one rule that keeps a source from going deaf.
struct WakeTable {
    let control: CInt
    /// Where armed 8-byte eventfd reads land; nobody reads the counts.
    let sink: UnsafeMutableRawPointer
    private(set) var epoch: UInt32 = 0
    private(set) var generation: UInt64 = .max
    private(set) var eventFDs: [CInt] = []
    private(set) var readable: [CInt] = []

    init(control: CInt, sink: UnsafeMutableRawPointer) {
        self.control = control
        self.sink = sink
    }

    mutating func rebuild(on ring: IOURing, generation: UInt64, eventFDs: [CInt], readable: [CInt]) {
        for i in self.eventFDs.indices { ring.cancel(userData: WakeSource.eventFD(epoch: epoch, index: i).userData) }
        for i in self.readable.indices { ring.cancel(userData: WakeSource.readable(epoch: epoch, index: i).userData) }
        epoch &+= 1
        self.generation = generation
        self.eventFDs = Array(eventFDs.prefix(WakeSource.maxIndex + 1))
        self.readable = Array(readable.prefix(WakeSource.maxIndex + 1))
        for i in self.eventFDs.indices { arm(.eventFD(epoch: epoch, index: i), on: ring) }
        for i in self.readable.indices { arm(.readable(epoch: epoch, index: i), on: ring) }
    }

    /// Arms `source`: at start, and again after each of its completions. Sources of an older
    /// table are dropped.
    func arm(_ source: WakeSource, on ring: IOURing) {
        switch source {
        case .control:
            ring.read(fd: control, into: sink, length: 8, userData: source.userData)
        case let .eventFD(e, i):
            guard e == epoch, i < eventFDs.count else { return }
            ring.read(fd: eventFDs[i], into: sink, length: 8, userData: source.userData)
        case let .readable(e, i):
            guard e == epoch, i < readable.count else { return }
            ring.pollAdd(fd: readable[i], userData: source.userData)
        }
    }
}

/// The workers of one switch, one per lane, started, poked and stopped together.
public final class SwitchWorkers: @unchecked Sendable {
    public let vale: VALESwitch
    public let workers: [SwitchWorker]

    /// One worker per lane of `vale`; lane k is pinned to `cpus[k]` if given.
    public init(vale: VALESwitch, busyPoll: Bool, cpus: [Int?], logger: Logger) throws {
        self.vale = vale
        workers = try vale.lanes.map { lane in
            try SwitchWorker(lane: lane, of: vale, busyPoll: busyPoll,
                             cpu: lane.index < cpus.count ? cpus[lane.index] : nil, logger: logger)
        }
    }

    public func start() { for w in workers { w.start() } }
    public func stop() { for w in workers { w.stop() } }
    /// Wakes every worker so each notices configuration changes.
    public func poke() { for w in workers { w.poke() } }
}
