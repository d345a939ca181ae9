import Foundation
import GenGateCore

/// A submission asking to go to `provider` (with the move to `dispatching`). The store admits it
/// only while the provider's open tasks are under its current concurrency limit and a submission
/// token is left; otherwise the whole change is refused with `ProviderAtLimit`.
public struct ProviderAdmission: Sendable, Equatable {
    public var provider: String
    public var limits: ProviderLimits
    /// The job holds its slot already (it is `dispatching`, submitting again in place of an
    /// interrupted submission): only a token is taken. Counting it against others in the same
    /// state could leave them all refusing each other.
    public var replacing: Bool

    public init(provider: String, limits: ProviderLimits, replacing: Bool = false) {
        self.provider = provider
        self.limits = limits
        self.replacing = replacing
    }
}

/// How a submission's call went, for the provider's adaptive limits (AIMD): a throttled call
/// halves the current limits (at most once per `decreaseSpacing` seconds, since one overload
/// throttles many calls at once); an answered call raises them by 1/limit, back up to the
/// configured maximum.
public struct LimitFeedback: Sendable, Equatable {
    public var provider: String
    public var limits: ProviderLimits
    public var throttled: Bool

    /// Seconds between two decreases.
    public static let decreaseSpacing = 5.0

    public init(provider: String, limits: ProviderLimits, throttled: Bool) {
        self.provider = provider
        self.limits = limits
        self.throttled = throttled
    }
}

/// A submission refused because its provider is at its limit; try again at `retryAt`.
public struct ProviderAtLimit: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: String, Sendable { case concurrency, rate }

    public var provider: String
    public var reason: Reason
    public var retryAt: Date

    public init(provider: String, reason: Reason, retryAt: Date) {
        self.provider = provider
        self.reason = reason
        self.retryAt = retryAt
    }

    public var description: String {
        "\(provider) is at its \(reason == .rate ? "submission rate" : "concurrency") limit"
    }
}

/// A provider's limits as they stand now.
public struct ProviderLimitState: Sendable, Equatable {
    public var provider: String
    /// Provider tasks open now (jobs `dispatching` or `running`).
    public var inFlight: Int
    /// The current concurrency limit (nil: none), after adapting.
    public var concurrency: Double?
    /// The current submissions a second (nil: none), after adapting.
    public var requestsPerSecond: Double?
    /// Submission tokens left now.
    public var tokens: Double?

    public init(provider: String, inFlight: Int, concurrency: Double?, requestsPerSecond: Double?, tokens: Double?) {
        self.provider = provider
        self.inFlight = inFlight
        self.concurrency = concurrency
        self.requestsPerSecond = requestsPerSecond
        self.tokens = tokens
    }

    /// How many more submissions would be admitted now.
    public var room: Int {
        var room = Int.max
        if let concurrency { room = min(room, max(0, Int(max(1, concurrency.rounded(.down))) - inFlight)) }
        if let tokens { room = min(room, Int(tokens.rounded(.down))) }
        return max(0, room)
    }
}

/// The arithmetic of adaptive limits, one place for every store backend.
public enum AdaptiveLimit {
    /// Seconds without a throttle after which a provider's limits are back at their maximum.
    public static let forgetSeconds = 60.0

    /// The row as stored: nil fields are "no limit".
    public struct Row: Sendable, Equatable {
        public var concurrency: Double?
        public var rate: Double?
        public var tokens: Double
        public var refilledAt: Double
        public var decreasedAt: Double?

        public init(concurrency: Double?, rate: Double?, tokens: Double, refilledAt: Double, decreasedAt: Double?) {
            self.concurrency = concurrency
            self.rate = rate
            self.tokens = tokens
            self.refilledAt = refilledAt
            self.decreasedAt = decreasedAt
        }

        /// A fresh row at the configured maximum.
        public static func initial(_ limits: ProviderLimits, now: Double) -> Row {
            Row(
                concurrency: limits.maxConcurrency.map(Double.init), rate: limits.maxRequestsPerSecond,
                tokens: limits.burst, refilledAt: now, decreasedAt: nil)
        }

        /// The row held to the configuration as it is now (a maximum lowered or lifted since).
        public func clamped(to limits: ProviderLimits) -> Row {
            var row = self
            if let max = limits.maxConcurrency {
                row.concurrency = min(Double(max), row.concurrency ?? Double(max))
            }
            if let max = limits.maxRequestsPerSecond {
                row.rate = min(max, row.rate ?? max)
            } else {
                row.rate = nil
            }
            return row
        }

        /// The row held to the configuration and, once `forgetSeconds` passed without a
        /// throttle, back at the configured maximum (none, for a limit only learned): tasks that
        /// never end (stuck at the provider) could otherwise fill a learned limit for good, and
        /// with no submission answered it would never grow back.
        public func settled(_ limits: ProviderLimits, now: Double) -> Row {
            var row = clamped(to: limits)
            if let last = row.decreasedAt, now - last >= AdaptiveLimit.forgetSeconds {
                row.concurrency = limits.maxConcurrency.map(Double.init)
                row.rate = limits.maxRequestsPerSecond
                row.decreasedAt = nil
            }
            return row
        }

        /// Tokens refilled up to `now`.
        public func refilled(_ limits: ProviderLimits, now: Double) -> Row {
            guard let rate else { return self }
            var row = self
            row.tokens = min(limits.burst, tokens + max(0, now - refilledAt) * rate)
            row.refilledAt = now
            return row
        }
    }

    /// Each provider's limits as they stand at `now`, from its open tasks and its stored row.
    public static func states(open: [String: Int], rows: [String: Row], now: Double) -> [ProviderLimitState] {
        var states: [String: ProviderLimitState] = [:]
        for (provider, count) in open {
            states[provider] = ProviderLimitState(
                provider: provider, inFlight: count, concurrency: nil, requestsPerSecond: nil, tokens: nil)
        }
        for (provider, row) in rows {
            var state =
                states[provider]
                ?? ProviderLimitState(
                    provider: provider, inFlight: 0, concurrency: nil, requestsPerSecond: nil, tokens: nil)
            if let decreasedAt = row.decreasedAt, now - decreasedAt >= AdaptiveLimit.forgetSeconds {
                // Back at a maximum this process may not know: the next admission applies it.
                states[provider] = state
                continue
            }
            state.concurrency = row.concurrency
            state.requestsPerSecond = row.rate
            state.tokens = row.rate.map { min(max(1, $0), row.tokens + max(0, now - row.refilledAt) * $0) }
            states[provider] = state
        }
        return states.values.sorted { $0.provider < $1.provider }
    }

    /// Whether a submission may go with `inFlight` tasks open; the row after taking its token.
    public static func admit(_ row: Row, inFlight: Int, limits: ProviderLimits, provider: String, now: Double)
        -> Result<
            Row, ProviderAtLimit
        >
    {
        let row = row.settled(limits, now: now).refilled(limits, now: now)
        if let concurrency = row.concurrency, Double(inFlight) >= max(1, concurrency.rounded(.down)) {
            return .failure(
                ProviderAtLimit(provider: provider, reason: .concurrency, retryAt: Date(timeIntervalSince1970: now + 1))
            )
        }
        if let rate = row.rate, rate > 0 {
            guard row.tokens >= 1 else {
                let wait = (1 - row.tokens) / rate
                return .failure(
                    ProviderAtLimit(provider: provider, reason: .rate, retryAt: Date(timeIntervalSince1970: now + wait))
                )
            }
            var taken = row
            taken.tokens -= 1
            return .success(taken)
        }
        return .success(row)
    }

    /// The row after a call's outcome, or nil when it does not change. A throttle with no
    /// concurrency limit known starts one at half the tasks open now.
    public static func adapt(_ row: Row?, feedback: LimitFeedback, inFlight: Int, now: Double) -> Row? {
        let limits = feedback.limits
        if feedback.throttled {
            var next = (row ?? .initial(limits, now: now)).settled(limits, now: now).refilled(limits, now: now)
            if let last = next.decreasedAt, now - last < LimitFeedback.decreaseSpacing { return nil }
            // What a throttle means follows the limit the provider is known to have: a provider
            // that limits its request rate (and no concurrency) is slowed, not narrowed; one that
            // limits concurrency, or of which nothing is known, is narrowed.
            if next.concurrency != nil || limits.maxRequestsPerSecond == nil {
                let open = Double(max(1, inFlight))
                next.concurrency = max(1, min(next.concurrency ?? open, open) / 2)
            }
            if let rate = next.rate, let max = limits.maxRequestsPerSecond {
                next.rate = Swift.max(max / 64, rate / 2)
                next.tokens = min(next.tokens, 0)
            }
            next.decreasedAt = now
            return next
        }
        guard let stored = row else { return nil }  // never throttled: nothing to grow back
        var next = stored.settled(limits, now: now)
        if next != stored.clamped(to: limits) { return next }  // forgotten: back at the maximum
        var changed = false
        if let concurrency = next.concurrency {
            let ceiling = limits.maxConcurrency.map(Double.init) ?? .infinity
            if concurrency < ceiling {
                next.concurrency = min(ceiling, concurrency + 1 / concurrency)
                changed = true
            }
        }
        if let rate = next.rate, let max = limits.maxRequestsPerSecond, rate < max {
            next = next.refilled(limits, now: now)
            next.rate = min(max, rate + 1 / rate)
            changed = true
        }
        return changed ? next : nil
    }
}
