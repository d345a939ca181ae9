import Foundation
import GenGateCore
import GenGateProviders
import GenGateStore

/// The moves every worker makes on a job, written once: apply a compare-and-set and publish its
/// events after the commit; fail or schedule a retry; give a lease back.
extension ServiceEnvironment {
    /// Applies `change`; publishes its events if it took. Nil when the job moved on meanwhile.
    public func apply(_ change: Transition) async throws -> Generation? {
        let updated = try await store.transition(change)
        if updated != nil { publish(change.events) }
        return updated
    }

    /// After a failed attempt: `retry_wait` with back-off when the error is retryable, attempts
    /// remain and the deadline allows; otherwise `failed`. Returns the job as changed, or nil if
    /// it moved on meanwhile (e.g. cancelled).
    public func failOrRetry(_ generation: Generation, error: GenGateError, now: Date = Date()) async throws -> Generation? {
        let jobs = config.jobs
        let backoff = Backoff(base: jobs.retryBaseSeconds, cap: jobs.retryMaxSeconds)
        let wait = backoff.delay(afterAttempt: generation.attempts, retryAfter: error.retryAfter)
        let retryAt = now.addingTimeInterval(wait)
        if error.retryable && generation.attempts < jobs.maxAttempts && retryAt < generation.deadlineAt {
            var change = Transition.of(generation, to: .retryWait, at: now)
            change.error = .some(error)
            change.lease = .release
            change.nextActionAt = .some(retryAt)
            change.events = [Event(.generationRetrying, generationID: generation.id, at: now, payload: [
                "attempt": .number(Double(generation.attempts)),
                "retry_at": .string(Timestamp.format(retryAt)),
                "error": Self.errorPayload(error),
            ])]
            logger.info("retrying", metadata: ["generation": "\(generation.id)", "error": "\(error)", "in_seconds": "\(Int(wait))"])
            return try await apply(change)
        }
        var final = error
        if error.retryable && generation.attempts >= jobs.maxAttempts {
            final.message = "\(error.message) (gave up after \(generation.attempts) attempts)"
            final.retryable = false
        }
        return try await fail(generation, error: final, now: now)
    }

    /// Ends a job as failed with `error`.
    public func fail(_ generation: Generation, error: GenGateError, now: Date = Date()) async throws -> Generation? {
        var change = Transition.of(generation, to: .failed, at: now)
        change.error = .some(error)
        change.events = [Event(.generationFailed, generationID: generation.id, at: now, payload: [
            "error": Self.errorPayload(error),
            "attempts": .number(Double(generation.attempts)),
            "provider": .string(generation.provider),
            "model": .string(generation.request.model),
        ])]
        logger.warning("failed", metadata: ["generation": "\(generation.id)", "error": "\(error)"])
        return try await apply(change)
    }

    /// Gives a lease back so another worker can take the job at once. Runs even when the calling
    /// task is cancelled (shutdown is exactly when it matters).
    public func releaseLease(_ generation: Generation, nextActionAt: Date = Date()) async {
        let store = self.store, owner = instance
        _ = await Task.detached {
            try? await store.releaseLease(id: generation.id, owner: owner, version: generation.version, nextActionAt: nextActionAt)
        }.value
    }

    /// Until when a lease taken now lasts.
    public func leaseUntil(_ now: Date = Date()) -> Date {
        now.addingTimeInterval(config.jobs.leaseSeconds)
    }

    public static func errorPayload(_ error: GenGateError) -> JSONValue {
        .object(["code": .string(error.code.rawValue), "message": .string(error.message), "retryable": .bool(error.retryable)])
    }

    /// A `provider.call` event: the outcome of one call to a provider, for the monitor.
    public func providerCall(provider: String, model: String, operation: String, started: ContinuousClock.Instant,
                             error: GenGateError?) -> Event {
        let elapsed = ContinuousClock.now - started
        let milliseconds = Double(elapsed.components.seconds) * 1_000 + Double(elapsed.components.attoseconds) / 1e15
        var payload: [String: JSONValue] = [
            "provider": .string(provider), "model": .string(model), "operation": .string(operation),
            "latency_ms": .number(milliseconds.rounded()), "outcome": .string(error == nil ? "ok" : "error"),
        ]
        if let error {
            payload["error_code"] = .string(error.code.rawValue)
            payload["retryable"] = .bool(error.retryable)
        }
        return Event(.providerCall, payload: payload)
    }
}

extension ServiceEnvironment {
    /// Runs `operation` (a provider call, a download) while renewing `generation`'s lease every
    /// third of the lease period, so a slow call never lets another worker take the job over and
    /// repeat it. The lease is held at `generation.version`; if that changes (the job was
    /// cancelled) renewing stops and the operation's result will find the job moved on.
    public func keepingLease<T>(_ generation: Generation, _ operation: () async throws -> T) async throws -> T {
        let store = self.store, owner = instance
        let period = config.jobs.leaseSeconds
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while true {
                    try await Task.sleep(for: .milliseconds(Int(period * 1_000 / 3)))
                    let until = Date().addingTimeInterval(period)
                    guard try await store.renewLease(id: generation.id, owner: owner, version: generation.version, until: until) else {
                        return
                    }
                }
            }
            defer { group.cancelAll() }
            return try await operation()
        }
    }
}

extension ServiceEnvironment {
    /// After a compare-and-set lost, finds out why: a job that ended meanwhile (cancelled, or
    /// failed past its deadline) has its provider task cancelled too, so nobody pays for it.
    public func cancelProviderTaskIfEnded(_ generationID: String, adapter: any ProviderAdapter, taskID: String) async throws {
        if let current = try await store.generation(id: generationID), current.status.isTerminal, current.status != .completed {
            await cancelProviderTask(adapter, taskID: taskID)
        }
    }

    /// Asks the provider to stop a task, where it can; a refusal is logged, not thrown.
    public func cancelProviderTask(_ adapter: any ProviderAdapter, taskID: String) async {
        guard adapter.capabilities.cancel else { return }
        do {
            try await adapter.cancel(taskID: taskID)
        } catch {
            logger.notice("provider cancel failed", metadata: ["task": "\(taskID)", "error": "\(error)"])
        }
    }
}
