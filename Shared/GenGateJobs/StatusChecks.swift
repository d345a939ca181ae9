import Foundation
import GenGateCore
import GenGateProviders
import GenGateStore
import ServiceLifecycle
import Synchronization

/// The poller's step: status checks of running provider tasks, each a short action.
///
/// A running job waits in the store with its next check time; nothing is held while the provider
/// works. This loop claims a batch of due checks (a short lease each, so two pollers never check
/// one task at once), makes the status calls (at most `checkConcurrency` in flight per provider),
/// writes each outcome with the next check time and lets go. It sleeps until the next check is
/// due, or until `wake()` says new work arrived. A poller killed mid-check delays that check by at
/// most one lease period (less when its death is known: see `RecoverySweep`).
public struct StatusChecks: Service, CustomStringConvertible {
    public var description: String { "StatusChecks" }

    public let context: JobContext
    /// What the checks did, for the `poller.checks` event.
    public let stats = CheckStats()
    let doorbell = Doorbell()
    let slots: Slots
    /// Longest sleep between two looks at the store when nothing is due (work may come from
    /// another host without a message).
    let idleLook: Duration

    public init(context: JobContext, idleLook: Duration = .milliseconds(500)) {
        self.context = context
        self.slots = Slots(limit: context.policy.checkConcurrency)
        self.idleLook = idleLook
    }

    var store: any GenerationStore { context.store }

    /// A hint that a task was submitted (a poll message): look at the store now.
    public func wake() { doorbell.ring() }

    public func run() async throws {
        let inFlight = CheckCount()
        let batchLimit = context.policy.checkBatch
        await withDiscardingTaskGroup { group in
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                // At most one provider's worth of slots a round, so claimed checks do not wait for a
                // slot long enough for their leases to run out.
                let room = min(batchLimit - inFlight.count.withLock { $0 }, context.policy.checkConcurrency)
                let saturated = slots.saturated()
                var claimed: [Generation] = []
                if room > 0 {
                    do {
                        let now = Date()
                        claimed = try await store.claimDue(
                            status: .running, owner: context.instance, leaseUntil: context.leaseUntil(now),
                            now: now, limit: room, excludingProviders: saturated)
                    } catch {
                        context.logger.error("cannot claim due checks", metadata: ["error": "\(error)"])
                    }
                }
                let claimedAt = Date()
                for generation in claimed {
                    stats.claimed(lateness: max(0, claimedAt.timeIntervalSince(generation.nextActionAt ?? claimedAt)))
                    inFlight.count.withLock { $0 += 1 }
                    group.addTask {
                        await check(generation)
                        inFlight.count.withLock { $0 -= 1 }
                        doorbell.ring()  // a slot is free
                    }
                }
                if room > 0 && claimed.count == room { continue }  // more may be due
                // Full, or some provider's slots all taken (its due checks wait): the next finished
                // check rings. Otherwise sleep until the next check is due.
                let full = room <= 0 || !saturated.isEmpty || !slots.saturated().isEmpty
                await doorbell.wait(upTo: full ? idleLook : await sleepUntilNextDue())
            }
        }
    }

    /// How long until the earliest waiting check is due, at most `idleLook`.
    func sleepUntilNextDue() async -> Duration {
        guard let next = try? await store.nextDue(status: .running) else { return idleLook }
        let seconds = next.timeIntervalSinceNow
        if seconds <= 0 { return .milliseconds(1) }
        return min(idleLook, .milliseconds(Int(seconds * 1_000) + 1))
    }

    /// One status check of a claimed job, and its outcome written.
    public func check(_ generation: Generation) async {
        await context.guarding(generation.id, step: .check) { try await checkOnce(generation) }
    }

    func checkOnce(_ generation: Generation) async throws {
        let id = generation.id
        let adapter = try context.providers.adapter(generation.provider)
        guard let taskID = generation.providerTaskID else {
            _ = try await context.failOrRetry(
                generation, error: GenGateError(.internalError, "running without a provider task"))
            return
        }
        // The outputs this task was asked for are the attempt's, as recorded (not recomputed:
        // a provider's limits may have changed since).
        let attempt = try await store.attempts(generationID: id).last { $0.providerTaskID == taskID }
        let request = ProviderRequest(
            generation: generation, clientReference: attempt?.clientReference ?? "\(id)-a\(generation.attempts)",
            outputIndexes: attempt?.outputIndexes ?? generation.missingOutputIndexes)
        let model = generation.model
        var machine = TaskCheck(
            checks: generation.checks, failures: generation.checkFailures, progress: generation.progress,
            schedule: context.schedule(of: generation),
            maxFailures: context.policy.maxCheckFailures, deadline: generation.deadlineAt)
        /// The attempt's outcome, for the transitions that end it.
        func closing(_ to: Attempt.State, _ error: GenGateError?) async throws -> AttemptUpdate? {
            attempt.map {
                AttemptUpdate(generationID: id, number: $0.number, from: [.submitted], to: to, error: error)
                    .reported(request.charges.reported, prices: context.prices, model: $0.model ?? model)
            }
        }

        var action: TaskCheck.Action = .timedOut
        if !machine.isPastDeadline(Date()) {
            let started = ContinuousClock.now
            let result: Result<ProviderTaskState, GenGateError>
            await slots.acquire(generation.provider)
            stats.statusCall()
            do {
                result = .success(try await adapter.status(taskID: taskID, request: request))
            } catch is CancellationError {
                slots.release(generation.provider)
                await context.releaseLease(generation, nextActionAt: Date())
                return
            } catch {
                let failure = GenGateError.wrap(error)
                context.publish([
                    context.providerCall(
                        provider: adapter.name, model: model, operation: "status", started: started,
                        error: failure)
                ])
                result = .failure(failure)
            }
            slots.release(generation.provider)
            context.failPoints.reached(.afterCheck)
            action = machine.observe(result, now: Date())
        }

        switch action {
        case .checkAgain(let at, let progressChanged):
            var change = Transition.of(generation, to: .running)
            change.lease = .release
            change.nextActionAt = .some(at)
            change.checks = machine.checks
            change.checkFailures = machine.failures
            if progressChanged {
                change.progress = machine.progress
                // Progress events are coalesced: one per ten points, not one per check.
                if machine.progress / 10 != generation.progress / 10 {
                    change.events = [Event(.generationProgress(.init(progress: machine.progress)), generationID: id)]
                }
            }
            _ = try await context.apply(change)  // nil: it moved on (cancelled); the sweep stops the task

        case .upload(let outputs):
            var change = Transition.of(generation, to: .uploading)
            change.progress = max(generation.progress, 90)
            change.newOutputs = outputs
            change.lease = .release
            change.nextActionAt = .some(Date())
            change.checks = machine.checks
            change.checkFailures = 0  // the task ended: the next count (a preparation's) starts afresh
            change.attemptUpdate = try await closing(.succeeded, nil)
            if try await context.apply(change) != nil { context.notify(.upload, id, "task succeeded") }

        case .attemptFailed(let error):
            context.publish([
                context.providerCall(
                    provider: adapter.name, model: model, operation: "task",
                    started: ContinuousClock.now, error: error)
            ])
            _ = try await context.failOrRetry(generation, error: error, attempt: try await closing(.failed, error))

        case .checksFailed(let error):
            // The task may still be working: stop it before anything is submitted again. If it
            // cannot be stopped, a retry may pay twice, and that is put on record.
            let stopped = await context.cancelProviderTask(adapter, taskID: taskID)
            var closed = try await closing(.failed, error)
            closed?.possibleDoubleCharge = stopped != .cancelled && stopped != .refused
            _ = try await context.failOrRetry(generation, error: error, attempt: closed)

        case .timedOut:
            // Closed only once stopped; otherwise it stays `submitted` and the sweep asks again.
            let stopped = await context.cancelProviderTask(adapter, taskID: taskID)
            let closed = stopped == .failed ? nil : attempt
            _ = try await context.expire(generation, "the provider task did not finish before the deadline") { error in
                closed.map {
                    AttemptUpdate(generationID: id, number: $0.number, from: [.submitted], to: .failed, error: error)
                }
            }
        }
    }
}

/// Checks claimed and not yet finished by one poller.
final class CheckCount: Sendable {
    let count = Mutex(0)
}
