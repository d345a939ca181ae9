import Foundation
import GenGateBus
import GenGateCore
import GenGateProviders
import GenGateRuntime
import GenGateStore

/// Follows one provider task from `running` to a result, holding the job's lease while it does.
struct TaskWatcher: Sendable {
    let environment: ServiceEnvironment
    let upload: WorkProducer

    var store: any GenerationStore { environment.store }

    /// Consecutive failed status checks tolerated before the attempt counts as failed.
    static let maxConsecutiveCheckFailures = 5

    func handle(_ item: WorkItem) async {
        do {
            try await watch(item.generationID)
        } catch is CancellationError {
            return
        } catch {
            environment.logger.error("polling failed", metadata: ["generation": "\(item.generationID)", "error": "\(error)"])
        }
    }

    func watch(_ id: String) async throws {
        let now = Date()
        guard var generation = try await store.claim(id: id, statuses: [.running], owner: environment.instance,
                                                     leaseUntil: environment.leaseUntil(now), now: now)
        else { return }
        guard let taskID = generation.providerTaskID else {
            _ = try await environment.failOrRetry(generation, error: GenGateError(.internalError, "running without a provider task"))
            return
        }
        let adapter = try environment.providers.adapter(generation.provider)
        let attempt = try await store.attempts(generationID: id).last { $0.providerTaskID == taskID }
        let request = ProviderRequest(generation: generation, clientReference: attempt?.clientReference ?? "",
                                      outputIndexes: attempt?.outputIndexes ?? generation.missingOutputIndexes)
        let jobs = environment.config.jobs
        var delay = Double(jobs.pollInitialMilliseconds) / 1_000
        var checkFailures = 0

        while true {
            if Task.isCancelled {
                await environment.releaseLease(generation)
                return
            }
            if Date() >= generation.deadlineAt {
                await environment.cancelProviderTask(adapter, taskID: taskID)
                _ = try await environment.fail(generation, error: GenGateError(.taskTimeout, "the provider task did not finish before the deadline"))
                return
            }
            let started = ContinuousClock.now
            let state: ProviderTaskState
            do {
                state = try await adapter.status(taskID: taskID, request: request)
                checkFailures = 0
            } catch is CancellationError {
                await environment.releaseLease(generation)
                return
            } catch {
                let failure = GenGateError.wrap(error)
                environment.publish([environment.providerCall(provider: adapter.name, model: request.model, operation: "status",
                                                              started: started, error: failure)])
                checkFailures += 1
                if !failure.retryable || checkFailures >= Self.maxConsecutiveCheckFailures {
                    try await finishAttempt(id, attempt, state: .failed, error: failure)
                    _ = try await environment.failOrRetry(generation, error: failure)
                    return
                }
                guard let renewed = try await keep(generation) else { return }
                generation = renewed
                try await sleep(seconds: delay, generation)
                delay = min(delay * 2, Double(jobs.pollMaxMilliseconds) / 1_000)
                continue
            }

            switch state {
            case .queued, .running:
                var progress = generation.progress
                if case .running(let reported?) = state { progress = max(progress, min(90, reported * 9 / 10)) }
                if progress != generation.progress {
                    var change = Transition.of(generation, to: .running)
                    change.progress = progress
                    change.lease = .hold(owner: environment.instance, until: environment.leaseUntil())
                    change.events = [Event(.generationProgress, generationID: id, payload: ["progress": .number(Double(progress))])]
                    guard let updated = try await environment.apply(change) else {
                        try await environment.cancelProviderTaskIfEnded(id, adapter: adapter, taskID: taskID)
                        return
                    }
                    generation = updated
                } else {
                    guard let renewed = try await keep(generation) else {
                        try await environment.cancelProviderTaskIfEnded(id, adapter: adapter, taskID: taskID)
                        return
                    }
                    generation = renewed
                }
                try await sleep(seconds: delay, generation)
                delay = min(delay * 1.5, Double(jobs.pollMaxMilliseconds) / 1_000)

            case .succeeded(let outputs):
                try await finishAttempt(id, attempt, state: .succeeded, error: nil)
                var change = Transition.of(generation, to: .uploading)
                change.progress = max(generation.progress, 90)
                change.newOutputs = outputs
                change.lease = .release
                change.nextActionAt = .some(Date())
                if try await environment.apply(change) != nil {
                    upload.send(generationID: id, reason: "task succeeded")
                } else {
                    try await environment.cancelProviderTaskIfEnded(id, adapter: adapter, taskID: taskID)
                }
                return

            case .failed(let error):
                environment.publish([environment.providerCall(provider: adapter.name, model: request.model, operation: "task",
                                                              started: started, error: error)])
                try await finishAttempt(id, attempt, state: .failed, error: error)
                _ = try await environment.failOrRetry(generation, error: error)
                return

            case .cancelled:
                let error = GenGateError(.providerError, "the provider cancelled the task", retryable: true)
                try await finishAttempt(id, attempt, state: .failed, error: error)
                _ = try await environment.failOrRetry(generation, error: error)
                return
            }
        }
    }

    /// Renews the lease; nil when it was lost (the job was cancelled or taken over).
    func keep(_ generation: Generation) async throws -> Generation? {
        guard try await store.renewLease(id: generation.id, owner: environment.instance, version: generation.version,
                                         until: environment.leaseUntil()) else { return nil }
        return generation
    }

    /// Sleeps between checks; on cancellation (shutdown) gives the lease back first.
    func sleep(seconds: Double, _ generation: Generation) async throws {
        do {
            try await Task.sleep(for: .milliseconds(Int(seconds * 1_000)))
        } catch {
            await environment.releaseLease(generation)
            throw error
        }
    }

    func finishAttempt(_ id: String, _ attempt: Attempt?, state: Attempt.State, error: GenGateError?) async throws {
        guard let attempt else { return }
        try await store.updateAttempt(generationID: id, number: attempt.number, state: state, providerTaskID: nil, error: error, at: Date())
    }
}
