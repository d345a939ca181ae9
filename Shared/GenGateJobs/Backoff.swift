import Foundation

/// Exponential back-off with full jitter and a cap (docs/ARCHITECTURE.md, "Retries"): after
/// attempt 1 the wait is drawn from 0…`base`, after each next one from a range twice as long,
/// never more than `cap`; spread over the whole range, retries of many jobs that failed together
/// do not arrive together. A provider's Retry-After sets a floor.
public struct Backoff: Sendable, Equatable {
    public var base: Double
    public var cap: Double

    public init(base: Double, cap: Double) {
        self.base = base
        self.cap = cap
    }

    /// Seconds to wait before attempt `attempt + 1`, after `attempt` (1-based) failed.
    public func delay(
        afterAttempt attempt: Int, retryAfter: Double? = nil,
        random: (ClosedRange<Double>) -> Double = { Double.random(in: $0) }
    ) -> Double {
        let exponent = min(max(attempt - 1, 0), 30)
        let ceiling = min(cap, base * pow(2, Double(exponent)))
        let jittered = random(0...ceiling)
        return max(jittered, min(retryAfter ?? 0, cap * 10))
    }
}
