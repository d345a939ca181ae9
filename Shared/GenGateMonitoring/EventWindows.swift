import Foundation
import GenGateCore

/// Durations counted into fixed buckets, from a millisecond to an hour and over, so that
/// percentiles can be read from a window of any length by adding buckets (exact counts, each
/// percentile placed within its bucket by linear interpolation).
public struct LatencyHistogram: Sendable, Equatable {
    /// Upper bounds of the buckets, in milliseconds; the last bucket has none.
    public static let bounds: [Double] = [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000, 300_000,
        600_000, 1_200_000, 1_800_000, 3_600_000,
    ]

    public private(set) var counts = [Int](repeating: 0, count: LatencyHistogram.bounds.count + 1)
    public private(set) var count = 0
    /// The largest value recorded (for the last bucket's upper end).
    public private(set) var maximum = 0.0

    public init() {}

    public mutating func record(milliseconds: Double) {
        let value = max(0, milliseconds)
        let index = Self.bounds.firstIndex { value <= $0 } ?? Self.bounds.count
        counts[index] += 1
        count += 1
        maximum = max(maximum, value)
    }

    public mutating func add(_ other: LatencyHistogram) {
        for index in counts.indices { counts[index] += other.counts[index] }
        count += other.count
        maximum = max(maximum, other.maximum)
    }

    /// The `quantile` (0–1) in milliseconds; nil when nothing was recorded.
    public func percentile(_ quantile: Double) -> Double? {
        guard count > 0 else { return nil }
        let rank = max(1, (quantile * Double(count)).rounded(.up))
        var seen = 0.0
        for (index, bucketCount) in counts.enumerated() where bucketCount > 0 {
            let before = seen
            seen += Double(bucketCount)
            guard seen >= rank else { continue }
            let lower = index == 0 ? 0 : Self.bounds[index - 1]
            let upper = index < Self.bounds.count ? min(Self.bounds[index], maximum) : maximum
            let share = (rank - before) / Double(bucketCount)
            return lower + (max(upper, lower) - lower) * share
        }
        return maximum
    }
}

/// What the event stream said about one provider and model in some span of time.
public struct WindowFigures: Sendable, Equatable {
    /// `provider.call` events: submissions, and status, task and cancel calls that failed.
    public var calls = 0
    public var callErrors = 0
    /// Failed calls the request caused (refused for what it asked: `AlertRules.clientCaused`).
    public var clientCallErrors = 0
    /// Failed calls and failed jobs by error code.
    public var errors: [String: Int] = [:]
    /// Calls and tasks that ran out of time (`provider_timeout`, `task_timeout`).
    public var timeouts = 0
    public var retries = 0
    public var completed = 0
    public var failed = 0
    /// Provider call latency.
    public var latency = LatencyHistogram()
    /// Time from acceptance to completion of completed jobs.
    public var duration = LatencyHistogram()

    public init() {}

    public mutating func add(_ other: WindowFigures) {
        calls += other.calls
        callErrors += other.callErrors
        clientCallErrors += other.clientCallErrors
        errors.merge(other.errors, uniquingKeysWith: +)
        timeouts += other.timeouts
        retries += other.retries
        completed += other.completed
        failed += other.failed
        latency.add(other.latency)
        duration.add(other.duration)
    }

    /// Failed calls of all calls; nil with none.
    public var callFailureRate: Double? { calls == 0 ? nil : Double(callErrors) / Double(calls) }
    /// Failed calls of all calls, leaving out those the request caused: the provider's own share.
    public var providerFailureRate: Double? {
        calls == 0 ? nil : Double(callErrors - clientCallErrors) / Double(calls)
    }
    /// The error code seen most (the first by name among equals).
    public var mostCommonError: String? {
        errors.max(by: { ($0.value, $1.key) < ($1.value, $0.key) })?.key
    }
    /// Failed jobs of the jobs that ended; nil with none.
    public var jobFailureRate: Double? { completed + failed == 0 ? nil : Double(failed) / Double(completed + failed) }
}

/// The figures of one provider and model over a window.
public struct ProviderFigures: Sendable, Equatable {
    public var provider: String
    public var model: String
    public var figures: WindowFigures
}

/// Sliding windows of the event stream per provider and model, in one-minute buckets over the
/// last `span` (an hour by default). Events are lossy: `EventGaps` says how many were missed.
/// Every method takes the time, so tests drive it with a clock of their own.
public struct ProviderWindows: Sendable {
    public static let bucketSeconds = 60.0
    struct Key: Hashable, Sendable {
        var provider: String
        var model: String
    }

    public let span: TimeInterval
    /// Buckets by minute (seconds since 1970 / 60), each by provider and model.
    private var buckets: [Int64: [Key: WindowFigures]] = [:]

    public init(span: TimeInterval = 3_600) {
        self.span = span
    }

    static func minute(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 / bucketSeconds).rounded(.down)) }

    /// Counts one event (received at `now`; its own time may be skewed by another host's clock).
    public mutating func record(_ event: Event, now: Date) {
        let bucket = Self.minute(now)
        func update(_ provider: String?, _ model: String?, _ change: (inout WindowFigures) -> Void) {
            let key = Key(provider: provider ?? "unknown", model: model ?? "unknown")
            change(&buckets[bucket, default: [:]][key, default: WindowFigures()])
        }
        switch event.payload {
        case .providerCall(let call):
            update(call.provider, call.model) { figures in
                figures.calls += 1
                figures.latency.record(milliseconds: Double(call.latencyMs))
                guard call.outcome != "ok" else { return }
                figures.callErrors += 1
                let code = call.errorCode ?? "unknown"
                if AlertRules.clientCaused.contains(code) { figures.clientCallErrors += 1 }
                figures.errors[code, default: 0] += 1
                if Self.isTimeout(code) { figures.timeouts += 1 }
            }
        case .generationRetrying(let retrying):
            update(retrying.provider, retrying.model) { $0.retries += 1 }
        case .generationCompleted(let completed):
            update(completed.provider, completed.model) { figures in
                figures.completed += 1
                figures.duration.record(milliseconds: Double(completed.durationMs))
            }
        case .generationFailed(let failed):
            update(failed.provider, failed.model) { figures in
                figures.failed += 1
                let code = failed.error.code.rawValue
                figures.errors[code, default: 0] += 1
                if Self.isTimeout(code) { figures.timeouts += 1 }
            }
        default:
            return
        }
        prune(now: now)
    }

    static func isTimeout(_ code: String) -> Bool {
        code == ErrorCode.taskTimeout.rawValue || code == ErrorCode.providerTimeout.rawValue
    }

    private mutating func prune(now: Date) {
        let oldest = Self.minute(now.addingTimeInterval(-span))
        guard buckets.count > Int(span / Self.bucketSeconds) + 2 else { return }
        for minute in buckets.keys where minute < oldest { buckets[minute] = nil }
    }

    /// Each provider and model's figures over the last `window` (at most `span`).
    public func figures(now: Date, window: TimeInterval? = nil) -> [ProviderFigures] {
        let oldest = Self.minute(now.addingTimeInterval(-min(window ?? span, span)))
        let newest = Self.minute(now)
        var merged: [Key: WindowFigures] = [:]
        // Whole minutes: the one `window` ago included, so a window is never shorter than asked.
        for (minute, byKey) in buckets where minute >= oldest && minute <= newest {
            for (key, figures) in byKey { merged[key, default: WindowFigures()].add(figures) }
        }
        return merged.map { ProviderFigures(provider: $0.key.provider, model: $0.key.model, figures: $0.value) }
            .sorted { ($0.provider, $0.model) < ($1.provider, $1.model) }
    }

    /// A provider's figures (every model) minute by minute over the span, oldest first: one entry
    /// per minute, empty where nothing happened.
    public func timeline(provider: String, now: Date) -> [WindowFigures] {
        let newest = Self.minute(now)
        let minutes = Int(span / Self.bucketSeconds)
        return (0..<minutes).map { offset in
            let minute = newest - Int64(minutes - 1 - offset)
            var total = WindowFigures()
            for (key, figures) in buckets[minute] ?? [:] where key.provider == provider { total.add(figures) }
            return total
        }
    }
}

/// Messages each publisher numbered but this subscriber never received (envelope `seq`), by
/// service, so figures built from events can say how much they may have missed.
public struct EventGaps: Sendable {
    private var last: [String: (seq: UInt64, seen: Date)] = [:]
    private var pruned = Date.distantPast
    private var missed: [Int64: [String: Int]] = [:]
    public let span: TimeInterval

    public init(span: TimeInterval = 3_600) {
        self.span = span
    }

    /// Notes a message of `source` (a process of `service`); returns how many of its messages
    /// before this one were missed.
    @discardableResult
    public mutating func saw(source: String, service: @autoclosure () -> String, seq: UInt64?, now: Date) -> Int {
        guard let seq else { return 0 }
        let previous = last[source]?.seq
        last[source] = (seq, now)
        if last.count > 1_000, now.timeIntervalSince(pruned) > 60 {
            // Sources that went quiet (processes that ended) are forgotten after the span; looked
            // for once a minute, not at every event.
            pruned = now
            last = last.filter { now.timeIntervalSince($0.value.seen) < span }
        }
        // Lower or equal: a new process under the same name (a container's pid 1 restarted),
        // counting from 1 again; the bus keeps one publisher's messages in order.
        guard let previous, seq > previous, seq - previous > 1 else { return 0 }
        // Capped: a gap past a trillion is a publisher's numbering gone wrong, not messages.
        let gap = Int(min(seq - previous - 1, 1 << 40))
        missed[ProviderWindows.minute(now), default: [:]][service(), default: 0] += gap
        let oldest = ProviderWindows.minute(now.addingTimeInterval(-span))
        for minute in missed.keys where minute < oldest { missed[minute] = nil }
        return gap
    }

    /// Messages missed in the last `window`, by service.
    public func missed(now: Date, window: TimeInterval? = nil) -> [String: Int] {
        let oldest = ProviderWindows.minute(now.addingTimeInterval(-min(window ?? span, span)))
        var total: [String: Int] = [:]
        for (minute, byService) in missed where minute >= oldest {
            total.merge(byService, uniquingKeysWith: +)
        }
        return total
    }
}
