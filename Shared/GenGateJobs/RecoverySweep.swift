import Foundation
import GenGateCore
import GenGateStore
import ServiceLifecycle

/// Rule 2 in action: every `sweepIntervalSeconds` one process (the holder of the store's
/// "sweep" leader lease) looks after what nobody is looking after, each by index:
/// - jobs past their deadline fail with `task_timeout`;
/// - leases that ran out are voided (their holder is gone or stuck) and the job re-driven;
/// - unleased jobs due for longer than `staleAfterSeconds` (their message was lost) and
///   retries whose time has come are re-driven; running jobs need nothing, pollers find due
///   checks themselves;
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
        guard try await store.lead("sweep", owner: context.instance, until: now.addingTimeInterval(holdFor), now: now) else { return }

        for generation in try await store.pastDeadline(now: now, limit: 500) {
            _ = try await context.fail(generation, error: GenGateError(.taskTimeout, "the generation passed its deadline"), now: now)
        }
        for work in try await store.releaseExpiredLeases(now: now, limit: 1_000) {
            context.logger.notice("lease expired; re-driving", metadata: ["generation": "\(work.id)", "status": "\(work.status.rawValue)"])
            if let step = Lifecycle.Step.working(on: work.status), step != .check { context.notify(step, work.id, "lease expired") }
        }
        let stale = now.addingTimeInterval(-policy.staleAfterSeconds)
        for work in try await store.dueWork(now: now, staleBefore: stale, limit: 1_000) {
            if let step = Lifecycle.Step.working(on: work.status) { context.notify(step, work.id, "sweep") }
        }
        for attempt in try await store.openAttemptsOfEndedGenerations(limit: 100) {
            try await stopTask(of: attempt)
        }
    }

    /// Cancels the provider task of an attempt whose job ended, then closes the attempt. A
    /// provider that is unreachable now is asked again at the next sweep.
    func stopTask(of attempt: Attempt) async throws {
        guard let taskID = attempt.providerTaskID, let adapter = try? context.providers.adapter(attempt.provider) else { return }
        if adapter.capabilities.cancel {
            do {
                try await adapter.cancel(taskID: taskID)
            } catch let error as GenGateError where error.retryable {
                context.logger.notice("provider cancel failed; will try again", metadata: ["task": "\(taskID)", "error": "\(error)"])
                return
            } catch {
                context.logger.notice("provider refused to cancel", metadata: ["task": "\(taskID)", "error": "\(error)"])
            }
        }
        _ = try await store.updateAttempt(AttemptUpdate(
            generationID: attempt.generationID, number: attempt.number, from: [.submitted], to: .abandoned,
            error: GenGateError(.cancelled, "its generation ended; the provider task was cancelled")))
    }
}
