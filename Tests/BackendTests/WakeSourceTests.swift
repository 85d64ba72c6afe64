import Testing
@testable import DataPath

/// The worker's wake-up tokens: one encoding, and a decoding that gives back the same source.
@Suite struct WakeSourceEncoding {
    @Test func everySourceSurvivesTheRoundTrip() {
        let sources: [WakeSource] = [
            .control,
            .eventFD(epoch: 0, index: 0), .eventFD(epoch: 7, index: 3), .eventFD(epoch: .max, index: WakeSource.maxIndex),
            .readable(epoch: 0, index: 0), .readable(epoch: 1, index: 0x8000), .readable(epoch: .max, index: WakeSource.maxIndex),
        ]
        for s in sources { #expect(WakeSource(userData: s.userData) == s, "\(s)") }
        #expect(Set(sources.map(\.userData)).count == sources.count, "distinct sources, distinct tokens")
    }

    /// The field bug this type replaces: a poll token carried a flag bit in its index and failed
    /// the index check, so the netmap descriptor was never armed again.
    @Test func aReadableIndexIsNotConfusedWithAFlag() {
        #expect(WakeSource(userData: WakeSource.readable(epoch: 2, index: 0).userData) == .readable(epoch: 2, index: 0))
        #expect(WakeSource.readable(epoch: 2, index: 0).userData != WakeSource.eventFD(epoch: 2, index: 0).userData)
    }

    @Test func foreignUserDataIsNotASource() {
        #expect(WakeSource(userData: 0) == nil)
        #expect(WakeSource(userData: .max) == nil, "io_uring bookkeeping (cancel) completions")
        #expect(WakeSource(userData: WakeSource.control.userData | 1) == nil)
    }
}
