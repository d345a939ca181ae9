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
    public func cancel(_ generation: Generation, reason: String = "cancelled by the client") async throws
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
            var change = Transition.of(current, to: .cancelled)
            change.error = .some(GenGateError(.cancelled, reason))
            change.events = [
                Event(
                    .generationCancelled, generationID: current.id,
                    payload: [
                        "previous_status": .string(current.status.rawValue)
                    ])
            ]
            if let cancelled = try await apply(change) { return .cancelled(cancelled) }
            guard let reread = try await store.generation(id: current.id) else { return .busy(current) }
            current = reread
        }
        return .busy(current)
    }
}
