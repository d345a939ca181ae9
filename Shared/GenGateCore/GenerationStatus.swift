/// Where a generation is in its lifecycle (docs/ARCHITECTURE.md, "Lifecycle"). The legal moves
/// are `Lifecycle` in GenGateJobs.
///
/// pending → dispatching → running → uploading → completed (dispatching → completed for a
/// synchronous call that brought every output), with `retryWait` between attempts and
/// `failed` / `cancelled` as the other ends; a job whose input image is another job's output
/// starts in `waiting`, and moves to `pending` once that output is there. Terminal states are
/// final.
public enum GenerationStatus: String, Codable, Sendable, CaseIterable {
    /// Waiting for another job's output (a chain): nothing held, no step works on it.
    case waiting
    case pending
    case dispatching
    case running
    case uploading
    case retryWait = "retry_wait"
    case completed
    case failed
    case cancelled

    /// Completed, failed and cancelled never change again.
    public var isTerminal: Bool {
        switch self {
        case .completed, .failed, .cancelled: return true
        default: return false
        }
    }

    /// Every state that may still change.
    public static let active: [GenerationStatus] = allCases.filter { !$0.isTerminal }
}
