import Foundation
import GenGateCore
import GenGateObjects
import GenGateProviders
import GenGateStore
import Logging

/// What the engine's steps work with: the store, the providers, object storage, the policy, and
/// two ways to speak to the rest of the system that the services wire to the bus: `publish`
/// (events already committed) and `notify` (a hint that a step should look at a job now).
/// Nothing here knows ZeroMQ or processes, so the steps run as they are in unit tests.
public struct JobContext: Sendable {
    /// Unique per process ("poller-4242@host"): the owner name of the leases it takes.
    public let instance: String
    public let store: any GenerationStore
    public let providers: ProviderRegistry
    public let objects: any ObjectStore
    public let policy: JobPolicy
    public let logger: Logger
    public let failPoints: FailPoints
    /// This process's circuits, one per provider.
    public let circuit: ProviderCircuit
    /// Jobs this process holds back while their provider is at its limit.
    public let waiting = WaitingRoom()
    /// The prefix of output object keys.
    public let objectPrefix: String
    /// The base of output URLs handed to clients.
    public let publicBaseURL: String
    public let publish: @Sendable ([Event]) -> Void
    /// Prepares input images for submissions; nil in a process that submits no jobs with images.
    public let images: (any InputImagePreparer)?
    public let notify: @Sendable (_ step: Lifecycle.Step, _ generationID: String, _ reason: String) -> Void
    /// What each submission costs (`Attempt.cost`).
    public let prices: PriceTable

    public init(
        instance: String, store: any GenerationStore, providers: ProviderRegistry, objects: any ObjectStore,
        policy: JobPolicy, logger: Logger, failPoints: FailPoints = .none, objectPrefix: String = "outputs",
        publicBaseURL: String = "", callbackBase: String? = nil,
        publish: @escaping @Sendable ([Event]) -> Void = { _ in }, images: (any InputImagePreparer)? = nil,
        notify: @escaping @Sendable (Lifecycle.Step, String, String) -> Void = { _, _, _ in },
        prices: PriceTable = PriceTable()
    ) {
        self.prices = prices
        self.images = images
        self.instance = instance
        self.store = store
        self.providers = providers
        self.objects = objects
        self.policy = policy
        self.logger = logger
        self.failPoints = failPoints
        circuit = ProviderCircuit(threshold: policy.circuitThreshold, coolDown: policy.circuitCoolDownSeconds)
        self.objectPrefix = objectPrefix
        self.publicBaseURL = publicBaseURL
        self.callbackBase = callbackBase
        self.publish = publish
        self.notify = notify
    }

    /// GenGate's public base URL when one is configured (providers can reach it): callbacks are
    /// asked for then. Nil: polling alone.
    public let callbackBase: String?

    /// Whether jobs of `adapter` ask for callbacks here.
    public func usesCallbacks(_ adapter: any ProviderAdapter) -> Bool {
        callbackBase != nil && adapter.capabilities.callbacks && providers.callbackTokens[adapter.name] != nil
    }

    /// The callback an attempt asks for, or nil.
    public func callback(_ adapter: any ProviderAdapter, generationID: String, attempt: Int) -> ProviderCallback? {
        guard usesCallbacks(adapter), let base = callbackBase, let tokens = providers.callbackTokens[adapter.name]
        else { return nil }
        return ProviderCallback(
            url: tokens.url(base: base, provider: adapter.name, generationID: generationID, attempt: attempt),
            secret: tokens.secret(provider: adapter.name, generationID: generationID, attempt: attempt))
    }

    /// The check schedule of a job's task: its model's (or kind's), stretched where a callback
    /// says when the task ends, so polling is only the safety net.
    public func schedule(of generation: Generation) -> CheckSchedule {
        let model = generation.model
        let schedule = policy.schedule(model: model, kind: providers.model(model)?.kind)
        guard let adapter = try? providers.adapter(generation.provider), usesCallbacks(adapter) else { return schedule }
        return schedule.stretched(by: CheckSchedule.callbackStretch)
    }

    /// Until when a lease taken now lasts.
    public func leaseUntil(_ now: Date = Date()) -> Date { policy.leaseUntil(now) }

    /// Applies `change`; publishes its events if it took. Nil when the job moved on meanwhile.
    /// Throws `internal_error` for a move the lifecycle does not allow (a bug, never data).
    public func apply(_ change: Transition) async throws -> Generation? {
        guard Lifecycle.allows(from: change.from, to: change.to) else {
            throw GenGateError(
                .internalError, "illegal move \(change.from.rawValue) → \(change.to.rawValue) of \(change.id)")
        }
        let updated = try await store.transition(change)
        if let updated {
            publish(change.events)
            if updated.status.isTerminal {
                if updated.batchID != nil { await batchJobEnded(updated) }
                // Jobs whose input is this one's output move on now (only jobs that make images
                // can be one's input: the others cost no look).
                if providers.model(updated.model)?.kind ?? .image == .image { await releaseWaiting(on: updated.id) }
            }
        }
        return updated
    }

    /// The next model of `generation`'s fallback route after its current one that can be used
    /// here now (configured, and its provider's circuit letting submissions go), wrapping round
    /// to the start; nil when there is none other. `wrapped`: it is at or before the current one.
    public func nextOnRoute(_ generation: Generation, now: Date = Date(), checkingCircuits: Bool = true) -> (
        move: RouteMove, wrapped: Bool
    )? {
        let route = generation.route
        guard route.count > 1 else { return nil }
        for step in 1..<route.count {
            let index = (generation.routeIndex + step) % route.count
            guard let model = providers.model(route[index]), providers.adapters[model.provider] != nil else { continue }
            if checkingCircuits, !circuit.wouldAdmit(model.provider, now: now) { continue }
            return (RouteMove(index: index, provider: model.provider), index <= generation.routeIndex)
        }
        return nil
    }

    /// Whether `error` is the provider's failure (one another provider may not have), as opposed
    /// to one of ours (storing outputs, a bug), which a fallback would only pay for again.
    static func isProviders(_ error: GenGateError) -> Bool {
        switch error.code {
        case .rateLimited, .providerError, .providerUnavailable, .providerTimeout: return true
        default: return false
        }
    }

    /// The `generation.fallback` event of moving `generation` along its route.
    public func fallbackEvent(_ generation: Generation, to move: RouteMove, because: String, at now: Date) -> Event {
        Event(
            .generationFallback(.init(from: generation.model, to: generation.route[move.index], because: because)),
            generationID: generation.id, at: now)
    }

    /// After a failed attempt: `retry_wait` as the retry policy says, otherwise `failed`; `attempt`
    /// (the failed attempt's outcome) commits with it. Nil if the job moved on meanwhile.
    ///
    /// A job on a fallback route moves to the route's next model after a retryable failure, at
    /// once (the failure says nothing against the next provider); after the last it starts the
    /// route again from the first, with the usual back-off. `jobs.max_attempts` counts every
    /// model's attempts together.
    public func failOrRetry(
        _ generation: Generation, error: GenGateError, attempt: AttemptUpdate? = nil,
        limitFeedback: LimitFeedback? = nil, preparationFailures: Int? = nil, now: Date = Date()
    ) async throws -> Generation? {
        // Attempts that delivered (a model asked for its outputs in several calls) are not failures.
        let delivered = try await store.attempts(generationID: generation.id).filter { $0.state == .succeeded }.count
        // Preparing the input images failed (`preparationFailures` times in a row, none of them
        // an attempt): they count against the same budget, so an image URL that keeps failing
        // ends the job instead of being fetched until its deadline.
        let failures = preparationFailures ?? max(1, generation.attempts - delivered)
        let retry = policy.retry(for: generation.provider)
        var decision = retry.decide(after: error, attempts: failures, deadline: generation.deadlineAt, now: now)
        var fallback: RouteMove?
        var retryNow = false
        if error.retryable, Self.isProviders(error),
            let next = nextOnRoute(generation, now: now, checkingCircuits: false)
        {
            if !next.wrapped, failures < retry.maxAttempts, now < generation.deadlineAt {
                // On to the next model now: this provider's back-off and Retry-After are its own.
                decision = .retry(at: now)
                retryNow = true
                fallback = next.move
            } else if case .retry = decision {
                fallback = next.move  // round again from the first, after the back-off
            }
        }
        switch decision {
        case .retry(let backedOff):
            let retryAt = retryNow ? now : backedOff
            var change = Transition.of(generation, to: .retryWait, at: now)
            change.routeMove = fallback
            change.error = .some(error)
            change.lease = .release
            change.nextActionAt = .some(retryAt)
            change.attemptUpdate = attempt
            change.limitFeedback = limitFeedback
            // Failed preparations in a row, kept in `check_failures` while the job waits (a
            // provider's failure, or a submission, starts the count again).
            change.checkFailures = preparationFailures ?? 0
            change.events = [
                Event(
                    .generationRetrying(
                        .init(
                            attempt: generation.attempts, retryAt: retryAt, error: error,
                            provider: generation.provider, model: generation.model)),
                    generationID: generation.id, at: now)
            ]
            if let fallback {
                change.events.append(fallbackEvent(generation, to: fallback, because: error.code.rawValue, at: now))
            }
            logger.info(
                "retrying",
                metadata: [
                    "generation": "\(generation.id)", "error": "\(error)",
                    "in_seconds": "\(Int(retryAt.timeIntervalSince(now)))",
                ])
            let applied = try await apply(change)
            if applied != nil && retryNow { notify(.submit, generation.id, "fallback") }
            return applied
        case .fail(let final):
            if error.retryable && generation.deadlineCancels && failures < retry.maxAttempts {
                // No time left before its Cancel-After: that is what ends it.
                return try await expire(generation, final.message, attempt: { _ in attempt }, now: now)
            }
            return try await fail(generation, error: final, attempt: attempt, limitFeedback: limitFeedback, now: now)
        }
    }

    /// Ends a job as failed with `error`; `attempt` commits with it.
    public func fail(
        _ generation: Generation, error: GenGateError, attempt: AttemptUpdate? = nil,
        limitFeedback: LimitFeedback? = nil, now: Date = Date()
    ) async throws -> Generation? {
        var change = Transition.of(generation, to: .failed, at: now)
        change.error = .some(error)
        change.attemptUpdate = attempt
        change.limitFeedback = limitFeedback
        change.events = [
            Event(
                .generationFailed(
                    .init(
                        error: error, attempts: generation.attempts, provider: generation.provider,
                        model: generation.model)),
                generationID: generation.id, at: now)
        ]
        logger.warning("failed", metadata: ["generation": "\(generation.id)", "error": "\(error)"])
        return try await apply(change)
    }

    /// Gives a lease back so another worker can take the job at once. The store's write is not
    /// cancelled with the caller, so this works during shutdown, exactly when it matters.
    public func releaseLease(_ generation: Generation, nextActionAt: Date = Date()) async {
        _ = try? await store.releaseLease(
            id: generation.id, owner: instance, version: generation.version, nextActionAt: nextActionAt)
    }

    /// Runs `operation` (a provider call, a download) while renewing `generation`'s lease every
    /// third of the lease period, so a slow call never lets another worker take the job over and
    /// repeat it. If the lease is lost (the job moved on, or it expired and was voided), renewing
    /// stops and the compare-and-set that records the operation's result finds the job moved on.
    ///
    /// With `stopIfLost` (work that is free to repeat: a download, an upload), losing the lease
    /// also stops `operation`, which is cancelled and `LeaseLost` thrown: another worker may be
    /// doing the same work by now. A lease counts as lost when the store says so, or when it has
    /// lapsed while renewals failed. Without it (a provider call, which costs money and whose
    /// answer must be recorded), a lost lease never stops `operation`: its result is returned.
    /// Cancelling the caller does cancel `operation` (it is a child task): a provider call that
    /// must outlive a shutdown runs in a task shutdown does not cancel (`Submission.dispatch`).
    public func keepingLease<T: Sendable>(
        _ generation: Generation, stopIfLost: Bool = false, _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let store = self.store
        let owner = instance
        let period = policy.leaseSeconds
        // `.some`: the operation's result; nil: the renewals ended.
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                // The lease as of the caller's last renewal; at least one renewal's time from now,
                // should the caller have renewed it since without telling `generation`.
                var heldUntil = max(
                    generation.leaseExpiresAt ?? .distantPast, Date().addingTimeInterval(period / 3))
                while true {
                    // Never throws on cancellation: a cancelled renewal must not end the group
                    // before the operation's result is in.
                    try? await Task.sleep(for: .milliseconds(Int(period * 1_000 / 3)))
                    if Task.isCancelled { return nil }
                    let until = Date().addingTimeInterval(period)
                    do {
                        guard
                            try await store.renewLease(
                                id: generation.id, owner: owner, version: generation.version, until: until)
                        else {
                            if stopIfLost { throw LeaseLost(generationID: generation.id) }
                            return nil  // lost: the job moved on
                        }
                        heldUntil = until
                    } catch let lost as LeaseLost {
                        throw lost
                    } catch {
                        // A passing store error: try again at the next third, unless the lease
                        // has lapsed meanwhile.
                        if stopIfLost && Date() >= heldUntil { throw LeaseLost(generationID: generation.id) }
                    }
                }
            }
            group.addTask { try await operation() }
            defer { group.cancelAll() }
            while let ended = try await group.next() {
                if let value = ended { return value }
            }
            throw CancellationError()  // not reached: the operation's task always ends the loop
        }
    }

    public enum CancelResult: Sendable, Equatable {
        case cancelled
        /// The provider offers no way to cancel: the task runs to its end.
        case unsupported
        /// The provider refused for good (e.g. the task already ended).
        case refused
        /// The provider could not be asked now; asking again later may work.
        case failed
        /// The task had ended before it could be stopped: it was paid for.
        case alreadyEnded
    }

    /// Asks the provider to stop a task, where it can; a failure is logged and returned, not thrown.
    @discardableResult
    public func cancelProviderTask(_ adapter: any ProviderAdapter, taskID: String) async -> CancelResult {
        guard adapter.capabilities.cancel else { return .unsupported }
        do {
            try await adapter.cancel(taskID: taskID)
            return .cancelled
        } catch is TaskAlreadyEnded {
            return .alreadyEnded
        } catch {
            logger.notice("provider cancel failed", metadata: ["task": "\(taskID)", "error": "\(error)"])
            if error is CancellationError { return .failed }
            return GenGateError.wrap(error).retryable ? .failed : .refused
        }
    }

    /// Runs one step's handler on one job; an unexpected error (not a provider's answer, which
    /// the steps handle) is counted on the job if the handler still holds its lease (so a
    /// store hiccup before the claim counts nothing), and after `maxHandlerFailures` of them
    /// the job fails with `internal_error` instead of being retried forever.
    public func guarding(_ generationID: String, step: Lifecycle.Step, _ body: () async throws -> Void) async {
        do {
            try await body()
        } catch is CancellationError {
            return
        } catch  where StoreError.isUnavailable(error) {
            // Contention, not a fault of this job: it is not counted against it. The lease runs
            // out (the store cannot take a release now either) and the sweep re-drives the job.
            logger.warning(
                "store busy; leaving the job for later",
                metadata: ["generation": "\(generationID)", "step": "\(step.rawValue)", "error": "\(error)"])
        } catch {
            let message = "\(step.rawValue) failed unexpectedly: \(error)"
            logger.error(
                "handler failed",
                metadata: ["generation": "\(generationID)", "step": "\(step.rawValue)", "error": "\(error)"])
            let job = try? await store.generation(id: generationID)
            let failed = Event(
                .generationFailed(
                    .init(
                        error: GenGateError(.internalError, message, retryable: false), attempts: job?.attempts,
                        provider: job?.provider, model: job?.model)),
                generationID: generationID)
            if let count = try? await store.recordHandlerFailure(
                id: generationID, owner: instance, message: message,
                limit: policy.maxHandlerFailures, event: failed, at: Date()),
                count >= policy.maxHandlerFailures
            {
                publish([failed])
            }
        }
    }

    /// The move that completes `generation`, every one of its `outputs` outputs stored, with its
    /// `generation.completed` event. The uploader makes it once it stored the last output; the
    /// dispatcher, when a synchronous call's answer brought every output the job still lacked.
    public func completion(of generation: Generation, outputs: Int, at now: Date = Date()) -> Transition {
        var change = Transition.of(generation, to: .completed, at: now)
        change.progress = 100
        change.error = .some(nil)
        change.events = [
            Event(
                .generationCompleted(
                    .init(
                        outputs: outputs, attempts: generation.attempts, provider: generation.provider,
                        model: generation.model,
                        durationMs: Int((now.timeIntervalSince(generation.createdAt) * 1_000).rounded()))),
                generationID: generation.id)
        ]
        return change
    }

    /// The `generation.output` event of an output stored under `stored`.
    public func outputEvent(_ generationID: String, index: Int, stored: StoredObject) -> Event {
        Event(
            .generationOutput(
                .init(
                    index: index, contentType: stored.contentType, bytes: stored.bytes, sha256: stored.sha256,
                    url: OutputURL.make(base: publicBaseURL, generationID: generationID, index: index))),
            generationID: generationID)
    }

    /// A `provider.call` event: the outcome of one call to a provider, for the monitor.
    public func providerCall(
        provider: String, model: String, operation: String, started: ContinuousClock.Instant,
        error: GenGateError?
    ) -> Event {
        let elapsed = ContinuousClock.now - started
        let milliseconds = Double(elapsed.components.seconds) * 1_000 + Double(elapsed.components.attoseconds) / 1e15
        return Event(
            .providerCall(
                .init(
                    provider: provider, model: model, operation: operation, latencyMs: Int(milliseconds.rounded()),
                    outcome: error == nil ? "ok" : "error", errorCode: error?.code.rawValue,
                    retryable: error?.retryable)))
    }
}

/// The lease on a job was lost while work for it ran (`JobContext.keepingLease(stopIfLost:)`).
public struct LeaseLost: Error, CustomStringConvertible {
    public var generationID: String
    public var description: String { "the lease on \(generationID) was lost; another worker may hold it" }
}
