/// At most one log line per interval for a repeated event (refused clients, a front-end in a
/// reconnect loop): the first occurrence is logged at once, later ones are counted and the count
/// goes into the next line. A local client cannot flood the log this way.
struct RateLimitedLog {
    let interval: Duration
    private var lastLine: ContinuousClock.Instant?
    private(set) var suppressed = 0

    init(interval seconds: Int) {
        interval = .seconds(seconds)
    }

    /// Calls `emit` with the number of occurrences suppressed since the last line, or counts
    /// this one.
    mutating func note(_ emit: (Int) -> Void) {
        let now = ContinuousClock.now
        if let last = lastLine, now - last < interval {
            suppressed += 1
            return
        }
        emit(suppressed)
        suppressed = 0
        lastLine = now
    }
}
