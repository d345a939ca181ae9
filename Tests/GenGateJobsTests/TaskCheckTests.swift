import Foundation
import GenGateCore
import GenGateJobs
import GenGateProviders
import XCTest

/// The check state machine and its schedule, without a store, a bus or a clock.
final class TaskCheckTests: XCTestCase {
    let start = Date(timeIntervalSince1970: 1_800_000_000)
    let noJitter: (ClosedRange<Double>) -> Double = { _ in 1 }
    let schedule = CheckSchedule(firstSeconds: 1, factor: 2, maxSeconds: 10, jitter: 0.2)

    func check(deadline: TimeInterval = 3_600) -> TaskCheck {
        TaskCheck(
            checks: 0, failures: 0, progress: 0, schedule: schedule, maxFailures: 3,
            deadline: start.addingTimeInterval(deadline))
    }

    func testScheduleBacksOffToItsCapAndHonoursRetryAfter() {
        let delays = (0..<6).map { schedule.delay(afterCheck: $0, random: noJitter) }
        XCTAssertEqual(delays, [1, 2, 4, 8, 10, 10])
        XCTAssertEqual(schedule.delay(afterCheck: 0, retryAfter: 7, random: noJitter), 7, "Retry-After is a floor")
        XCTAssertEqual(schedule.delay(afterCheck: 10_000, random: noJitter), 10, "no overflow far out")
    }

    /// A provider's estimate of when the task ends replaces the back-off, bounded by the
    /// schedule's first and longest intervals, and is jittered only later.
    func testTheProvidersEstimateSetsTheNextCheckWithinTheSchedulesBounds() {
        XCTAssertEqual(schedule.delay(afterCheck: 5, eta: 3, random: noJitter), 3, "sooner than the back-off")
        XCTAssertEqual(schedule.delay(afterCheck: 0, eta: 6, random: noJitter), 6, "later than the back-off")
        XCTAssertEqual(schedule.delay(afterCheck: 0, eta: 0, random: noJitter), 1, "never a busy loop")
        XCTAssertEqual(
            schedule.delay(afterCheck: 5, eta: 0, random: noJitter), 2.5,
            "an estimate that stays at zero still backs off, to a quarter of the schedule")
        XCTAssertEqual(schedule.delay(afterCheck: 0, eta: 3_600, random: noJitter), 10, "never past the longest wait")
        XCTAssertEqual(schedule.delay(afterCheck: 0, eta: .nan, random: noJitter), 1, "nonsense is ignored")
        XCTAssertEqual(schedule.delay(afterCheck: 0, retryAfter: 8, eta: 3, random: noJitter), 8)
        let jittered = (0..<200).map { _ in schedule.delay(afterCheck: 0, eta: 4) }
        XCTAssertGreaterThanOrEqual(jittered.min()!, 4, "never before the estimate")
        XCTAssertLessThanOrEqual(jittered.max()!, 4 * 1.1 + 1e-9)
        let capped = (0..<200).map { _ in schedule.delay(afterCheck: 0, eta: 9.9) }
        XCTAssertLessThanOrEqual(capped.max()!, 10, "jitter never carries it past the longest wait")
        var task = check()
        XCTAssertEqual(
            task.observe(.success(.running(progress: 20, eta: 5)), now: start, random: noJitter),
            .checkAgain(at: start.addingTimeInterval(5), progressChanged: true))
    }

    func testJitterSpreadsTasksSubmittedTogether() {
        let firsts = (0..<1_000).map { _ in
            TaskCheck.firstCheck(after: start, schedule: schedule, deadline: .distantFuture)
        }
        let offsets = firsts.map { $0.timeIntervalSince(start) }
        // Within ±20 %, up to what a Date (seconds since 2001 in a Double) can tell apart.
        XCTAssertGreaterThanOrEqual(offsets.min()!, 0.8 - 1e-6)
        XCTAssertLessThanOrEqual(offsets.max()!, 1.2 + 1e-6)
        XCTAssertGreaterThan(
            Set(offsets.map { ($0 * 100).rounded() }).count, 30, "1,000 tasks must not check in a few bunches")
    }

    func testRunningTaskIsCheckedAgainAndProgressChangesOnlyWhenItMoves() {
        var task = check()
        XCTAssertEqual(
            task.observe(.success(.running(progress: 50)), now: start, random: noJitter),
            .checkAgain(at: start.addingTimeInterval(2), progressChanged: true))
        XCTAssertEqual(task.progress, 45, "provider progress maps to 0–90")
        XCTAssertEqual(
            task.observe(.success(.running(progress: 50)), now: start, random: noJitter),
            .checkAgain(at: start.addingTimeInterval(4), progressChanged: false))
        XCTAssertEqual(
            task.observe(.success(.running(progress: 10)), now: start, random: noJitter),
            .checkAgain(at: start.addingTimeInterval(8), progressChanged: false), "progress never goes back")
        XCTAssertEqual(
            task.observe(.success(.queued), now: start, random: noJitter),
            .checkAgain(at: start.addingTimeInterval(10), progressChanged: false))
        XCTAssertEqual(task.checks, 4)
    }

    func testNextCheckNeverLiesPastTheDeadline() {
        var task = check(deadline: 1.5)
        XCTAssertEqual(
            task.observe(.success(.queued), now: start, random: noJitter),
            .checkAgain(at: start.addingTimeInterval(1.5), progressChanged: false))
        XCTAssertEqual(task.observe(.success(.queued), now: start.addingTimeInterval(1.5), random: noJitter), .timedOut)
    }

    func testFinishedTasksEndTheAttempt() {
        let outputs = [Output(index: 0, source: "s", contentType: "image/png")]
        var task = check()
        XCTAssertEqual(task.observe(.success(.succeeded(outputs: outputs)), now: start), .upload(outputs))
        let failure = GenGateError(.contentPolicy, "no")
        XCTAssertEqual(task.observe(.success(.failed(failure)), now: start), .attemptFailed(failure))
        guard case .attemptFailed(let error) = task.observe(.success(.cancelled), now: start) else { return XCTFail() }
        XCTAssertTrue(error.retryable)
    }

    func testFailedStatusCallsAreToleratedUpToTheLimitInARow() {
        var task = check()
        let flaky = GenGateError(.providerUnavailable, "502", retryable: true, retryAfter: 30)
        XCTAssertEqual(
            task.observe(.failure(flaky), now: start, random: noJitter),
            .checkAgain(at: start.addingTimeInterval(30), progressChanged: false), "Retry-After respected")
        XCTAssertEqual(
            task.observe(.failure(flaky), now: start, random: noJitter),
            .checkAgain(at: start.addingTimeInterval(30), progressChanged: false))
        _ = task.observe(.success(.queued), now: start)
        XCTAssertEqual(task.failures, 0, "a good answer resets the run")
        _ = task.observe(.failure(flaky), now: start)
        _ = task.observe(.failure(flaky), now: start)
        XCTAssertEqual(task.observe(.failure(flaky), now: start), .checksFailed(flaky), "the third in a row ends it")

        var other = check()
        let fatal = GenGateError(.authenticationFailed, "bad key")
        XCTAssertEqual(
            other.observe(.failure(fatal), now: start), .checksFailed(fatal), "a non-retryable error ends it at once")
    }
}
