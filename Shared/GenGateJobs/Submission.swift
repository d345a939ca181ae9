import Foundation
import GenGateCore
import GenGateProviders
import GenGateStore
import ServiceLifecycle
import Synchronization
import GenGateObjects

/// The dispatcher's step: takes one due job through a provider submission. Claim it; recover an
/// interrupted submission first if there is one; record the attempt (with the move to
/// `dispatching`) before the provider hears of it; submit; record the outcome together with the
/// move to `running` (or to `retry_wait` / `failed`) in one transaction.
///
/// Where a stop lands (docs/ARCHITECTURE.md, "Stopping"): before the attempt is recorded,
/// nothing happened. Between the record and the provider's answer, the provider may or may not
/// have the task: recovery asks it by client reference where it can, and otherwise submits again
/// and counts a possible double charge in the store. Once the call is made, shutdown does not
/// cancel it: the call and its record run to the end in a task of their own, which a draining
/// process waits for.
public struct Submission: Sendable {
    public let context: JobContext

    public init(context: JobContext) {
        self.context = context
    }

    var store: any GenerationStore { context.store }

    /// Handles a "look at this job" hint for the submit step.
    public func handle(_ generationID: String, heldAt: Int? = nil) async {
        await context.guarding(generationID, step: .submit) { try await dispatch(generationID, heldAt: heldAt) }
    }

    /// One pass of the step over `id`. Returns quietly when the job is not due or not ours.
    /// `heldAt`: the job was held back for its provider's limits at this version, and is let go
    /// from the waiting room now.
    public func dispatch(_ id: String, now: Date = Date(), heldAt: Int? = nil) async throws {
        let fromWaitingRoom = heldAt != nil
        guard
            var generation = try await store.claim(
                id: id, statuses: Lifecycle.Step.submit.claims, owner: context.instance,
                leaseUntil: context.leaseUntil(now), now: now, heldAt: heldAt)
        else { return }
        if now >= generation.deadlineAt {
            _ = try await context.expire(generation, "deadline passed before dispatch")
            return
        }
        var adapter: any ProviderAdapter
        var routeMove: RouteMove?
        var fallbackEvent: Event?
        do {
            adapter = try context.providers.adapter(generation.provider)
        } catch {
            // Not configured in this process (another one moved the job along its route): the
            // route's next model that is, if the job has one and no submission to settle.
            guard generation.status != .dispatching,
                let next = context.nextOnRoute(generation, now: now, checkingCircuits: false),
                let other = try? context.providers.adapter(next.move.provider)
            else {
                _ = try await context.fail(generation, error: GenGateError.wrap(error))
                return
            }
            fallbackEvent = context.fallbackEvent(generation, to: next.move, because: "not_configured", at: now)
            routeMove = next.move
            generation.routeIndex = next.move.index
            generation.provider = next.move.provider
            adapter = other
        }
        if Task.isShuttingDownGracefully {
            // Draining: start nothing new; whoever comes next takes it at once.
            await context.releaseLease(generation)
            return
        }
        var abandoned: AttemptUpdate?
        if generation.status == .dispatching {
            switch try await recover(generation, adapter: adapter) {
            case .done:
                return
            case .askAgainLater:
                let later = Date().addingTimeInterval(
                    max(1, context.policy.retry(for: generation.provider).baseSeconds))
                await context.releaseLease(generation, nextActionAt: min(later, generation.deadlineAt))
                return
            case .resubmit(let updated, let abandoning):
                generation = updated
                abandoned = abandoning
            }
        }
        let missing = generation.missingOutputIndexes
        if missing.isEmpty {
            // Every output was stored by earlier attempts: let the uploader complete it.
            var change = Transition.of(generation, to: .uploading)
            change.lease = .release
            change.nextActionAt = .some(Date())
            change.attemptUpdate = abandoned
            if try await context.apply(change) != nil { context.notify(.upload, id, "all outputs stored") }
            return
        }
        // `admit` is asked once per provider: it hands out the probe after a cool-down.
        var gate = context.circuit.admit(adapter.name, now: now)
        if case .wait = gate, let next = context.nextOnRoute(generation, now: now),
            let other = try? context.providers.adapter(next.move.provider)
        {
            // The provider keeps failing to answer and the job has a fallback whose circuit is
            // closed: go there now (an interrupted attempt was settled above).
            gate = context.circuit.admit(other.name, now: now)
            if gate == .go {
                fallbackEvent = context.fallbackEvent(generation, to: next.move, because: "circuit_open", at: now)
                routeMove = next.move
                generation.routeIndex = next.move.index
                generation.provider = next.move.provider
                adapter = other
            }
        }
        if case .wait(let until) = gate {
            // The provider keeps failing to answer: wait for its circuit rather than spend an
            // attempt (and a timeout) on it; an interrupted attempt stays as it is until then.
            // A job whose deadline comes first fails now, saying why.
            guard until < generation.deadlineAt else {
                if generation.deadlineCancels {
                    _ = try await context.expire(generation, "its Cancel-After comes before the circuit closes")
                    return
                }
                _ = try await context.fail(
                    generation,
                    error: GenGateError(
                        .providerUnavailable,
                        "\(adapter.name) kept failing to answer; its circuit is open past this job's deadline",
                        retryable: false))
                return
            }
            await context.releaseLease(generation, nextActionAt: until)
            return
        }
        if !fromWaitingRoom && context.waiting.isWaiting(adapter.name) {
            // Others wait for this provider's room already: first come, first served.
            await hold(generation, provider: adapter.name, front: false)
            return
        }
        // Input images are prepared before the attempt is recorded: one that fails ends the job
        // here, before any provider is paid.
        var prepared: (images: [ProviderImage], records: [PreparedInput])?
        if !(generation.request.images ?? []).isEmpty {
            do {
                prepared = try await prepareImages(generation)
            } catch let error as GenGateError {
                context.logger.notice(
                    "input images not usable", metadata: ["generation": "\(id)", "error": "\(error)"])
                // An interrupted attempt being given up is closed with it (and its possible
                // double charge kept), as a new attempt would have.
                let moved =
                    try await error.retryable
                    ? context.failOrRetry(
                        generation, error: error, attempt: abandoned,
                        preparationFailures: generation.checkFailures + 1)
                    : context.fail(generation, error: error, attempt: abandoned)
                if moved != nil, let abandoned, abandoned.possibleDoubleCharge {
                    reportPossibleDoubleCharge(generation, attempt: abandoned)
                }
                return
            }
        }
        let number = generation.attempts + 1
        let perCall = min(
            adapter.capabilities.maxOutputsPerCall,
            context.providers.model(generation.model)?.maxOutputsPerCall ?? Int.max)
        let outputIndexes = Array(missing.prefix(max(1, perCall)))
        let reference = "\(id)-a\(number)"
        var request = ProviderRequest(generation: generation, clientReference: reference, outputIndexes: outputIndexes)
        request.callback = context.callback(adapter, generationID: id, attempt: number)
        if let prepared { request.images = prepared.images }

        // Rule 4: the attempt is on record before the provider hears of it, in one transaction
        // with the move to `dispatching` (and with closing an interrupted attempt, if any).
        var change = Transition.of(generation, to: .dispatching)
        change.attempts = number
        change.newAttempt = Attempt(
            generationID: id, number: number, provider: adapter.name, clientReference: reference,
            providerTaskID: nil, outputIndexes: outputIndexes, state: .submitting, error: nil,
            createdAt: Date(), finishedAt: nil, model: generation.model,
            cost: context.prices.estimate(
                model: generation.model, n: outputIndexes.count, width: request.width, height: request.height,
                prompt: request.prompt, params: request.params
            ).amount, chargesOnAcceptance: adapter.capabilities.chargesOnAcceptance)
        change.attemptUpdate = abandoned
        change.routeMove = routeMove
        change.inputs = prepared?.records
        change.events = fallbackEvent.map { [$0] } ?? []
        change.admission = ProviderAdmission(
            provider: adapter.name, limits: context.providers.limits(adapter.name),
            replacing: generation.status == .dispatching && routeMove == nil)
        let applied: Generation?
        do {
            applied = try await context.apply(change)
        } catch is ProviderAtLimit {
            // Nothing was written: the job waits for room (its interrupted attempt, if any, as it is).
            await hold(generation, provider: adapter.name, front: fromWaitingRoom)
            return
        } catch let refusal as BudgetExceeded {
            // Nothing was written: this attempt, with what the job's attempts were charged or may
            // be, could cost more than the job holds back, and its key's budget has no room for
            // the difference. The job fails unsubmitted (as the store has it: a route move made
            // here was not written).
            let error = GenGateError(
                .budgetExceeded,
                "this attempt could take what the job costs \(Money.rounded(refusal.requested)) past what it holds back, and its key's \(refusal.period.rawValue) budget of \(refusal.budget) has no room for it (\(Money.rounded(refusal.committed)) committed)",
                retryable: false)
            let stored = try await store.generation(id: id)
            guard let stored, stored.version == generation.version,
                try await context.fail(stored, error: error, attempt: abandoned) != nil
            else {
                await context.releaseLease(stored ?? generation)
                return
            }
            if let abandoned, abandoned.possibleDoubleCharge { reportPossibleDoubleCharge(stored, attempt: abandoned) }
            return
        }
        guard let dispatching = applied else {
            if abandoned != nil {
                // Refused because the interrupted attempt was recorded meanwhile (or the job moved
                // on): let go and look again; recovery then resumes that task.
                await context.releaseLease(generation)
                context.notify(.submit, id, "attempt recorded meanwhile")
            }
            return
        }
        if let abandoned, abandoned.possibleDoubleCharge { reportPossibleDoubleCharge(generation, attempt: abandoned) }
        context.failPoints.reached(.beforeSubmit)

        // From here the provider may charge: the call and its record run to the end in a task
        // that shutdown does not cancel.
        let context = self.context
        try await Task {
            try await Submission(context: context).submitAndRecord(
                dispatching, adapter: adapter, request: request, attempt: number)
        }.value
    }

    /// The job's input images as its current model takes them, prepared while its lease is kept.
    func prepareImages(_ generation: Generation) async throws -> (images: [ProviderImage], records: [PreparedInput]) {
        guard let preparation = context.images else {
            throw GenGateError(.internalError, "this process does not prepare input images", retryable: true)
        }
        guard let model = context.providers.model(generation.model) else {
            throw GenGateError(.invalidImage, "\(generation.model) takes no input images", retryable: false)
        }
        return try await context.keepingLease(generation) { try await preparation.prepare(generation, model: model) }
    }

    /// Holds a job back while its provider is at its limit: unleased and due again after the
    /// waiting room's hold (in case this process dies), and in the waiting room meanwhile.
    func hold(_ generation: Generation, provider: String, front: Bool) async {
        await context.releaseLease(generation, nextActionAt: Date().addingTimeInterval(context.waiting.holdSeconds))
        context.waiting.hold(
            generation.id, version: generation.version, priority: generation.priority, provider: provider, front: front,
            context: context)
    }

    /// How a submission's call bears on its provider's adaptive limits.
    func limitFeedback(_ adapter: any ProviderAdapter, error: GenGateError?) -> LimitFeedback {
        LimitFeedback(
            provider: adapter.name, limits: context.providers.limits(adapter.name),
            throttled: error?.code == .rateLimited)
    }

    func submitAndRecord(
        _ dispatching: Generation, adapter: any ProviderAdapter, request: ProviderRequest, attempt number: Int
    ) async throws {
        if !adapter.capabilities.asynchronous {
            return try await generateAndRecord(dispatching, adapter: adapter, request: request, attempt: number)
        }
        let id = dispatching.id
        let started = ContinuousClock.now
        let taskID: String
        do {
            taskID = try await context.keepingLease(dispatching) { try await adapter.submit(request) }
        } catch {
            try await submissionFailed(
                dispatching, adapter: adapter, request: request, attempt: number, started: started, error: error)
            return
        }
        reportSubmission(adapter, request, started: started, error: nil)
        context.failPoints.reached(.afterSubmit)
        var submitted = AttemptUpdate(
            generationID: id, number: number, from: [.submitting], to: .submitted, providerTaskID: taskID)
        submitted = submitted.reported(request.charges.reported, prices: context.prices, model: request.model)
        // The answer must reach the store: a passing store error (a busy lock) is tried again.
        if try await persistently({
            try await startChecks(
                dispatching, taskID: taskID, attempt: number, record: submitted,
                feedback: limitFeedback(adapter, error: nil))
        }) {
            context.failPoints.reached(.afterRecord)
            return
        }
        // The job moved on while the provider answered: cancelled, past its deadline, or our
        // lease was voided and another worker took over. Put the task on record; the sweep stops
        // the tasks of ended jobs, and a worker recovering the job resumes it.
        if try await persistently({ try await store.updateAttempt(submitted) }) { return }
        // The worker that took over gave this attempt up and submitted again: nobody will ever
        // use this task. Stop it, and keep its id (and, if it cannot be stopped, the charge) on record.
        context.logger.warning(
            "submission answered after its attempt was abandoned; cancelling it",
            metadata: ["generation": "\(id)", "attempt": "\(number)"])
        let stopped = await context.cancelProviderTask(adapter, taskID: taskID)
        _ = try await persistently({
            try await store.updateAttempt(
                AttemptUpdate(
                    generationID: id, number: number, from: [.abandoned], to: .abandoned,
                    providerTaskID: taskID, possibleDoubleCharge: stopped != .cancelled
                ).reported(request.charges.reported, prices: context.prices, model: request.model))
        })
    }

    /// Says how a submission's provider call went: a `provider.call` event for the monitor, and the
    /// provider's circuit told (announced when that opened it).
    func reportSubmission(
        _ adapter: any ProviderAdapter, _ request: ProviderRequest, started: ContinuousClock.Instant,
        error: GenGateError?
    ) {
        context.publish([
            context.providerCall(
                provider: adapter.name, model: request.model, operation: "submit", started: started, error: error)
        ])
        guard context.circuit.record(adapter.name, error: error) else { return }
        let until = Date().addingTimeInterval(context.circuit.coolDown)
        context.logger.warning(
            "a provider keeps failing to answer; its circuit is open",
            metadata: ["provider": "\(adapter.name)", "seconds": "\(context.circuit.coolDown)"])
        context.publish([
            Event(.providerCircuitOpened(.init(provider: adapter.name, until: until)))
        ])
    }

    /// Records a submission that failed: the attempt closed, the job retried or failed.
    func submissionFailed(
        _ dispatching: Generation, adapter: any ProviderAdapter, request: ProviderRequest, attempt number: Int,
        started: ContinuousClock.Instant, error: any Error, charged: Bool = false
    ) async throws {
        let failure = GenGateError.wrap(error)
        // A charged failure came after a call already reported as answered (its outputs were lost).
        if !charged { reportSubmission(adapter, request, started: started, error: failure) }
        // A failure the provider did not state (a timeout, a dropped connection, a 5xx, an
        // unreadable answer) may hide a task it runs and bills: counted, like a crash here.
        let unknown = charged || SubmissionRecovery.mayHaveReachedProvider(failure)
        let closed = AttemptUpdate(
            generationID: dispatching.id, number: number, from: [.submitting], to: .failed, error: failure,
            possibleDoubleCharge: unknown
        ).reported(request.charges.reported, prices: context.prices, model: request.model)
        if unknown { reportPossibleDoubleCharge(dispatching, attempt: closed) }
        let feedback = limitFeedback(adapter, error: failure)
        if try await context.failOrRetry(dispatching, error: failure, attempt: closed, limitFeedback: feedback) == nil {
            _ = try await store.updateAttempt(closed)  // the job moved on; the attempt still ends
        }
    }

    /// A synchronous provider's call: the outputs come in its answer, so they are stored here and
    /// recorded with the attempt's success in one transaction, which completes the job when the
    /// call brought every output it lacked (else it goes to `uploading` with the call's outputs
    /// stored, and the uploader has the rest asked for). A stop during
    /// the call or before that record leaves the attempt `submitting`: recovery submits again
    /// and counts a possible double charge (no synchronous API finds a call by reference).
    func generateAndRecord(
        _ dispatching: Generation, adapter: any ProviderAdapter, request: ProviderRequest, attempt number: Int
    ) async throws {
        let id = dispatching.id
        let started = ContinuousClock.now
        let context = self.context
        let objects = context.objects
        let sequence = Mutex(0)
        let sink = GenerationSink(
            scratchFile: { try objects.scratchFile() },
            chunk: { text in
                let index = sequence.withLock { value -> Int in
                    defer { value += 1 }
                    return value
                }
                context.publish([
                    Event(
                        .generationStreamChunk(
                            .init(
                                attempt: number, index: index, outputIndex: request.outputIndexes.first ?? 0,
                                text: text)),
                        generationID: id)
                ])
            })
        var made: [GeneratedOutput] = []
        do {
            made = try await context.keepingLease(dispatching) { try await adapter.generate(request, into: sink) }
            guard !made.isEmpty else {
                throw GenGateError(
                    .providerError, "\(adapter.name): the call answered without outputs", retryable: true)
            }
        } catch {
            try await submissionFailed(
                dispatching, adapter: adapter, request: request, attempt: number, started: started, error: error)
            return
        }
        reportSubmission(adapter, request, started: started, error: nil)
        context.failPoints.reached(.afterSubmit)
        let kept: (outputs: [Output], events: [Event])
        let outputsMade = made
        do {
            kept = try await context.keepingLease(dispatching) {
                try await Submission(context: context).keepPatiently(
                    outputsMade, of: dispatching, attempt: number, provider: adapter.name)
            }
        } catch {
            for output in made { try? FileManager.default.removeItem(at: output.file) }
            // The provider made (and billed) these outputs, but they could not be kept even by
            // the deadline: the job fails rather than pay for them again.
            let failure = GenGateError(
                .uploadFailed,
                "storing the outputs failed, and the provider is not asked again (its call was paid): \(GenGateError.wrap(error).message)",
                retryable: false)
            try await submissionFailed(
                dispatching, adapter: adapter, request: request, attempt: number, started: started, error: failure,
                charged: true)
            return
        }
        let succeeded = AttemptUpdate(
            generationID: id, number: number, from: [.submitting], to: .succeeded,
            providerTaskID: "\(adapter.name):generated"
        ).reported(request.charges.reported, prices: context.prices, model: request.model)
        func record(_ generation: Generation) -> Transition {
            // With every output the job lacked in this answer, the job completes here; else the
            // uploader takes it on (and asks for the rest).
            let made = Set(kept.outputs.map(\.index))
            var change: Transition
            if generation.missingOutputIndexes.allSatisfy(made.contains) {
                let stored = generation.outputs.filter { $0.isStored && !made.contains($0.index) }.count
                change = context.completion(of: generation, outputs: stored + made.count)
                change.events = kept.events + change.events
            } else {
                change = Transition.of(generation, to: .uploading)
                change.progress = 90
                change.lease = .release
                change.nextActionAt = .some(Date())
                change.events = kept.events
            }
            change.newOutputs = kept.outputs
            change.attemptUpdate = succeeded
            change.limitFeedback = limitFeedback(adapter, error: nil)
            return change
        }
        func recorded(_ generation: Generation) {
            if generation.status == .uploading { context.notify(.upload, id, "outputs made and stored") }
        }
        if let applied = try await persistently({ try await context.apply(record(dispatching)) }) {
            context.failPoints.reached(.afterRecord)
            recorded(applied)
            return
        }
        // The job moved on meanwhile. If only our lease lapsed (a slow store, a long call) and
        // nobody took the job, take it back and record what was made.
        let current = try await persistently({ try await store.generation(id: id) })
        if let current, current.status == .dispatching, current.attempts == number,
            let claimed = try await persistently({
                try await store.claim(
                    id: id, statuses: [.dispatching], owner: context.instance, leaseUntil: context.leaseUntil(),
                    now: Date())
            })
        {
            if claimed.attempts == number,
                let applied = try await persistently({ try await context.apply(record(claimed)) })
            {
                recorded(applied)
                return
            }
            await context.releaseLease(claimed)
        }
        if let current, current.status.isTerminal {
            // Cancelled or past its deadline: the attempt ends; what it made is not used.
            _ = try await persistently({ try await store.updateAttempt(succeeded) })
            return
        }
        // Another worker holds the job: it finds this attempt still `submitting`, and submits
        // again counting a possible double charge. What this call made is left unused.
        context.logger.warning(
            "a synchronous call's outputs arrived after another worker took the job over",
            metadata: ["generation": "\(id)", "attempt": "\(number)"])
    }

    /// Puts a synchronous call's outputs in object storage; what to record for them. A put that
    /// fails in a way that passes (storage down, refusing for now) is tried again until the job's
    /// deadline: these outputs exist only here, and calling the provider again would pay for them
    /// twice. Each output is put once: a retry takes up the ones not stored yet (a stored file
    /// is consumed; one whose put failed is still there).
    func keepPatiently(_ made: [GeneratedOutput], of generation: Generation, attempt: Int, provider: String)
        async throws -> (outputs: [Output], events: [Event])
    {
        var outputs: [Output] = []
        var events: [Event] = []
        var delay: Duration = .seconds(1)
        for output in made {
            while true {
                do {
                    let stored = try await context.objects.putOutput(file: output.file, claimed: output.contentType) {
                        ObjectKey.forOutput(
                            prefix: context.objectPrefix, generationID: generation.id,
                            createdAt: generation.createdAt, index: output.index, contentType: $0, attempt: attempt)
                    }
                    outputs.append(
                        Output(
                            index: output.index, source: "\(provider):generated", contentType: stored.contentType,
                            objectKey: stored.key, bytes: stored.bytes, sha256: stored.sha256, storedAt: Date()))
                    events.append(context.outputEvent(generation.id, index: output.index, stored: stored))
                    break
                } catch let error as GenGateError where error.code == .uploadFailed && error.retryable {
                    let seconds = Double(delay.components.seconds)
                    guard Date().addingTimeInterval(seconds) < generation.deadlineAt else { throw error }
                    context.logger.warning(
                        "storing a synchronous call's outputs failed; trying again",
                        metadata: [
                            "generation": "\(generation.id)", "error": "\(error.message)", "in_seconds": "\(seconds)",
                        ])
                    try await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(15))
                }
            }
        }
        return (outputs, events)
    }

    /// Runs a store write until it goes through: up to 6 tries over about 6 s for errors that pass
    /// (a writer lock held too long), since the answer it records cannot be asked for again.
    func persistently<T>(_ write: () async throws -> T) async throws -> T {
        var delay: Duration = .milliseconds(200)
        for _ in 1..<6 {
            do {
                return try await write()
            } catch {
                context.logger.warning(
                    "recording a provider's answer failed; trying again", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: delay)
                delay *= 2
            }
        }
        return try await write()
    }

    /// Moves a submitted job to `running` with its first check time, recording `record` in the
    /// same transaction. False if the job moved on.
    func startChecks(
        _ generation: Generation, taskID: String, attempt: Int, record: AttemptUpdate?, feedback: LimitFeedback? = nil
    ) async throws -> Bool {
        let now = Date()
        let schedule = context.schedule(of: generation)
        var change = Transition.of(generation, to: .running, at: now)
        change.providerTaskID = .some(taskID)
        change.lease = .release
        change.nextActionAt = .some(
            TaskCheck.firstCheck(after: now, schedule: schedule, deadline: generation.deadlineAt))
        change.error = .some(nil)
        change.checks = 0
        change.checkFailures = 0
        change.attemptUpdate = record
        change.limitFeedback = feedback
        change.events = [
            Event(
                .generationStarted(
                    .init(
                        attempt: attempt, provider: generation.provider, model: generation.model,
                        providerTaskID: taskID)),
                generationID: generation.id, at: now)
        ]
        guard try await context.apply(change) != nil else { return false }
        context.notify(.check, generation.id, "submitted")
        return true
    }

    enum Recovery {
        /// The job is taken care of (polling resumed).
        case done
        /// The provider could not say whether it has the submission: let go, ask again later.
        case askAgainLater
        /// Submit again; `abandoning` closes the interrupted attempt in the same transaction.
        case resubmit(Generation, abandoning: AttemptUpdate?)
    }

    /// Rule 4 after a crash: never submit again what is on record, ask the provider where it can
    /// tell, and count a possible double charge where it cannot.
    func recover(_ generation: Generation, adapter: any ProviderAdapter) async throws -> Recovery {
        let last = try await store.attempts(generationID: generation.id).last
        var action = SubmissionRecovery.decide(
            last: last, providerFindsByReference: adapter.capabilities.findsSubmissionByReference)
        if case .askProvider(let attempt) = action {
            let request = ProviderRequest(
                generation: generation, clientReference: attempt.clientReference,
                outputIndexes: attempt.outputIndexes)
            do {
                let found = try await context.keepingLease(generation) {
                    try await adapter.findSubmission(clientReference: attempt.clientReference, request: request)
                }
                let settled =
                    Date().timeIntervalSince(attempt.createdAt) >= adapter.capabilities.referenceSettleSeconds
                // Not found yet, so soon after the submission: the provider may still be making it.
                action =
                    found == nil && !settled
                    ? .askAgainLater : SubmissionRecovery.afterAsking(attempt, found: found, askFailed: false)
            } catch {
                let failure = error is CancellationError ? nil : GenGateError.wrap(error)
                context.logger.warning(
                    "could not ask the provider about an interrupted submission",
                    metadata: ["generation": "\(generation.id)", "error": "\(error)"])
                // Stopping, or the provider could not say for now: ask again later rather than
                // risk paying twice. Only a provider that will never say gets a resubmission.
                action =
                    failure?.retryable == false
                    ? SubmissionRecovery.afterAsking(attempt, found: nil, askFailed: true) : .askAgainLater
            }
        }
        switch action {
        case .resume(let taskID, let number):
            let record =
                last?.state == .submitting
                ? AttemptUpdate(
                    generationID: generation.id, number: number, from: [.submitting], to: .submitted,
                    providerTaskID: taskID)
                : nil
            if try await !startChecks(generation, taskID: taskID, attempt: number, record: record), let record {
                // The job ended meanwhile: the task goes on record all the same, for the sweep to stop.
                _ = try await store.updateAttempt(record)
            }
            return .done
        case .resubmit(let abandoning, let possibleDoubleCharge):
            // Only from the state this decision saw: if the worker that made the attempt recorded
            // its answer meanwhile, the change is refused and the next look resumes that task.
            let update = abandoning.map {
                AttemptUpdate(
                    generationID: generation.id, number: $0.number, from: [$0.state], to: .abandoned,
                    error: GenGateError(.internalError, "a worker stopped during this submission"),
                    possibleDoubleCharge: possibleDoubleCharge)
            }
            return .resubmit(generation, abandoning: update)
        case .askProvider:
            return .resubmit(generation, abandoning: nil)  // unreachable: asked above
        case .askAgainLater:
            return .askAgainLater
        }
    }

    func reportPossibleDoubleCharge(_ generation: Generation, attempt: AttemptUpdate) {
        context.publish([
            Event(
                .providerPossibleDoubleCharge(
                    .init(
                        provider: generation.provider, model: generation.model, attempt: attempt.number,
                        clientReference: "\(generation.id)-a\(attempt.number)")),
                generationID: generation.id)
        ])
        context.logger.warning(
            "submitting again after an interrupted submission; the provider may charge twice",
            metadata: ["generation": "\(generation.id)", "attempt": "\(attempt.number)"])
    }
}
