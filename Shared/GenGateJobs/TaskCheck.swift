import Foundation
import GenGateCore
import GenGateProviders

/// The state machine of one running provider task, between two status checks. The task costs
/// nothing but its row while it waits: a check is a short action (claim, one status call, write
/// the outcome and the next check time, let go), and this value decides what the outcome is.
///
/// Pure: no store, no clock, no randomness of its own; the poller feeds it what it saw.
public struct TaskCheck: Sendable, Equatable {
    /// Status checks of this task so far (drives the schedule).
    public private(set) var checks: Int
    /// Status calls that failed in a row.
    public private(set) var failures: Int
    /// Progress as the API shows it (0–90 while the provider works; uploads take the rest).
    public private(set) var progress: Int
    public let schedule: CheckSchedule
    public let maxFailures: Int
    public let deadline: Date

    public init(checks: Int, failures: Int, progress: Int, schedule: CheckSchedule, maxFailures: Int, deadline: Date) {
        self.checks = checks
        self.failures = failures
        self.progress = progress
        self.schedule = schedule
        self.maxFailures = maxFailures
        self.deadline = deadline
    }

    public enum Action: Sendable, Equatable {
        /// Still working (or the call failed in a way worth trying again): check again at `at`.
        /// `progressChanged` says whether the row's progress changed (a progress event is due).
        case checkAgain(at: Date, progressChanged: Bool)
        /// The task finished: store these outputs.
        case upload([Output])
        /// The attempt failed; retry or fail the job as the retry policy says.
        case attemptFailed(GenGateError)
        /// Status calls kept failing: the task's fate is unknown. Stop it where possible (it may
        /// still finish and be charged) before retrying or failing the job.
        case checksFailed(GenGateError)
        /// The job's deadline passed: cancel the task and fail the job.
        case timedOut
    }

    /// When the first check of a task submitted at `now` is due.
    public static func firstCheck(
        after now: Date, schedule: CheckSchedule, deadline: Date,
        random: (ClosedRange<Double>) -> Double = { Double.random(in: $0) }
    ) -> Date {
        min(now.addingTimeInterval(schedule.delay(afterCheck: 0, random: random)), deadline)
    }

    /// Whether the deadline has passed, so no status call is worth making.
    public func isPastDeadline(_ now: Date) -> Bool { now >= deadline }

    /// Takes in one status check's result, made at `now`.
    public mutating func observe(
        _ result: Result<ProviderTaskState, GenGateError>, now: Date,
        random: (ClosedRange<Double>) -> Double = { Double.random(in: $0) }
    ) -> Action {
        if isPastDeadline(now) { return .timedOut }
        checks += 1
        switch result {
        case .failure(let error):
            failures += 1
            if !error.retryable || failures >= maxFailures { return .checksFailed(error) }
            return .checkAgain(at: next(now, retryAfter: error.retryAfter, random: random), progressChanged: false)
        case .success(let state):
            failures = 0
            switch state {
            case .queued:
                return .checkAgain(at: next(now, retryAfter: nil, random: random), progressChanged: false)
            case .running(let reported, let eta):
                let before = progress
                if let reported { progress = max(progress, min(90, max(0, reported) * 9 / 10)) }
                return .checkAgain(
                    at: next(now, retryAfter: nil, eta: eta, random: random), progressChanged: progress != before)
            case .succeeded(let outputs):
                return .upload(outputs)
            case .failed(let error):
                return .attemptFailed(error)
            case .cancelled:
                return .attemptFailed(GenGateError(.providerError, "the provider cancelled the task", retryable: true))
            }
        }
    }

    private func next(
        _ now: Date, retryAfter: Double?, eta: Double? = nil, random: (ClosedRange<Double>) -> Double
    ) -> Date {
        let delay = schedule.delay(afterCheck: checks, retryAfter: retryAfter, eta: eta, random: random)
        return min(now.addingTimeInterval(delay), deadline)
    }
}
