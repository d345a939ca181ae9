import Foundation
import GenGateCore
import GenGateStore

extension JobContext {
    public enum CancelOutcome: Sendable {
        /// Cancelled now, or already before.
        case cancelled(Generation)
        /// Completed or failed: it can no longer be cancelled.
        case ended(Generation)
        /// It kept changing under every try (a hot job): the caller may try again.
        case busy(Generation)
    }

    /// Cancels `generation` (as last read) whatever step it is in, by compare-and-set, looking
    /// again when it moved on meanwhile. A provider task it had running is stopped by the sweep
    /// (`RecoverySweep`), which also covers a cancel that lands while a worker holds the job.
    /// Why a job is cancelled (the `reason` of its error).
    public enum CancelReason: String, Sendable {
        /// The client asked.
        case client
        /// Its Cancel-After ran out.
        case deadline
    }

    public func cancel(_ generation: Generation, reason: CancelReason = .client, now: Date = Date()) async throws
        -> CancelOutcome
    {
        var current = generation
        for _ in 0..<20 {
            switch current.status {
            case .cancelled:
                return .cancelled(current)
            case .completed, .failed:
                return .ended(current)
            default:
                break
            }
            if let cancelled = try await apply(cancelling(current, reason: reason, now: now)) {
                logger.info("cancelled", metadata: ["generation": "\(current.id)", "reason": "\(reason.rawValue)"])
                return .cancelled(cancelled)
            }
            guard let reread = try await store.generation(id: current.id) else { return .busy(current) }
            current = reread
        }
        return .busy(current)
    }

    /// Ends a job that reached its deadline: cancelled (reason `deadline`) when that was its
    /// Cancel-After, else failed with `task_timeout` saying `what`. Its provider task, if any, is
    /// stopped by the sweep. Nil if the job moved on meanwhile.
    public func expire(
        _ generation: Generation, _ what: String, attempt: (GenGateError) -> AttemptUpdate? = { _ in nil },
        now: Date = Date()
    ) async throws -> Generation? {
        guard generation.deadlineCancels else {
            let timeout = GenGateError(.taskTimeout, what)
            return try await fail(generation, error: timeout, attempt: attempt(timeout), now: now)
        }
        var change = cancelling(generation, reason: .deadline, now: now)
        change.attemptUpdate = attempt(GenGateError(.cancelled, "its job's Cancel-After ran out", reason: "deadline"))
        let cancelled = try await apply(change)
        if cancelled != nil {
            logger.info("cancelled", metadata: ["generation": "\(generation.id)", "reason": "deadline"])
        }
        return cancelled
    }

    /// The move of `generation` to `cancelled` for `reason`, with its error and event.
    func cancelling(_ generation: Generation, reason: CancelReason, now: Date) -> Transition {
        var change = Transition.of(generation, to: .cancelled, at: now)
        let message =
            reason == .client ? "cancelled by the client" : "cancelled: still unfinished when its Cancel-After ran out"
        change.error = .some(GenGateError(.cancelled, message, reason: reason.rawValue))
        change.events = [
            Event(
                .generationCancelled, generationID: generation.id, at: now,
                payload: ["previous_status": .string(generation.status.rawValue), "reason": .string(reason.rawValue)])
        ]
        return change
    }
}
