import Glibc

/// pkt-gen's output: per-interval lines on standard error, the summary on standard output.
public struct Report {
    public var raw: Bool

    public init(raw: Bool) { self.raw = raw }

    /// pkt-gen's `norm`: "%.3f" and K/M/G/T in steps of 1000, or "%.0f" with -N.
    public func norm(_ value: Double, _ unit: String) -> String {
        if raw { return String(format3: value, decimals: 0) + " " + unit }
        var v = value
        var prefix = ""
        for p in ["K", "M", "G", "T"] where v >= 1000 {
            v /= 1000
            prefix = p
        }
        return String(format3: v, decimals: 3) + " " + prefix + unit
    }

    /// `SSS.UUUUUU main_thread [2781] X pps (Y pkts Z bps in U usec) B avg_batch S min_space`.
    public func interval(packets: UInt64, bytes: UInt64, microseconds: UInt64, events: UInt64, minSpace: Int) -> String {
        let secs = Double(microseconds) / 1e6
        let pps = secs > 0 ? Double(packets) / secs : 0
        let bps = secs > 0 ? Double(bytes) * 8 / secs : 0
        let batch = events > 0 ? Double(packets) / Double(events) : 0
        return "\(Self.stamp()) main_thread [2781] \(norm(pps, "pps")) (\(norm(Double(packets), "pkts")) \(norm(bps, "bps")) in \(microseconds) usec) \(String(format3: batch, decimals: 2)) avg_batch \(minSpace) min_space"
    }

    /// "Sent|Received N packets B bytes E events S bytes each in T.TT seconds." and the speed line.
    public func summary(sent: Bool, packets: UInt64, bytes: UInt64, events: UInt64, seconds: Double) -> String {
        guard packets > 0 else { return sent ? "Sent nothing." : "Received nothing." }
        let each = bytes / packets
        let pps = seconds > 0 ? Double(packets) / seconds : 0
        let bps = seconds > 0 ? Double(bytes) * 8 / seconds : 0
        let rawBps = seconds > 0 ? Double(bytes + packets * 24) * 8 / seconds : 0
        let batch = events > 0 ? Double(packets) / Double(events) : 0
        return """
            \(sent ? "Sent" : "Received") \(packets) packets \(bytes) bytes \(events) events \(each) bytes each in \(String(format3: seconds, decimals: 2)) seconds.
            Speed: \(norm(pps, "pps")) Bandwidth: \(norm(bps, "bps")) (raw \(norm(rawBps, "bps"))). Average batch: \(String(format3: batch, decimals: 2)) pkts
            """
    }

    public static func stamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let s = ts.tv_sec % 1000
        let us = ts.tv_nsec / 1000
        return "\(String(s).leftPadded(3)).\(String(us).leftPadded(6))"
    }
}

extension String {
    /// A fixed-point rendering (no Foundation in the guest image).
    init(format3 value: Double, decimals: Int) {
        if decimals == 0 {
            self = String(Int64(value.rounded()))
            return
        }
        var scale: Double = 1
        for _ in 0..<decimals { scale *= 10 }
        let scaled = Int64((value * scale).rounded())
        let whole = scaled / Int64(scale)
        let frac = String(abs(scaled % Int64(scale))).leftPadded(decimals)
        self = "\(whole).\(frac)"
    }

    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
