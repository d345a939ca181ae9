import Foundation

/// When a running provider task is checked: the first check `firstSeconds` after submission,
/// each next one `factor` times later than the one before, never more than `maxSeconds` apart,
/// every delay stretched or shrunk at random by up to `jitter` (a fraction) so that tasks
/// submitted together do not all check together. A provider's Retry-After is a floor. Where the
/// provider estimates when the task will end, that estimate replaces the back-off (see `delay`).
public struct CheckSchedule: Codable, Sendable, Equatable {
    public var firstSeconds: Double
    public var factor: Double
    public var maxSeconds: Double
    public var jitter: Double

    public init(firstSeconds: Double, factor: Double, maxSeconds: Double, jitter: Double) {
        self.firstSeconds = firstSeconds
        self.factor = factor
        self.maxSeconds = maxSeconds
        self.jitter = jitter
    }

    /// Images usually finish in seconds: check within a second, never wait more than 5 s.
    public static let image = CheckSchedule(firstSeconds: 0.5, factor: 1.5, maxSeconds: 5, jitter: 0.2)
    /// Videos take minutes: start late, back off to two minutes.
    public static let video = CheckSchedule(firstSeconds: 15, factor: 1.5, maxSeconds: 120, jitter: 0.2)
    /// Text is quick.
    public static let text = CheckSchedule(firstSeconds: 0.25, factor: 1.5, maxSeconds: 5, jitter: 0.2)

    /// How much longer the longest wait between checks is when the provider calls back as tasks
    /// end (the early checks stay as they are: a callback restarts the schedule, and a status API
    /// may lag its callback by a moment).
    public static let callbackStretch = 4.0

    /// This schedule with its longest delay `factor` times longer.
    public func stretched(by factor: Double) -> CheckSchedule {
        CheckSchedule(firstSeconds: firstSeconds, factor: self.factor, maxSeconds: maxSeconds * factor, jitter: jitter)
    }

    /// Seconds from check number `checks` (0: the submission) to the next one. `eta` is the
    /// provider's estimate of the seconds left: the check is then made when it says (jittered
    /// only later, never earlier), but not sooner than a quarter of the back-off delay (nor
    /// `firstSeconds`), so an estimate that keeps saying "almost done" for a stuck task still
    /// backs off, and not later than `maxSeconds` (estimates are wrong, and outputs whose URLs
    /// expire must be fetched soon after the task ends).
    public func delay(
        afterCheck checks: Int, retryAfter: Double? = nil, eta: Double? = nil,
        random: (ClosedRange<Double>) -> Double = { Double.random(in: $0) }
    ) -> Double {
        let exponent = Double(min(max(checks, 0), 60))
        let backoff = min(maxSeconds, firstSeconds * pow(factor, exponent))
        let planned: Double
        if let eta, eta.isFinite {
            let estimated = max(firstSeconds, backoff / 4, eta)
            planned = min(maxSeconds, estimated * (jitter > 0 ? random(1...(1 + jitter / 2)) : 1))
        } else {
            planned = backoff * (jitter > 0 ? random((1 - jitter)...(1 + jitter)) : 1)
        }
        return max(planned, retryAfter ?? 0)
    }

    /// A problem with these numbers, said in terms of `name`, or nil.
    public func problem(named name: String) -> String? {
        guard firstSeconds > 0, factor >= 1, maxSeconds >= firstSeconds, (0..<1).contains(jitter) else {
            return "\(name): first_seconds > 0, factor ≥ 1, max_seconds ≥ first_seconds and 0 ≤ jitter < 1"
        }
        return nil
    }
}
