import Foundation
import GenGateCore
import GenGateStore

/// Chains: a job whose input image is another job's output waits (`waiting`, holding nothing,
/// due for nothing) until that job ends. When a job ends, the jobs waiting for it are looked at
/// at once (`apply`); a stop in between leaves them to the sweep (`waitingOnEndedJobs`).
extension JobContext {
    /// Looks at the jobs waiting for `parent`, which has just ended.
    public func releaseWaiting(on parent: String) async {
        do {
            for id in try await store.jobsWaiting(for: parent, limit: 1_000) { await releaseWaiting(id) }
        } catch {
            logger.warning(
                "cannot look at the jobs waiting for a job; the sweep will",
                metadata: ["generation": "\(parent)", "error": "\(error)"])
        }
    }

    /// `releaseWaiting(_:now:)`, its failures logged (the sweep looks again).
    public func releaseWaiting(_ id: String) async {
        do {
            try await releaseWaiting(id, now: Date())
        } catch {
            logger.warning(
                "cannot move on a waiting job; the sweep will", metadata: ["generation": "\(id)", "error": "\(error)"])
        }
    }

    /// Moves a waiting job on, by what its inputs' jobs are now: all completed with the outputs
    /// it names → `pending`, due now; one failed, cancelled, gone, or completed without the output
    /// → failed with `input_unavailable` (no provider is called); otherwise it waits for the
    /// next one not completed. Compare-and-set: a job that moved meanwhile is left as it is.
    public func releaseWaiting(_ id: String, now: Date) async throws {
        guard let job = try await store.generation(id: id), job.status == .waiting else { return }
        // A batch stopped meanwhile takes its waiting jobs with it, cancelled as the rest.
        if let batchID = job.batchID, let batch = try await store.batch(id: batchID), batch.stoppedAt != nil {
            _ = try await cancel(job, reason: batch.stopReason == "client" ? .client : .batch, now: now)
            return
        }
        var next: String?
        for parentID in job.parents {
            guard let parent = try await store.generation(id: parentID) else {
                _ = try await fail(
                    job, error: GenGateError(.inputUnavailable, "input job \(parentID) is gone"), now: now)
                return
            }
            switch parent.status {
            case .completed:
                for case .output(parentID, let index) in job.request.images ?? []
                where !parent.outputs.contains(where: { $0.index == index && $0.isStored }) {
                    _ = try await fail(
                        job,
                        error: GenGateError(
                            .inputUnavailable, "input job \(parentID) completed without output \(index)"),
                        now: now)
                    return
                }
            case .cancelled
            where job.batchID != nil && parent.batchID == job.batchID
                && ["client", "batch"].contains(parent.error?.reason ?? ""):
                // Its batch's own cancel (a stop, or the client's): cancelled too, not failed.
                _ = try await cancel(job, reason: parent.error?.reason == "client" ? .client : .batch, now: now)
                return
            case .failed, .cancelled:
                let why = parent.error.map { " (\($0.code.rawValue): \($0.message))" } ?? ""
                _ = try await fail(
                    job,
                    error: GenGateError(.inputUnavailable, "input job \(parentID) \(parent.status.rawValue)\(why)"),
                    now: now)
                return
            default:
                if next == nil { next = parentID }
            }
        }
        if let next {
            guard next != job.waitsFor else { return }
            var change = Transition.of(job, to: .waiting, at: now)
            change.waitsFor = .some(next)
            _ = try await apply(change)
            return
        }
        var change = Transition.of(job, to: .pending, at: now)
        change.waitsFor = .some(nil)
        if let batchID = job.batchID {
            // In a batch, it takes its turn under the batch's max_concurrency, its deadline
            // counted from when it is let go (as every held job's).
            change.holdInBatch = batchID
            change.nextActionAt = .some(nil)
            // No deadline until let go, as every held job (its own time is counted from then).
            change.deadlineAt = min(job.createdAt.addingTimeInterval(400 * 86_400), job.cancelAt ?? .distantFuture)
            guard try await apply(change) != nil else { return }
            logger.info("input ready; held for its batch's room", metadata: ["generation": "\(id)"])
            for released in try await store.releaseBatchJobs(batchID: batchID, now: now) {
                notify(.submit, released, "released by its batch")
            }
            return
        }
        // Its whole time from now: the wait for its input is not its own.
        let seconds = Double(job.request.deadlineSeconds ?? Int(job.deadlineAt.timeIntervalSince(job.createdAt)))
        change.deadlineAt = min(now.addingTimeInterval(seconds), job.cancelAt ?? .distantFuture)
        change.nextActionAt = .some(now)
        if try await apply(change) != nil {
            logger.info("input ready; dispatching", metadata: ["generation": "\(id)"])
            notify(.submit, id, "input ready")
        }
    }
}
