import Glibc
import Synchronization

/// Set by SIGINT/SIGTERM: the run stops and prints its summary, as pkt-gen does.
public let stopRequested = Atomic<Bool>(false)

public func installStopHandler() {
    signal(SIGINT) { _ in stopRequested.store(true, ordering: .relaxed) }
    signal(SIGTERM) { _ in stopRequested.store(true, ordering: .relaxed) }
}

@inline(__always)
func nowNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Runs one pkt-gen function on `port`; per-interval lines go to `log` (stderr), the summary is
/// returned (for stdout).
public final class Runner {
    let options: Options
    let port: PacketPort
    let report: Report
    let template: [UInt8]
    let log: (String) -> Void

    var packets: UInt64 = 0
    var bytes: UInt64 = 0
    var events: UInt64 = 0
    var minSpace = Int.max

    public init(options: Options, port: PacketPort, log: @escaping (String) -> Void) {
        self.options = options
        self.port = port
        self.report = Report(raw: options.rawNumbers)
        let mac = options.sourceMAC ?? port.macAddress ?? [0x02, 0, 0, 0, 0, 0x01]
        template = PacketTemplate(options: options, sourceMAC: mac, length: options.length).bytes
        self.log = log
    }

    public func run() -> String {
        if options.waitSeconds > 0 { sleep(UInt32(options.waitSeconds)) }
        switch options.function {
        case .tx: return transmit()
        case .rx: return receive()
        case .ping: return ping()
        case .pong: return pong()
        }
    }

    /// Prints an interval line when the reporting period has passed.
    final class Interval {
        var start = nowNanoseconds()
        var packets: UInt64 = 0
        var bytes: UInt64 = 0
        var events: UInt64 = 0
    }

    func tick(_ iv: Interval, now: UInt64) {
        let elapsed = now &- iv.start
        guard elapsed >= UInt64(options.reportMilliseconds) * 1_000_000 else { return }
        log(report.interval(packets: packets &- iv.packets, bytes: bytes &- iv.bytes, microseconds: elapsed / 1000,
                            events: events &- iv.events, minSpace: minSpace == Int.max ? 0 : minSpace))
        iv.start = now; iv.packets = packets; iv.bytes = bytes; iv.events = events
        minSpace = Int.max
    }

    func frameLength(_ k: UInt64) -> Int {
        guard let lo = options.minimumLength, lo < options.length else { return options.length }
        return lo + Int(k % UInt64(options.length - lo + 1))
    }

    func transmit() -> String {
        let burst = options.effectiveBurst
        let start = nowNanoseconds()
        let iv = Interval()
        var sequence: UInt64 = 0
        template.withUnsafeBytes { t in
            while !stopRequested.load(ordering: .relaxed) {
                if options.count > 0 && packets >= options.count { break }
                var n = burst
                if options.count > 0 { n = Int(min(UInt64(n), options.count - packets)) }
                if options.rate > 0 {
                    // Pace: never ahead of rate × elapsed.
                    let allowed = UInt64(Double(nowNanoseconds() - start) / 1e9 * Double(options.rate)) + UInt64(burst)
                    if packets >= allowed { usleep(50); continue }
                    n = Int(min(UInt64(n), allowed - packets))
                }
                minSpace = min(minSpace, port.transmitSpace)
                var sentBytes = 0
                let sent = port.send(count: n) { buffer, capacity in
                    let length = min(frameLength(sequence), capacity)
                    buffer.copyMemory(from: t.baseAddress!, byteCount: min(length, t.count))
                    if length > t.count { memset(buffer + t.count, 0x5a, length - t.count) }
                    sequence &+= 1
                    sentBytes += length
                    return length
                }
                if sent > 0 {
                    port.flush()
                    packets &+= UInt64(sent)
                    bytes &+= UInt64(sentBytes)
                    events &+= 1
                } else {
                    port.flush()
                    usleep(10)
                }
                tick(iv, now: nowNanoseconds())
            }
        }
        port.flush()
        let seconds = Double(nowNanoseconds() - start) / 1e9
        port.drain(milliseconds: 5000)
        return report.summary(sent: true, packets: packets, bytes: bytes, events: events, seconds: seconds)
    }

    /// -W: stop after 2 s without frames once some arrived (30 s if none ever does).
    func receive() -> String {
        let burst = max(options.effectiveBurst, 64)
        var first: UInt64 = 0
        var last = nowNanoseconds()
        let begin = last
        let iv = Interval()
        while !stopRequested.load(ordering: .relaxed) {
            if options.count > 0 && packets >= options.count { break }
            var got: UInt64 = 0
            let n = port.receive(max: burst) { _, length in
                got &+= UInt64(length)
            }
            let now = nowNanoseconds()
            if n > 0 {
                if first == 0 { first = now; iv.start = now }
                packets &+= UInt64(n); bytes &+= got; events &+= 1
                last = now
            } else {
                if options.exitWhenIdle {
                    if first != 0 && now - last > 2_000_000_000 { break }
                    if first == 0 && now - begin > 30_000_000_000 { break }
                }
                port.waitForReceive(milliseconds: 100)
            }
            if first != 0 { tick(iv, now: nowNanoseconds()) }
        }
        let seconds = first == 0 ? 0 : Double(last - first) / 1e9
        if let drops = port.receiveDrops {
            log("\(Report.stamp()) receiver_body [1240] \(drops) packets dropped by the kernel (receive ring full)")
        }
        return report.summary(sent: false, packets: packets, bytes: bytes, events: events, seconds: max(seconds, 1e-6))
    }

    /// Sends one frame at a time carrying a sequence number and the send time; a pong mirrors it.
    func ping() -> String {
        var rtts: [UInt64] = []
        let total = options.count == 0 ? UInt64.max : options.count
        var sequence: UInt32 = 0
        var windowMin = UInt64.max, windowSum: UInt64 = 0, windowCount: UInt64 = 0
        var windowStart = nowNanoseconds()
        let len = max(options.length, PacketTemplate.timestampOffset + 8)
        var frame = template
        if frame.count < len { frame += [UInt8](repeating: 0x5a, count: len - frame.count) }
        while !stopRequested.load(ordering: .relaxed) && UInt64(rtts.count) < total && UInt64(sequence) < total {
            sequence &+= 1
            let sentAt = nowNanoseconds()
            frame.withUnsafeMutableBytes { f in
                f.storeBytes(of: sequence.bigEndian, toByteOffset: PacketTemplate.sequenceOffset, as: UInt32.self)
                f.storeBytes(of: sentAt, toByteOffset: PacketTemplate.timestampOffset, as: UInt64.self)
                _ = port.send(count: 1) { b, cap in
                    let n = min(f.count, cap)
                    b.copyMemory(from: f.baseAddress!, byteCount: n)
                    return n
                }
            }
            port.flush()
            packets &+= 1
            var answered = false
            let deadline = sentAt + 1_000_000_000
            while !answered && nowNanoseconds() < deadline && !stopRequested.load(ordering: .relaxed) {
                _ = port.receive(max: 16) { p, length in
                    guard length >= PacketTemplate.timestampOffset + 8,
                          UInt32(bigEndian: p.loadUnaligned(fromByteOffset: PacketTemplate.sequenceOffset, as: UInt32.self)) == sequence else { return }
                    let rtt = nowNanoseconds() - p.loadUnaligned(fromByteOffset: PacketTemplate.timestampOffset, as: UInt64.self)
                    rtts.append(rtt)
                    windowMin = min(windowMin, rtt); windowSum += rtt; windowCount += 1
                    answered = true
                }
                if !answered { port.waitForReceive(milliseconds: 1) }
            }
            if nowNanoseconds() - windowStart >= 1_000_000_000 && windowCount > 0 {
                log("\(Report.stamp()) ping_body [1046] count \(windowCount) RTT: min \(windowMin) av \(windowSum / windowCount) ns")
                windowMin = .max; windowSum = 0; windowCount = 0; windowStart = nowNanoseconds()
            }
        }
        guard !rtts.isEmpty else { return "Sent \(packets) pings, no reply." }
        // netmap pkt-gen's line, then the percentiles it does not print (median, 99th).
        let sorted = rtts.sorted()
        let percentile = { (p: Int) in sorted[min(sorted.count - 1, (sorted.count * p) / 100)] }
        return "RTT over \(rtts.count) packets: min \(sorted[0]) av \(rtts.reduce(0, +) / UInt64(rtts.count)) ns, median \(percentile(50)) p99 \(percentile(99)) max \(sorted[sorted.count - 1]) ns"
    }

    /// Answers pings: swaps MAC and IP addresses and ports, and sends the frame back.
    func pong() -> String {
        let begin = nowNanoseconds()
        var last = begin
        while !stopRequested.load(ordering: .relaxed) {
            if options.count > 0 && packets >= options.count { break }
            var replies: [[UInt8]] = []
            let n = port.receive(max: 64) { p, length in
                guard length >= 42 else { return }
                var f = Array(UnsafeRawBufferPointer(start: p, count: length))
                for k in 0..<6 { f.swapAt(k, k + 6) }
                for k in 26..<30 { f.swapAt(k, k + 4) }
                f.swapAt(34, 36); f.swapAt(35, 37)
                replies.append(f)
            }
            if n == 0 {
                if options.exitWhenIdle && nowNanoseconds() - last > 2_000_000_000 && packets > 0 { break }
                port.waitForReceive(milliseconds: 100)
                continue
            }
            last = nowNanoseconds()
            var k = 0
            _ = port.send(count: replies.count) { b, cap in
                let f = replies[k]; k += 1
                let c = min(f.count, cap)
                f.withUnsafeBytes { b.copyMemory(from: $0.baseAddress!, byteCount: c) }
                return c
            }
            port.flush()
            packets &+= UInt64(replies.count)
            bytes &+= UInt64(replies.reduce(0) { $0 + $1.count })
            events &+= 1
        }
        return report.summary(sent: true, packets: packets, bytes: bytes, events: events, seconds: Double(last - begin) / 1e9)
    }
}
