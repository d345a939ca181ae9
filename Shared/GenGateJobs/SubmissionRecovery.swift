import GenGateCore

/// What to do with a job found in `dispatching` with nobody holding it: a worker died (or lost
/// its lease) between recording a submission and recording its outcome. The provider may have
/// the task, and may charge for it: never submit again without first ruling that out where the
/// provider lets us, and count it where it does not.
public enum SubmissionRecovery {
    public enum Action: Sendable, Equatable {
        /// The submission's outcome is on record: poll that task.
        case resume(taskID: String, attempt: Int)
        /// The submission may have reached the provider: ask it by our client reference first.
        case askProvider(Attempt)
        /// Submit again. `abandoning` is the interrupted attempt, if any, to close;
        /// `possibleDoubleCharge` says whether the provider may now be doing the work twice.
        case resubmit(abandoning: Attempt?, possibleDoubleCharge: Bool)
        /// The provider could not say now whether it has the submission: ask again later.
        case askAgainLater
    }

    /// Whether a submission that failed with `error` may still have reached the provider (and be
    /// charged): no answer, a server error, or an answer we could not read. Only a refusal the
    /// provider said out loud (rate limit, credentials, balance, invalid input, content policy)
    /// means it has nothing. A retry after one of these is counted as a possible double charge.
    public static func mayHaveReachedProvider(_ error: GenGateError) -> Bool {
        switch error.code {
        case .providerTimeout, .providerUnavailable, .providerError, .internalError, .uploadFailed, .taskTimeout:
            return true
        case .rateLimited, .authenticationFailed, .quotaExceeded, .invalidRequest, .invalidImage, .inputUnavailable,
            .contentPolicy, .cancelled, .budgetExceeded:
            return false
        case .invalidJSON, .unknownModel, .providerNotConfigured, .unauthorized, .forbidden, .notFound, .conflict,
            .idempotencyKeyReused, .payloadTooLarge, .rangeNotSatisfiable, .unavailable:
            return true  // request codes: no adapter states them, so nothing is ruled out
        }
    }

    /// The decision from the job's last attempt.
    public static func decide(last: Attempt?, providerFindsByReference: Bool) -> Action {
        guard let last else { return .resubmit(abandoning: nil, possibleDoubleCharge: false) }
        switch last.state {
        case .submitted:
            if let taskID = last.providerTaskID { return .resume(taskID: taskID, attempt: last.number) }
            return .resubmit(abandoning: last, possibleDoubleCharge: true)
        case .submitting:
            if providerFindsByReference { return .askProvider(last) }
            return .resubmit(abandoning: last, possibleDoubleCharge: true)
        case .succeeded, .failed, .abandoned:
            return .resubmit(abandoning: nil, possibleDoubleCharge: false)
        }
    }

    /// The decision once the provider answered whether it has `attempt` (`taskID`), or will
    /// never be able to say (`askFailed`: a non-retryable error).
    public static func afterAsking(_ attempt: Attempt, found taskID: String?, askFailed: Bool) -> Action {
        if let taskID { return .resume(taskID: taskID, attempt: attempt.number) }
        return .resubmit(abandoning: attempt, possibleDoubleCharge: askFailed)
    }
}
