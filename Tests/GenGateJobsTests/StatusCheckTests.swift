import Foundation
import GenGateCore
import GenGateObjects
import GenGateJobs
import GenGateProviders
@testable import GenGateStore
import XCTest

/// The poller's step and the uploader's, against a real (temporary) SQLite store.
final class StatusCheckTests: XCTestCase {
    func running(_ harness: Harness, n: Int = 1) async throws -> Generation {
        let job = try await harness.submit(n: n)
        try await Submission(context: try harness.context()).dispatch(job.id)
        try await harness.makeCheckDue(job.id)
        return try await harness.job(job.id)
    }

    func claimFirst(_ harness: Harness) async throws -> Generation {
        let claimed = try await harness.claimDue()
        return try XCTUnwrap(claimed.first, "nothing was due")
    }

    func testAnUnchangedCheckWritesOnlyItsNextTimeAndLetsGo() async throws {
        let harness = try await Harness()
        let job = try await running(harness)
        let checks = StatusChecks(context: try harness.context("poller-a"))
        let claimed = try await harness.claimDue()
        XCTAssertEqual(claimed.map(\.id), [job.id])
        XCTAssertEqual(claimed.first?.leaseOwner, "poller-a")

        let eventsBefore = try await harness.store.events(generationID: job.id).count
        await checks.check(try XCTUnwrap(claimed.first))
        let after = try await harness.job(job.id)
        XCTAssertEqual(after.status, .running)
        XCTAssertNil(after.leaseOwner, "no lease is kept between checks")
        XCTAssertEqual(after.checks, 1)
        XCTAssertGreaterThan(after.nextActionAt ?? .distantPast, Date())
        let eventsAfter = try await harness.store.events(generationID: job.id).count
        XCTAssertEqual(eventsAfter, eventsBefore, "nothing changed, so no event")

        harness.provider.script(.running(progress: 50))
        try await harness.makeCheckDue(job.id)
        await checks.check(try await claimFirst(harness))
        let progressed = try await harness.job(job.id)
        XCTAssertEqual(progressed.progress, 45)
        let last = try await harness.store.events(generationID: job.id).last
        XCTAssertEqual(last?.type, .generationProgress)
    }

    func testAFinishedTaskMovesToUploadingWithItsAttemptClosedInOneGo() async throws {
        let harness = try await Harness()
        let job = try await running(harness, n: 2)
        harness.provider.script(.succeeded(outputs: ScriptedProvider.outputs([0, 1])))
        await StatusChecks(context: try harness.context("poller-a")).check(try await claimFirst(harness))

        let uploading = try await harness.job(job.id)
        XCTAssertEqual(uploading.status, .uploading)
        XCTAssertEqual(uploading.outputs.map(\.index), [0, 1])
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.succeeded])
        XCTAssertEqual(harness.noticed(.upload), [job.id])

        try await OutputTransfer(context: try harness.context("uploader-a")).transfer(job.id)
        let done = try await harness.job(job.id)
        XCTAssertEqual(done.status, .completed)
        XCTAssertEqual(done.outputs.filter(\.isStored).count, 2)
    }

    func testPollersShareDueChecksWithoutTakingOneTwice() async throws {
        let harness = try await Harness()
        var ids: Set<String> = []
        for _ in 0..<40 { ids.insert(try await running(harness).id) }
        async let a = harness.claimDue(owner: "poller-a", limit: 25)
        async let b = harness.claimDue(owner: "poller-b", limit: 25)
        let (first, second) = try await (a, b)
        XCTAssertTrue(Set(first.map(\.id)).isDisjoint(with: second.map(\.id)), "a check is claimed by one poller")
        XCTAssertEqual(Set(first.map(\.id) + second.map(\.id)), ids)
        let again = try await harness.claimDue(owner: "poller-c")
        XCTAssertEqual(again, [], "claimed checks are not due to anyone else")
    }

    func testAProviderThatGivesFewerOutputsPerCallIsAskedAgainForTheRest() async throws {
        let harness = try await Harness(provider: ScriptedProvider(maxOutputsPerCall: 2))
        let job = try await running(harness, n: 3)
        let context = try harness.context()
        harness.provider.script(.succeeded(outputs: ScriptedProvider.outputs([0, 1])))
        await StatusChecks(context: context).check(try await claimFirst(harness))
        try await OutputTransfer(context: context).transfer(job.id)
        let between = try await harness.job(job.id)
        XCTAssertEqual(between.status, .pending, "two of three stored; not a failure")
        XCTAssertNil(between.error)

        try await Submission(context: context).dispatch(job.id)
        try await harness.makeCheckDue(job.id)
        harness.provider.script(.succeeded(outputs: ScriptedProvider.outputs([2])))
        await StatusChecks(context: context).check(try await claimFirst(harness))
        try await OutputTransfer(context: context).transfer(job.id)

        let done = try await harness.job(job.id)
        XCTAssertEqual(done.status, .completed)
        XCTAssertEqual(done.attempts, 2)
        XCTAssertEqual(harness.provider.submissions, ["\(job.id)-a1", "\(job.id)-a2"])
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.outputIndexes), [[0, 1], [2]])
    }

    func testATaskPastItsDeadlineIsCancelledAndTheJobFails() async throws {
        let harness = try await Harness()
        let job = try await harness.submit(deadline: 0.3)
        try await Submission(context: try harness.context()).dispatch(job.id)
        try await Task.sleep(for: .milliseconds(400))
        try await harness.makeCheckDue(job.id)
        await StatusChecks(context: try harness.context()).check(try await claimFirst(harness))
        let failed = try await harness.job(job.id)
        XCTAssertEqual(failed.status, .failed)
        XCTAssertEqual(failed.error?.code, .taskTimeout)
        XCTAssertEqual(harness.provider.cancelled, ["task-\(job.id)-a1"])
        XCTAssertEqual(harness.provider.statusCalls, 0, "no status call is worth making past the deadline")
    }

    func testATaskWhoseStatusCannotBeReadIsStoppedBeforeItIsSubmittedAgain() async throws {
        let harness = try await Harness(
            policy: JobPolicy(
                retry: RetryPolicy(maxAttempts: 3, baseSeconds: 0.1, maxSeconds: 1),
                maxCheckFailures: 1))
        let job = try await running(harness)
        harness.provider.state.withLock { $0.statusError = GenGateError(.providerUnavailable, "502", retryable: true) }
        await StatusChecks(context: try harness.context()).check(try await claimFirst(harness))
        let waiting = try await harness.job(job.id)
        XCTAssertEqual(waiting.status, .retryWait)
        XCTAssertEqual(harness.provider.cancelled, ["task-\(job.id)-a1"], "stopped, so a retry does not pay twice")
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.failed])
        let charges = try await harness.store.possibleDoubleCharges()
        XCTAssertEqual(charges, [:])
    }

    func testAnUploadCancelledByShutdownLetsGoInsteadOfFailing() async throws {
        let harness = try await Harness()
        let job = try await running(harness)
        harness.provider.script(.succeeded(outputs: ScriptedProvider.outputs([0])))
        await StatusChecks(context: try harness.context()).check(try await claimFirst(harness))
        harness.provider.state.withLock { $0.fetchDelay = .seconds(5) }
        let transfer = Task { try await OutputTransfer(context: try harness.context("uploader-a")).transfer(job.id) }
        try await Task.sleep(for: .milliseconds(200))
        transfer.cancel()
        try await transfer.value
        let after = try await harness.job(job.id)
        XCTAssertEqual(after.status, .uploading, "a paid task's outputs are not given up because a process stopped")
        XCTAssertNil(after.leaseOwner)
    }

    /// Object storage refuses an output twice: the upload is tried again from what was fetched,
    /// and the provider's file is fetched once.
    func testAnUploadTriedAgainDoesNotFetchTheOutputAgain() async throws {
        let harness = try await Harness()
        let job = try await running(harness)
        harness.provider.script(.succeeded(outputs: ScriptedProvider.outputs([0])))
        await StatusChecks(context: try harness.context()).check(try await claimFirst(harness))
        let objects = FailingObjects(
            inner: try LocalObjectStore(root: harness.directory.appendingPathComponent("objects")), failures: 2)
        try await OutputTransfer(context: try harness.context("uploader-a", objects: objects)).transfer(job.id)
        let after = try await harness.job(job.id)
        XCTAssertEqual(after.status, .completed)
        XCTAssertEqual(objects.failures.withLock { $0 }, 0, "storage was tried three times")
        XCTAssertEqual(harness.provider.state.withLock { $0.fetches }, 1, "the output was fetched once")
    }

    /// Another worker takes the job while an upload runs (the lease lapsed): this one stops at
    /// once instead of moving the bytes to the end, and records nothing.
    func testAnUploadWhoseLeaseIsLostStopsMovingBytes() async throws {
        let harness = try await Harness()
        let job = try await running(harness)
        harness.provider.script(.succeeded(outputs: ScriptedProvider.outputs([0])))
        await StatusChecks(context: try harness.context()).check(try await claimFirst(harness))
        harness.provider.state.withLock { $0.fetchDelay = .seconds(10) }
        let context = try harness.context("uploader-a", policy: JobPolicy(leaseSeconds: 0.6))
        let started = ContinuousClock.now
        let transfer = Task { try await OutputTransfer(context: context).transfer(job.id) }
        try await Task.sleep(for: .milliseconds(300))
        _ = try await harness.store.releaseLeases(owners: ["uploader-a"], dueAt: Date())
        let taken = try await harness.store.claim(
            id: job.id, statuses: [.uploading], owner: "uploader-b", leaseUntil: Date() + 60, now: Date())
        XCTAssertNotNil(taken)
        try await transfer.value
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(3), "stopped when the lease was found lost")
        let after = try await harness.job(job.id)
        XCTAssertEqual(after.leaseOwner, "uploader-b")
        XCTAssertEqual(after.status, .uploading)
        XCTAssertFalse(after.outputs.contains(where: \.isStored))
    }

    func testTheCheckLoopFollowsManyTasksToTheEnd() async throws {
        let harness = try await Harness(
            policy: JobPolicy(kindSchedules: [
                .image: CheckSchedule(
                    firstSeconds: 0.05, factor: 1.5,
                    maxSeconds: 0.2, jitter: 0.2)
            ]))
        var ids: [String] = []
        for _ in 0..<200 {
            let job = try await harness.submit()
            try await Submission(context: try harness.context()).dispatch(job.id)
            ids.append(job.id)
        }
        let checks = StatusChecks(context: try harness.context("poller-a"), idleLook: .milliseconds(50))
        let loop = Task { try await checks.run() }
        try await Task.sleep(for: .milliseconds(300))
        for _ in ids { harness.provider.script(.succeeded(outputs: ScriptedProvider.outputs([0]))) }
        try await harness.until(.seconds(10)) {
            let counts = try await harness.store.activeCounts()
            return counts[.running] == 0
        }
        // A check sends its hint just after its commit: the loop ends once every check in
        // flight has finished, and only then is the list of hints complete.
        loop.cancel()
        _ = await loop.result
        let counts = try await harness.store.activeCounts()
        XCTAssertEqual(counts[.uploading], 200)
        XCTAssertEqual(Set(harness.noticed(.upload)).count, 200)
    }

    /// A provider's callback makes only the current attempt's next check due, and only when no
    /// worker holds the job; the schedule starts again.
    func testACallbackNudgesOnlyARunningJobsCurrentAttempt() async throws {
        let harness = try await Harness()
        let pending = try await harness.submit()
        var result = try await harness.store.nudgeCheck(generationID: pending.id, attempt: 0, now: Date())
        XCTAssertEqual(result, .notRunning)
        let job = try await harness.submit()
        try await Submission(context: try harness.context()).dispatch(job.id)
        try await harness.makeCheckDue(job.id)
        await StatusChecks(context: try harness.context("poller-a")).check(try await claimFirst(harness))
        let running = try await harness.job(job.id)
        XCTAssertEqual(running.status, .running)
        XCTAssertEqual(running.checks, 1)
        result = try await harness.store.nudgeCheck(generationID: job.id, attempt: 2, now: Date())
        XCTAssertEqual(result, .notRunning, "an older or other attempt's callback")
        let now = Date()
        result = try await harness.store.nudgeCheck(generationID: job.id, attempt: 1, now: now)
        XCTAssertEqual(result, .nudged)
        let nudged = try await harness.job(job.id)
        XCTAssertEqual(nudged.nextActionAt?.timeIntervalSince1970 ?? 0, now.timeIntervalSince1970, accuracy: 0.001)
        XCTAssertEqual(nudged.checks, 0)
        XCTAssertEqual(nudged.version, running.version, "nothing else changes")
        result = try await harness.store.nudgeCheck(generationID: job.id, attempt: 1, now: Date())
        XCTAssertEqual(result, .alreadyDue)
        _ = try await harness.claimDue()
        result = try await harness.store.nudgeCheck(generationID: job.id, attempt: 1, now: Date())
        XCTAssertEqual(result, .busy, "a check is under way")
        result = try await harness.store.nudgeCheck(generationID: "gen_nope", attempt: 1, now: Date())
        XCTAssertEqual(result, .notRunning)
    }
}
