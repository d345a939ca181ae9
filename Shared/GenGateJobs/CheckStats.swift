import Foundation
import GenGateCore
import Synchronization

/// What a poller's checks did since it last said: how many status calls, and how late each
/// check was against its schedule (claimed at, minus due at). Published as a `poller.checks`
/// event every heartbeat, so operators and benchmarks see whether pollers keep up.
public final class CheckStats: Sendable {
    /// Upper bounds (seconds) of the lateness buckets; a last bucket holds the rest.
    public static let bounds: [Double] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

    struct Counts {
        var statusCalls = 0
        var buckets = [Int](repeating: 0, count: CheckStats.bounds.count + 1)
        var maxLateness = 0.0
    }

    private let counts = Mutex(Counts())

    public init() {}

    /// A check claimed `lateness` seconds after it was due.
    public func claimed(lateness: Double) {
        let index = Self.bounds.firstIndex { lateness <= $0 } ?? Self.bounds.count
        counts.withLock {
            $0.buckets[index] += 1
            $0.maxLateness = max($0.maxLateness, lateness)
        }
    }

    public func statusCall() { counts.withLock { $0.statusCalls += 1 } }

    /// The counts since the last call, as an event payload, and starts over.
    public func drain() -> EventPayload.PollerChecks {
        let taken = counts.withLock { counts -> Counts in
            defer { counts = Counts() }
            return counts
        }
        return .init(
            statusCalls: taken.statusCalls, latenessBounds: Self.bounds, latenessCounts: taken.buckets,
            latenessMax: taken.maxLateness)
    }
}
