import Foundation

/// Exponential back-off with full jitter and a cap (docs/ARCHITECTURE.md, "Retries"): attempt 1 waits about
/// `base`, each next one up to twice as long, never more than `cap`. A provider's Retry-After
/// sets a floor.
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
        // "Equal jitter": at least half the ceiling, so retries never bunch up near zero.
        let jittered = ceiling / 2 + random(0...(ceiling / 2))
        return max(jittered, min(retryAfter ?? 0, cap * 10))
    }
}
