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

    /// Why a job is cancelled (the `reason` of its error).
    public enum CancelReason: String, Sendable {
        /// The client asked (for the job, or for its batch).
        case client
        /// Its Cancel-After ran out.
        case deadline
        /// Another job of its batch failed, and the batch stops on error.
        case batch
    }

    /// Cancels `generation` (as last read) whatever step it is in, by compare-and-set, looking
    /// again when it moved on meanwhile. A provider task it had running is stopped by the sweep
    /// (`RecoverySweep`), which also covers a cancel that lands while a worker holds the job.
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
    /// Cancel-After, else failed with `task_timeout` saying `what` (or `upload_failed`, when
    /// storing its outputs is what kept failing). Its provider task, if any, is
    /// stopped by the sweep. Nil if the job moved on meanwhile.
    public func expire(
        _ generation: Generation, _ what: String, attempt: (GenGateError) -> AttemptUpdate? = { _ in nil },
        now: Date = Date()
    ) async throws -> Generation? {
        guard generation.deadlineCancels else {
            var timeout = GenGateError(.taskTimeout, what)
            if generation.status == .uploading, let last = generation.error, last.code == .uploadFailed {
                // Its outputs were made but could not be stored (object storage down or refusing):
                // that is what the job ends on, not a slow provider.
                timeout = GenGateError(
                    .uploadFailed, "storing the outputs still failed at the job's deadline: \(last.message)")
            }
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

    /// A job of a batch ended (`apply` calls this): a failure in a batch that stops on error stops
    /// the batch; otherwise the batch's next held job is released, and the dispatchers told. The
    /// sweep does both as well, so a process that dies here delays the batch, nothing more.
    func batchJobEnded(_ generation: Generation) async {
        guard let batchID = generation.batchID else { return }
        do {
            if generation.status == .failed, let batch = try await store.batch(id: batchID), batch.stopOnError,
                batch.stoppedAt == nil
            {
                try await stopBatch(batchID, reason: .batch)
                return
            }
            for id in try await store.releaseBatchJobs(batchID: batchID, now: Date()) {
                notify(.submit, id, "released by its batch")
            }
        } catch {
            logger.warning("batch bookkeeping failed", metadata: ["batch": "\(batchID)", "error": "\(error)"])
        }
    }

    /// Stops a batch: its held jobs are cancelled in the store, its released unfinished ones
    /// here (those busy now are left to the sweep, which finishes the stop).
    public func stopBatch(_ id: String, reason: CancelReason) async throws {
        let held = try await store.stopBatch(id: id, reason: reason == .client ? "client" : "error", at: Date())
        logger.notice(
            "batch stopped", metadata: ["batch": "\(id)", "reason": "\(reason.rawValue)", "held_cancelled": "\(held)"])
        for job in try await store.batchJobs(id: id, after: -1, limit: 100_000) where !job.status.isTerminal {
            guard let generation = try await store.generation(id: job.generationID) else { continue }
            _ = try await cancel(generation, reason: reason)
        }
    }

    /// The move of `generation` to `cancelled` for `reason`, with its error and event.
    func cancelling(_ generation: Generation, reason: CancelReason, now: Date) -> Transition {
        var change = Transition.of(generation, to: .cancelled, at: now)
        let message =
            switch reason {
            case .client: "cancelled by the client"
            case .deadline: "cancelled: still unfinished when its Cancel-After ran out"
            case .batch: "cancelled: another job of its batch failed"
            }
        change.error = .some(GenGateError(.cancelled, message, reason: reason.rawValue))
        change.events = [
            Event(
                .generationCancelled(.init(previousStatus: generation.status.rawValue, reason: reason.rawValue)),
                generationID: generation.id, at: now)
        ]
        return change
    }
}
