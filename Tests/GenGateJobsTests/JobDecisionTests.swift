import Foundation
import GenGateCore
import GenGateJobs
import GenGateProviders
import XCTest

/// Retry decisions, submission recovery and the lifecycle table.
final class JobDecisionTests: XCTestCase {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let noJitter: (ClosedRange<Double>) -> Double = { $0.upperBound }

    func attempt(_ state: Attempt.State, taskID: String? = nil) -> Attempt {
        Attempt(
            generationID: "gen_1", number: 2, provider: "sim", clientReference: "gen_1-a2", providerTaskID: taskID,
            outputIndexes: [0], state: state, error: nil, createdAt: now, finishedAt: nil)
    }

    func testRetryableErrorsAreRetriedWithBackOffUntilAttemptsRunOut() {
        let policy = RetryPolicy(maxAttempts: 3, baseSeconds: 2, maxSeconds: 60)
        let busy = GenGateError(.providerUnavailable, "busy", retryable: true)
        let far = now.addingTimeInterval(3_600)
        XCTAssertEqual(
            policy.decide(after: busy, attempts: 1, deadline: far, now: now, random: noJitter),
            .retry(at: now.addingTimeInterval(2)))
        XCTAssertEqual(
            policy.decide(after: busy, attempts: 2, deadline: far, now: now, random: noJitter),
            .retry(at: now.addingTimeInterval(4)))
        guard case .fail(let final) = policy.decide(after: busy, attempts: 3, deadline: far, now: now) else {
            return XCTFail()
        }
        XCTAssertFalse(final.retryable)
        XCTAssertTrue(final.message.contains("gave up after 3 attempts"), final.message)
    }

    func testRateLimitsWaitAtLeastRetryAfterAndNeverPastTheDeadline() {
        let policy = RetryPolicy(maxAttempts: 5, baseSeconds: 1, maxSeconds: 60)
        let throttled = GenGateError(.rateLimited, "slow down", retryable: true, retryAfter: 20)
        XCTAssertEqual(
            policy.decide(
                after: throttled, attempts: 1, deadline: now.addingTimeInterval(3_600), now: now, random: noJitter),
            .retry(at: now.addingTimeInterval(20)))
        guard
            case .fail(let final) = policy.decide(
                after: throttled, attempts: 1, deadline: now.addingTimeInterval(10), now: now)
        else {
            return XCTFail("a retry after the deadline is no retry")
        }
        XCTAssertEqual(final.code, .rateLimited)
        XCTAssertFalse(final.retryable)
        let refused = GenGateError(.contentPolicy, "refused")
        XCTAssertEqual(policy.decide(after: refused, attempts: 1, deadline: .distantFuture, now: now), .fail(refused))
    }

    /// A rate limit that named no wait backs off from the longer base (the provider asked for
    /// less), and providers can have policies of their own.
    func testARateLimitWithoutRetryAfterBacksOffLongerAndProvidersHaveTheirOwnPolicy() {
        let policy = RetryPolicy(maxAttempts: 5, baseSeconds: 2, maxSeconds: 60, rateLimitBaseSeconds: 30)
        let throttled = GenGateError(.rateLimited, "slow down", retryable: true)
        let far = now.addingTimeInterval(3_600)
        XCTAssertEqual(
            policy.decide(after: throttled, attempts: 1, deadline: far, now: now, random: noJitter),
            .retry(at: now.addingTimeInterval(30)))
        XCTAssertEqual(
            policy.decide(after: throttled, attempts: 4, deadline: far, now: now, random: noJitter),
            .retry(at: now.addingTimeInterval(120)), "capped at four times the base, past max_seconds")
        // A back-off past the deadline is shortened to fit, never turned into a failure.
        let soon = now.addingTimeInterval(11)
        XCTAssertEqual(
            policy.decide(after: throttled, attempts: 1, deadline: soon, now: now, random: noJitter),
            .retry(at: now.addingTimeInterval(10)))
        guard
            case .fail = policy.decide(
                after: GenGateError(.rateLimited, "wait", retryAfter: 20), attempts: 1, deadline: soon, now: now)
        else { return XCTFail("the provider's own wait does not fit: no retry") }
        let busy = GenGateError(.providerUnavailable, "busy")
        XCTAssertEqual(
            policy.decide(after: busy, attempts: 1, deadline: far, now: now, random: noJitter),
            .retry(at: now.addingTimeInterval(2)))
        let jobs = JobPolicy(retry: policy, providerRetry: ["kling": RetryPolicy(maxAttempts: 8, baseSeconds: 5)])
        XCTAssertEqual(jobs.retry(for: "kling").maxAttempts, 8)
        XCTAssertEqual(jobs.retry(for: "flux"), policy)
    }

    func testRecoveryNeverResubmitsWhatIsOnRecordAndCountsWhatItCannotRuleOut() {
        XCTAssertEqual(
            SubmissionRecovery.decide(last: nil, providerFindsByReference: false),
            .resubmit(abandoning: nil, possibleDoubleCharge: false))
        XCTAssertEqual(
            SubmissionRecovery.decide(last: attempt(.submitted, taskID: "t1"), providerFindsByReference: false),
            .resume(taskID: "t1", attempt: 2))
        let interrupted = attempt(.submitting)
        XCTAssertEqual(
            SubmissionRecovery.decide(last: interrupted, providerFindsByReference: true), .askProvider(interrupted))
        XCTAssertEqual(
            SubmissionRecovery.decide(last: interrupted, providerFindsByReference: false),
            .resubmit(abandoning: interrupted, possibleDoubleCharge: true))
        XCTAssertEqual(
            SubmissionRecovery.afterAsking(interrupted, found: "t9", askFailed: false),
            .resume(taskID: "t9", attempt: 2))
        XCTAssertEqual(
            SubmissionRecovery.afterAsking(interrupted, found: nil, askFailed: false),
            .resubmit(abandoning: interrupted, possibleDoubleCharge: false), "the provider says it never got it")
        XCTAssertEqual(
            SubmissionRecovery.afterAsking(interrupted, found: nil, askFailed: true),
            .resubmit(abandoning: interrupted, possibleDoubleCharge: true))
        XCTAssertEqual(
            SubmissionRecovery.decide(last: attempt(.failed), providerFindsByReference: false),
            .resubmit(abandoning: nil, possibleDoubleCharge: false))
    }

    /// A submission the provider refused out loud reached nothing; one that timed out, was cut
    /// off, met a 5xx or got an unreadable answer may have created a task.
    func testOnlyAStatedRefusalRulesOutThatASubmissionReachedTheProvider() {
        for code in [ErrorCode.providerTimeout, .providerUnavailable, .providerError, .internalError] {
            XCTAssertTrue(SubmissionRecovery.mayHaveReachedProvider(GenGateError(code, "x")), code.rawValue)
        }
        for code in [ErrorCode.rateLimited, .authenticationFailed, .quotaExceeded, .invalidRequest, .contentPolicy] {
            XCTAssertFalse(SubmissionRecovery.mayHaveReachedProvider(GenGateError(code, "x")), code.rawValue)
        }
    }

    func testLifecycleAllowsOnlyForwardMovesAndTerminalStatesAreFinal() {
        XCTAssertTrue(Lifecycle.allows(from: .pending, to: .dispatching))
        XCTAssertTrue(Lifecycle.allows(from: .dispatching, to: .running))
        XCTAssertTrue(Lifecycle.allows(from: .running, to: .running))
        XCTAssertTrue(Lifecycle.allows(from: .uploading, to: .pending), "more outputs to ask for")
        XCTAssertFalse(Lifecycle.allows(from: .pending, to: .running))
        XCTAssertFalse(Lifecycle.allows(from: .running, to: .dispatching))
        for terminal in [GenerationStatus.completed, .failed, .cancelled] {
            for to in GenerationStatus.allCases { XCTAssertFalse(Lifecycle.allows(from: terminal, to: to)) }
            XCTAssertNil(Lifecycle.Step.working(on: terminal))
        }
        for status in GenerationStatus.active where status != .waiting {
            XCTAssertNotNil(Lifecycle.Step.working(on: status), "every active status has a step that moves it on")
            XCTAssertTrue(Lifecycle.allows(from: status, to: .cancelled))
        }
        // A chain's step waits for another job: no step works on it; its input's job's end moves
        // it on (`releaseWaiting`), to pending, or to failed or cancelled.
        XCTAssertNil(Lifecycle.Step.working(on: .waiting))
        for to in [GenerationStatus.pending, .failed, .cancelled] {
            XCTAssertTrue(Lifecycle.allows(from: .waiting, to: to))
        }
        XCTAssertFalse(Lifecycle.allows(from: .waiting, to: .dispatching))
        XCTAssertFalse(Lifecycle.allows(from: .pending, to: .waiting))
        XCTAssertEqual(Lifecycle.Step.working(on: .running), .check)
    }

    func testPolicyPicksTheModelsScheduleThenItsKinds() {
        let own = CheckSchedule(firstSeconds: 60, factor: 1, maxSeconds: 60, jitter: 0)
        let policy = JobPolicy(modelSchedules: ["kling/v2": own])
        XCTAssertEqual(policy.schedule(model: "kling/v2", kind: .video), own)
        XCTAssertEqual(policy.schedule(model: "other/video", kind: .video), .video)
        XCTAssertEqual(policy.schedule(model: "sim/image", kind: .image), .image)
        XCTAssertNil(CheckSchedule.video.problem(named: "x"))
        XCTAssertNotNil(CheckSchedule(firstSeconds: 0, factor: 1, maxSeconds: 1, jitter: 0).problem(named: "x"))
    }

    /// A circuit opens after a run of unreachable answers, lets one probe through after the
    /// cool-down, and closes on any answer; other providers and other failures do not count, and
    /// a probe that never reports is forgotten.
    func testACircuitOpensOnARunOfUnreachableAnswersAndAProbeClosesIt() {
        let circuit = ProviderCircuit(threshold: 3, coolDown: 30)
        let down = GenGateError(.providerUnavailable, "503")
        XCTAssertEqual(circuit.admit("kling", now: now), .go)
        XCTAssertFalse(circuit.record("kling", error: down, now: now))
        XCTAssertFalse(circuit.record("kling", error: GenGateError(.internalError, "ours"), now: now), "neutral")
        XCTAssertFalse(circuit.record("kling", error: down, now: now))
        XCTAssertTrue(circuit.record("kling", error: GenGateError(.providerTimeout, "slow"), now: now), "third")
        XCTAssertEqual(circuit.admit("kling", now: now + 10), .wait(until: now + 30))
        XCTAssertEqual(circuit.admit("flux", now: now + 10), .go, "one provider's circuit only")
        XCTAssertEqual(circuit.admit("kling", now: now + 31), .go, "the probe")
        XCTAssertEqual(circuit.admit("kling", now: now + 31), .wait(until: now + 61), "one probe at a time")
        XCTAssertTrue(circuit.record("kling", error: down, now: now + 32), "a failed probe opens it again")
        XCTAssertEqual(circuit.admit("kling", now: now + 40), .wait(until: now + 62))
        XCTAssertEqual(circuit.admit("kling", now: now + 63), .go, "a probe…")
        XCTAssertEqual(circuit.admit("kling", now: now + 94), .go, "…that never reported is forgotten")
        circuit.record("kling", error: GenGateError(.contentPolicy, "no"), now: now + 95)
        XCTAssertFalse(circuit.isOpen("kling"), "the provider answered")
        XCTAssertEqual(circuit.admit("kling", now: now + 96), .go)
        XCTAssertEqual(circuit.admit("kling", now: now + 96), .go, "closed: no probing")
    }
}
