import Foundation
import GenGateCore
import GenGateProviders
import GenGateStore
import ServiceLifecycle

/// Rule 2 in action: every `sweepIntervalSeconds` one process (the holder of the store's
/// "sweep" leader lease) looks after what nobody is looking after, each by index:
/// - jobs past their deadline fail with `task_timeout`;
/// - leases of processes whose heartbeat stopped (see `Heartbeat`) are voided where the step is
///   free to repeat, and leases that ran out (their holder is gone or stuck), and the jobs
///   re-driven;
/// - unleased jobs due for longer than `staleAfterSeconds` (their message was lost) and
///   retries whose time has come are re-driven; running jobs need nothing, pollers find due
///   checks themselves;
/// - events past their retention and idempotency keys past their window expire;
/// - provider tasks of jobs that ended under them (cancelled, or failed at the deadline) are
///   cancelled at the provider, so nobody pays for work nobody will use.
public struct RecoverySweep: Service, CustomStringConvertible {
    public var description: String { "RecoverySweep" }

    public let context: JobContext

    public init(context: JobContext) {
        self.context = context
    }

    var store: any GenerationStore { context.store }

    public func run() async throws {
        let interval = Duration.milliseconds(Int(context.policy.sweepIntervalSeconds * 1_000))
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await sweepOnce()
            } catch is CancellationError {
                return
            } catch {
                context.logger.error("recovery sweep failed", metadata: ["error": "\(error)"])
            }
            try? await gracefulShutdownOrSleep(interval)
        }
    }

    /// Sleeps for `duration`, returning early on graceful shutdown.
    func gracefulShutdownOrSleep(_ duration: Duration) async throws {
        try await cancelWhenGracefulShutdown { try await Task.sleep(for: duration) }
    }

    /// One pass. Returns quietly when another process holds the sweep's lease.
    public func sweepOnce(now: Date = Date()) async throws {
        let policy = context.policy
        let holdFor = max(3 * policy.sweepIntervalSeconds, 2)
        guard try await store.lead("sweep", owner: context.instance, until: now.addingTimeInterval(holdFor), now: now)
        else { return }

        // Each item on its own: one that fails must not hold up the rest of the pass.
        for generation in try await store.pastDeadline(now: now, limit: 500) {
            await each(generation.id) {
                _ = try await context.expire(generation, "the generation passed its deadline", now: now)
            }
        }
        let stale = now.addingTimeInterval(-policy.staleAfterSeconds)
        await each("(silent processes)") {
            let silent = try await store.releaseLeasesOfSilentInstances(now: now, dueAt: stale.addingTimeInterval(-1))
            if !silent.instances.isEmpty {
                context.logger.notice(
                    "processes went silent; voided their leases",
                    metadata: ["instances": "\(silent.instances)", "leases": "\(silent.leases)"])
            }
        }
        for work in try await store.releaseExpiredLeases(now: now, limit: 1_000) {
            context.logger.notice(
                "lease expired; re-driving",
                metadata: ["generation": "\(work.id)", "status": "\(work.status.rawValue)"])
            if let step = Lifecycle.Step.working(on: work.status), step != .check {
                context.notify(step, work.id, "lease expired")
            }
        }
        for work in try await store.dueWork(now: now, staleBefore: stale, limit: 1_000) {
            if let step = Lifecycle.Step.working(on: work.status) { context.notify(step, work.id, "sweep") }
        }
        await each("(expiry)") {
            _ = try await store.expire(
                eventsBefore: now.addingTimeInterval(-policy.eventRetentionSeconds),
                keysBefore: now.addingTimeInterval(-policy.idempotencyWindowSeconds), limit: 5_000)
        }
        // Chains' steps whose input's job ended while nobody moved them on (that process died).
        await each("(waiting jobs)") {
            for id in try await store.waitingOnEndedJobs(limit: 100) {
                await each(id) { try await context.releaseWaiting(id, now: now) }
            }
        }
        // Uploads and preprocessed images past their time: the object, then its record; one that
        // cannot be deleted now is tried again next time, and does not hold up the others.
        for key in (try? await store.expiredInputObjects(now: now, limit: 200)) ?? [] {
            await each(key) {
                try await context.objects.delete(key: key)
                try await store.forgetInputObject(key: key)
            }
        }
        // A submission still `submitting` a lease period after it began has no worker left.
        let orphanedBefore = now.addingTimeInterval(-policy.leaseSeconds)
        await each("batches") { try await tendBatches(now: now) }
        for attempt in try await store.openAttemptsOfEndedGenerations(submittingBefore: orphanedBefore, limit: 100) {
            await each(attempt.generationID) { try await stopTask(of: attempt) }
        }
    }

    /// What a batch's jobs ending did not do (their process died first, or a job ended without
    /// `apply`): stop batches that stop on error and have a failure, cancel what a stop left
    /// running, release held jobs into free room, and tell the dispatchers.
    func tendBatches(now: Date) async throws {
        for batch in try await store.batchesToStop(limit: 10) {
            await each(batch) { try await context.stopBatch(batch, reason: .batch) }
        }
        for id in try await store.unfinishedJobsOfStoppedBatches(limit: 100) {
            await each(id) {
                guard let generation = try await store.generation(id: id), let batchID = generation.batchID else {
                    return
                }
                let reason =
                    try await store.batch(id: batchID)?.stopReason == "client" ? JobContext.CancelReason.client : .batch
                _ = try await context.cancel(generation, reason: reason)
            }
        }
        for id in try await store.releaseBatchJobs(batchID: nil, now: now) {
            context.notify(.submit, id, "released by its batch")
        }
    }

    func each(_ generationID: String, _ body: () async throws -> Void) async {
        do {
            try await body()
        } catch {
            context.logger.error(
                "recovery sweep failed on a job", metadata: ["generation": "\(generationID)", "error": "\(error)"])
        }
    }

    /// Cancels the provider task of an attempt whose job ended, then closes the attempt. An
    /// attempt still `submitting` is first looked up by client reference where the provider can
    /// (it may or may not have the task). A provider that cannot be reached now is asked again at
    /// the next sweep.
    func stopTask(of attempt: Attempt) async throws {
        var taskID = attempt.providerTaskID
        if let adapter = try? context.providers.adapter(attempt.provider) {
            if taskID == nil, adapter.capabilities.findsSubmissionByReference,
                let generation = try await store.generation(id: attempt.generationID)
            {
                let request = ProviderRequest(
                    generation: generation, clientReference: attempt.clientReference,
                    outputIndexes: attempt.outputIndexes)
                do {
                    taskID = try await adapter.findSubmission(
                        clientReference: attempt.clientReference, request: request)
                } catch let error as GenGateError where !error.retryable {
                    context.logger.notice(
                        "provider cannot find a submission", metadata: ["generation": "\(attempt.generationID)"])
                } catch {
                    return  // ask again next sweep
                }
            }
            if let taskID, await context.cancelProviderTask(adapter, taskID: taskID) == .failed { return }
        } else {
            context.logger.warning(
                "cannot stop the task of an ended job: its provider is not configured here",
                metadata: ["generation": "\(attempt.generationID)", "provider": "\(attempt.provider)"])
        }
        _ = try await store.updateAttempt(
            AttemptUpdate(
                generationID: attempt.generationID, number: attempt.number, from: [attempt.state], to: .abandoned,
                providerTaskID: attempt.providerTaskID == nil ? taskID : nil,
                error: GenGateError(
                    .cancelled, "its generation ended; the provider task was stopped where the provider allows")))
    }
}
