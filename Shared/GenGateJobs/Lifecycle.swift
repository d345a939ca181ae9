import GenGateCore

/// The job lifecycle in one place: which status moves are legal, and which step of the engine
/// works on a job in each status (see docs/ARCHITECTURE.md, "Lifecycle").
///
///     (waiting ─▶) pending ─▶ dispatching ─▶ running ─▶ uploading ─▶ completed
///                     ▲            │   │        │           │          ▲
///                     └── retry_wait ◀─┼────────┴───────────┘          │
///                                      └───────────────────────────────┘  (a synchronous call's answer)
///                          (failed / cancelled from any active state)
///
/// `waiting` (for another job's output) is left by `releaseWaiting`, not by a step.
public enum Lifecycle {
    /// The steps of the engine. Each claims jobs in some statuses and is driven by one queue.
    public enum Step: String, Sendable, CaseIterable {
        /// The dispatcher: submit to the provider (or recover an interrupted submission).
        case submit
        /// The poller: one status check of a running provider task.
        case check
        /// The uploader: move outputs to object storage, then complete.
        case upload

        /// The statuses this step takes a job from.
        public var claims: Set<GenerationStatus> {
            switch self {
            case .submit: return [.pending, .retryWait, .dispatching]
            case .check: return [.running]
            case .upload: return [.uploading]
            }
        }

        /// The step that moves a job in `status` on; nil for terminal statuses.
        public static func working(on status: GenerationStatus) -> Step? {
            allCases.first { $0.claims.contains(status) }
        }
    }

    /// Every legal move. Staying in a status (progress, a new attempt, a later retry of an upload)
    /// is a move too.
    static let moves: [GenerationStatus: Set<GenerationStatus>] = [
        .waiting: [.waiting, .pending, .failed, .cancelled],
        .pending: [.dispatching, .uploading, .failed, .cancelled],
        .retryWait: [.dispatching, .uploading, .failed, .cancelled],
        .dispatching: [.dispatching, .running, .uploading, .completed, .retryWait, .failed, .cancelled],
        .running: [.running, .uploading, .retryWait, .failed, .cancelled],
        .uploading: [.uploading, .pending, .completed, .retryWait, .failed, .cancelled],
        .completed: [],
        .failed: [],
        .cancelled: [],
    ]

    /// Whether a job may move from `from` to `to`. Terminal statuses move nowhere.
    public static func allows(from: GenerationStatus, to: GenerationStatus) -> Bool {
        moves[from]?.contains(to) ?? false
    }
}
