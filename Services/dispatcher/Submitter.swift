import Foundation
import GenGateBus
import GenGateCore
import GenGateProviders
import GenGateRuntime
import GenGateStore

/// Takes one due generation through a provider submission: claim, record the attempt, submit,
/// then hand the provider task to the pollers (or schedule a retry, or fail).
struct Submitter: Sendable {
    let environment: ServiceEnvironment
    let poll: WorkProducer
    let upload: WorkProducer

    var store: any GenerationStore { environment.store }

    func handle(_ item: WorkItem) async {
        do {
            try await dispatch(item.generationID)
        } catch is CancellationError {
            return
        } catch {
            environment.logger.error("dispatch failed", metadata: ["generation": "\(item.generationID)", "error": "\(error)"])
        }
    }

    func dispatch(_ id: String) async throws {
        let now = Date()
        guard var generation = try await store.claim(id: id, statuses: [.pending, .retryWait, .dispatching],
                                                     owner: environment.instance, leaseUntil: environment.leaseUntil(now), now: now)
        else { return }
        if now >= generation.deadlineAt {
            _ = try await environment.fail(generation, error: GenGateError(.taskTimeout, "deadline passed before dispatch"))
            return
        }
        let adapter: any ProviderAdapter
        do {
            adapter = try environment.providers.adapter(generation.provider)
        } catch {
            _ = try await environment.fail(generation, error: GenGateError.wrap(error))
            return
        }
        if generation.status == .dispatching {
            // A dispatcher died between recording an attempt and finishing it.
            switch try await recover(generation, adapter: adapter) {
            case .resumed: return
            case .resubmit(let updated): generation = updated
            }
        }
        let missing = generation.missingOutputIndexes
        if missing.isEmpty {
            // Everything was already stored by earlier attempts; let the uploader finish it.
            var change = Transition.of(generation, to: .uploading)
            change.lease = .release
            change.nextActionAt = .some(Date())
            if try await environment.apply(change) != nil { upload.send(generationID: id, reason: "all outputs stored") }
            return
        }
        let number = generation.attempts + 1
        let outputIndexes = Array(missing.prefix(adapter.capabilities.maxOutputsPerCall))
        let reference = "\(id)-a\(number)"
        let request = ProviderRequest(generation: generation, clientReference: reference, outputIndexes: outputIndexes)

        var change = Transition.of(generation, to: .dispatching)
        change.attempts = number
        guard let dispatching = try await environment.apply(change) else { return }
        // Rule 4: the attempt is on record before the provider hears of it.
        try await store.recordAttempt(Attempt(
            generationID: id, number: number, provider: adapter.name, clientReference: reference, providerTaskID: nil,
            outputIndexes: outputIndexes, state: .submitting, error: nil, createdAt: Date(), finishedAt: nil))

        let started = ContinuousClock.now
        let taskID: String
        do {
            taskID = try await environment.keepingLease(dispatching) { try await adapter.submit(request) }
        } catch {
            let failure = GenGateError.wrap(error)
            environment.publish([environment.providerCall(provider: adapter.name, model: generation.request.model,
                                                          operation: "submit", started: started, error: failure)])
            try await store.updateAttempt(generationID: id, number: number, state: .failed, providerTaskID: nil, error: failure, at: Date())
            _ = try await environment.failOrRetry(dispatching, error: failure)
            return
        }
        environment.publish([environment.providerCall(provider: adapter.name, model: generation.request.model,
                                                      operation: "submit", started: started, error: nil)])
        try await store.updateAttempt(generationID: id, number: number, state: .submitted, providerTaskID: taskID, error: nil, at: Date())
        if try await !startPolling(dispatching, taskID: taskID, attempt: number) {
            // Cancelled (or timed out) while we were submitting: stop the task rather than pay for it.
            try await environment.cancelProviderTaskIfEnded(id, adapter: adapter, taskID: taskID)
        }
    }

    /// Moves a submitted job to `running` and tells the pollers. False if the job moved on.
    @discardableResult
    func startPolling(_ generation: Generation, taskID: String, attempt: Int) async throws -> Bool {
        var change = Transition.of(generation, to: .running)
        change.providerTaskID = .some(taskID)
        change.lease = .release
        change.nextActionAt = .some(Date())
        change.error = .some(nil)
        change.events = [Event(.generationStarted, generationID: generation.id, payload: [
            "attempt": .number(Double(attempt)), "provider": .string(generation.provider),
            "model": .string(generation.request.model), "provider_task_id": .string(taskID),
        ])]
        guard try await environment.apply(change) != nil else { return false }
        poll.send(generationID: generation.id, reason: "submitted")
        return true
    }

    enum Recovery {
        case resumed
        case resubmit(Generation)
    }

    /// DESIGN.md rule 4: before submitting again after a crash, find out whether the earlier
    /// submission reached the provider. Where that cannot be known, submit again and count it.
    func recover(_ generation: Generation, adapter: any ProviderAdapter) async throws -> Recovery {
        guard let last = try await store.attempts(generationID: generation.id).last else { return .resubmit(generation) }
        switch last.state {
        case .submitted:
            if let taskID = last.providerTaskID {
                try await startPolling(generation, taskID: taskID, attempt: last.number)
                return .resumed
            }
        case .submitting:
            let request = ProviderRequest(generation: generation, clientReference: last.clientReference, outputIndexes: last.outputIndexes)
            if adapter.capabilities.findsSubmissionByReference,
               let taskID = try? await adapter.findSubmission(clientReference: last.clientReference, request: request) {
                try await store.updateAttempt(generationID: generation.id, number: last.number, state: .submitted,
                                              providerTaskID: taskID, error: nil, at: Date())
                try await startPolling(generation, taskID: taskID, attempt: last.number)
                return .resumed
            }
            try await store.updateAttempt(generationID: generation.id, number: last.number, state: .abandoned, providerTaskID: nil,
                                          error: GenGateError(.internalError, "dispatcher stopped during submission"), at: Date())
            environment.publish([Event(.providerPossibleDoubleCharge, generationID: generation.id, payload: [
                "provider": .string(adapter.name), "model": .string(generation.request.model),
                "attempt": .number(Double(last.number)), "client_reference": .string(last.clientReference),
            ])])
            environment.logger.warning("resubmitting after an interrupted submission; it may be charged twice",
                                       metadata: ["generation": "\(generation.id)", "attempt": "\(last.number)"])
        default:
            break
        }
        return .resubmit(generation)
    }
}
