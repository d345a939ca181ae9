import Foundation
import GenGateCore
import GenGateProviders

/// Every number the job engine runs by, in one value built once from configuration: leases,
/// the sweep, draining on shutdown, retries, the check schedule and the bounds on checks.
public struct JobPolicy: Sendable, Equatable {
    /// How long a worker owns a job while it acts on it before others may take it over.
    public var leaseSeconds: Double
    public var sweepIntervalSeconds: Double
    /// An unleased job due this long ago is assumed to have lost its message.
    public var staleAfterSeconds: Double
    /// How long a stopping service lets in-flight work finish before cancelling it. Provider
    /// submissions under way are never cancelled: their answer is always recorded.
    public var drainSeconds: Double
    public var retry: RetryPolicy
    /// Retry policies of single providers, over `retry`.
    public var providerRetry: [String: RetryPolicy]
    /// Check schedules by model id, then by kind of model.
    public var modelSchedules: [String: CheckSchedule]
    public var kindSchedules: [ModelInfo.Kind: CheckSchedule]
    /// Consecutive failed status calls before the attempt counts as failed.
    public var maxCheckFailures: Int
    /// Status calls one poller makes to one provider at once.
    public var checkConcurrency: Int
    /// Due checks one poller claims in one go.
    public var checkBatch: Int
    /// Times a handler may fail on one job (an unexpected error, not a provider's) before the job
    /// fails with `internal_error` instead of being tried forever.
    public var maxHandlerFailures: Int
    /// How long events are kept; older ones expire (every job has ended long before).
    public var eventRetentionSeconds: Double
    /// How long an `Idempotency-Key` is remembered.
    public var idempotencyWindowSeconds: Double
    /// Submissions in a row that found a provider unreachable before its circuit opens, and how
    /// long it stays open (`ProviderCircuit`).
    public var circuitThreshold: Int
    public var circuitCoolDownSeconds: Double

    public init(
        leaseSeconds: Double = 30, sweepIntervalSeconds: Double = 1, staleAfterSeconds: Double = 5,
        drainSeconds: Double = 20, retry: RetryPolicy = RetryPolicy(), providerRetry: [String: RetryPolicy] = [:],
        modelSchedules: [String: CheckSchedule] = [:],
        kindSchedules: [ModelInfo.Kind: CheckSchedule] = [.image: .image, .video: .video, .text: .text],
        maxCheckFailures: Int = 5, checkConcurrency: Int = 64, checkBatch: Int = 256, maxHandlerFailures: Int = 5,
        eventRetentionSeconds: Double = 30 * 86_400, idempotencyWindowSeconds: Double = 86_400,
        circuitThreshold: Int = 5, circuitCoolDownSeconds: Double = 30
    ) {
        self.leaseSeconds = leaseSeconds
        self.sweepIntervalSeconds = sweepIntervalSeconds
        self.staleAfterSeconds = staleAfterSeconds
        self.drainSeconds = drainSeconds
        self.retry = retry
        self.providerRetry = providerRetry
        self.modelSchedules = modelSchedules
        self.kindSchedules = kindSchedules
        self.maxCheckFailures = maxCheckFailures
        self.checkConcurrency = checkConcurrency
        self.checkBatch = checkBatch
        self.maxHandlerFailures = maxHandlerFailures
        self.eventRetentionSeconds = eventRetentionSeconds
        self.idempotencyWindowSeconds = idempotencyWindowSeconds
        self.circuitThreshold = circuitThreshold
        self.circuitCoolDownSeconds = circuitCoolDownSeconds
    }

    /// The check schedule of `model`: its own, else its kind's, else the image one.
    public func schedule(model: String, kind: ModelInfo.Kind?) -> CheckSchedule {
        modelSchedules[model] ?? kind.flatMap { kindSchedules[$0] } ?? .image
    }

    /// How the jobs of `provider` are retried: its own policy, else the general one.
    public func retry(for provider: String) -> RetryPolicy { providerRetry[provider] ?? retry }

    /// Until when a lease taken at `now` lasts.
    public func leaseUntil(_ now: Date) -> Date { now.addingTimeInterval(leaseSeconds) }
}

/// How failed attempts are retried: exponential back-off with full jitter and a cap, longer for
/// rate limits (the provider asked for less), a provider's Retry-After as a floor, at most
/// `maxAttempts` submissions, never past the deadline.
public struct RetryPolicy: Sendable, Equatable {
    public var maxAttempts: Int
    public var baseSeconds: Double
    public var maxSeconds: Double
    /// The back-off base after a rate limit that gave no Retry-After.
    public var rateLimitBaseSeconds: Double

    public init(
        maxAttempts: Int = 4, baseSeconds: Double = 2, maxSeconds: Double = 60, rateLimitBaseSeconds: Double = 30
    ) {
        self.maxAttempts = maxAttempts
        self.baseSeconds = baseSeconds
        self.maxSeconds = maxSeconds
        self.rateLimitBaseSeconds = rateLimitBaseSeconds
    }

    public enum Decision: Sendable, Equatable {
        case retry(at: Date)
        /// Fail with this error (the one given, told that no retries are left where that is why).
        case fail(GenGateError)
    }

    /// The back-off after `error`: a rate limit without Retry-After starts at
    /// `rateLimitBaseSeconds` (and may grow past `maxSeconds`, up to four times that base).
    public func backoff(after error: GenGateError) -> Backoff {
        guard error.code == .rateLimited, error.retryAfter == nil else {
            return Backoff(base: baseSeconds, cap: maxSeconds)
        }
        return Backoff(base: rateLimitBaseSeconds, cap: max(maxSeconds, rateLimitBaseSeconds * 4))
    }

    /// What to do after attempt number `attempts` failed with `error`.
    public func decide(
        after error: GenGateError, attempts: Int, deadline: Date, now: Date,
        random: (ClosedRange<Double>) -> Double = { Double.random(in: $0) }
    ) -> Decision {
        var wait = backoff(after: error).delay(afterAttempt: attempts, retryAfter: error.retryAfter, random: random)
        // A back-off that would pass the deadline is shortened to fit, as long as the provider's
        // own Retry-After (the floor) still leaves a second before it.
        let remaining = deadline.timeIntervalSince(now) - 1
        let floor = error.retryAfter ?? 0
        if wait >= remaining, floor < remaining { wait = random(floor...remaining) }
        let retryAt = now.addingTimeInterval(wait)
        if error.retryable && attempts < maxAttempts && retryAt < deadline {
            return .retry(at: retryAt)
        }
        var final = error
        if error.retryable && attempts >= maxAttempts {
            final.message = "\(error.message) (gave up after \(attempts) attempts)"
            final.retryable = false
        } else if error.retryable {
            final.message = "\(error.message) (no time left before the deadline to try again)"
            final.retryable = false
        }
        return .fail(final)
    }
}
