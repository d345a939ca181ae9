import Foundation
import GenGateCore
import GenGateJobs
import GenGateProviders
import GenGateStore
import GenGateObjects
import Logging
import Synchronization
import XCTest

/// The dispatcher's step against a real (temporary) SQLite store: what is recorded when, and
/// what happens wherever a stop, a cancel or a lost lease lands.
final class SubmissionTests: XCTestCase {
    func testASubmissionIsRecordedWithTheMoveToRunningAndItsFirstCheckIsScheduled() async throws {
        let harness = try await Harness()
        let job = try await harness.submit(n: 2)
        let before = Date()
        try await Submission(context: harness.context()).dispatch(job.id)

        let running = try await harness.job(job.id)
        XCTAssertEqual(running.status, .running)
        XCTAssertEqual(running.attempts, 1)
        XCTAssertNil(running.leaseOwner, "nothing is held while the provider works")
        XCTAssertEqual(running.providerTaskID, "task-\(job.id)-a1")
        let firstCheck = try XCTUnwrap(running.nextActionAt).timeIntervalSince(before)
        XCTAssertGreaterThan(firstCheck, 0.3, "the image schedule's first check, jittered")
        XCTAssertLessThan(firstCheck, 0.8)
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.submitted])
        XCTAssertEqual(attempts.first?.providerTaskID, running.providerTaskID)
        XCTAssertEqual(harness.provider.submissions, ["\(job.id)-a1"])
        XCTAssertEqual(harness.noticed(.check), [job.id])
    }

    func testAShutdownCancellingTheHandlerMidCallStillRecordsTheSubmission() async throws {
        let harness = try await Harness(provider: ScriptedProvider(submitDelay: .milliseconds(400)))
        let job = try await harness.submit()
        let submission = Submission(context: try harness.context())
        let handler = Task { await submission.handle(job.id) }
        try await harness.until { harness.provider.submissions.count == 1 }
        handler.cancel()  // what ServiceLifecycle does to a handler when its drain time is up
        await handler.value

        let running = try await harness.job(job.id)
        XCTAssertEqual(
            running.status, .running, "the provider's answer was recorded although the handler was cancelled")
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.submitted])

        // And nothing is submitted again: the job is simply checked.
        try await Submission(context: try harness.context("worker-b")).dispatch(job.id)
        XCTAssertEqual(harness.provider.submissions.count, 1)
    }

    func testAStopBetweenRecordAndAnswerIsRecoveredByAskingTheProvider() async throws {
        let harness = try await Harness(provider: ScriptedProvider(findsByReference: true))
        let job = try await leftMidSubmission(harness, reachedProvider: true)
        try await Submission(context: try harness.context("worker-b")).dispatch(job.id)

        let running = try await harness.job(job.id)
        XCTAssertEqual(running.status, .running)
        XCTAssertEqual(running.attempts, 1)
        XCTAssertEqual(harness.provider.submissions.count, 1, "found by reference, not submitted again")
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.submitted])
        let charges = try await harness.store.possibleDoubleCharges()
        XCTAssertEqual(charges, [:])
    }

    func testAProviderThatNeverGotTheSubmissionIsSubmittedToWithoutCountingADoubleCharge() async throws {
        let harness = try await Harness(provider: ScriptedProvider(findsByReference: true))
        let job = try await leftMidSubmission(harness, reachedProvider: false)
        try await Submission(context: try harness.context("worker-b")).dispatch(job.id)
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.abandoned, .submitted])
        XCTAssertEqual(harness.provider.submissions.count, 1)
        let charges = try await harness.store.possibleDoubleCharges()
        XCTAssertEqual(charges, [:])
    }

    /// A provider whose list may lag a fresh submission (Kling): "not found" that soon is asked
    /// again later; only once the submission has settled is it taken for "never got it".
    func testAProviderThatMayNotListAFreshSubmissionYetIsAskedAgainLater() async throws {
        let harness = try await Harness(provider: ScriptedProvider(findsByReference: true, referenceSettleSeconds: 0.5))
        let job = try await leftMidSubmission(harness, reachedProvider: false)
        try await Submission(context: try harness.context("worker-b")).dispatch(job.id)
        var attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.submitting], "not resubmitted yet")
        XCTAssertEqual(harness.provider.submissions.count, 0)
        let waiting = try await harness.job(job.id)
        XCTAssertEqual(waiting.status, .dispatching)
        XCTAssertNil(waiting.leaseOwner)
        XCTAssertGreaterThan(waiting.nextActionAt ?? .distantPast, Date(), "asked again later")

        try await Task.sleep(for: .milliseconds(600))
        try await harness.makeCheckDue(job.id)
        try await Submission(context: try harness.context("worker-b")).dispatch(job.id)
        attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.abandoned, .submitted])
        let charges = try await harness.store.possibleDoubleCharges()
        XCTAssertEqual(charges, [:], "settled and not there: it never got it")
    }

    func testWhereTheProviderCannotTellTheResubmissionIsCountedInTheStore() async throws {
        let harness = try await Harness(provider: ScriptedProvider(findsByReference: false))
        let job = try await leftMidSubmission(harness, reachedProvider: true)
        try await Submission(context: try harness.context("worker-b")).dispatch(job.id)

        let running = try await harness.job(job.id)
        XCTAssertEqual(running.status, .running)
        XCTAssertEqual(running.attempts, 2)
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.abandoned, .submitted])
        XCTAssertEqual(harness.provider.submissions.count, 2)
        let charges = try await harness.store.possibleDoubleCharges()
        XCTAssertEqual(charges, ["scripted": 1])
    }

    /// A submission that timed out (or met a 5xx, or a dropped connection) may have created a task
    /// the provider bills: the retry is counted as a possible double charge in the store. A
    /// refusal the provider stated (429) is retried without one.
    func testASubmissionWithoutAStatedAnswerIsRetriedAndCountedARefusalIsNot() async throws {
        let harness = try await Harness(
            policy: JobPolicy(leaseSeconds: 30, retry: RetryPolicy(maxAttempts: 4, baseSeconds: 0, maxSeconds: 0)))
        harness.provider.state.withLock {
            $0.submitErrors = [
                GenGateError(.rateLimited, "429", retryAfter: 0), GenGateError(.providerTimeout, "no answer"),
            ]
        }
        let job = try await harness.submit()
        for _ in 0..<3 {
            try await Submission(context: harness.context()).dispatch(job.id)
            try await harness.makeCheckDue(job.id)
        }
        let running = try await harness.job(job.id)
        XCTAssertEqual(running.status, .running)
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.failed, .failed, .submitted])
        let charges = try await harness.store.possibleDoubleCharges()
        XCTAssertEqual(charges, ["scripted": 1], "the timed-out attempt, not the refused one")
        XCTAssertEqual(harness.provider.submissions.count, 3)
    }

    func testARetryThatWouldPassTheKeysBudgetAfterAChargedFailureFailsTheJobUnsubmitted() async throws {
        let harness = try await Harness(
            policy: JobPolicy(leaseSeconds: 30, retry: RetryPolicy(maxAttempts: 4, baseSeconds: 0, maxSeconds: 0)))
        _ = try await harness.store.updateAPIKey(id: harness.owner.id, budgets: BudgetChange(daily: .some(0.7)))
        let prices = PriceTable(configured: ["scripted/image": Price(perImage: 0.5)])
        // No answer: the provider may have taken (and billed) the submission.
        harness.provider.state.withLock { $0.submitErrors = [GenGateError(.providerTimeout, "no answer")] }
        let job = try await harness.submit(reserved: 0.5)
        try await Submission(context: harness.context(prices: prices)).dispatch(job.id)
        try await harness.makeCheckDue(job.id)
        try await Submission(context: harness.context(prices: prices)).dispatch(job.id)

        let failed = try await harness.job(job.id)
        XCTAssertEqual(failed.status, .failed)
        XCTAssertEqual(failed.error?.code, .budgetExceeded, "\(failed.error?.message ?? "")")
        XCTAssertEqual(harness.provider.submissions.count, 1, "the retry was never sent")
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.charged), [true])
        XCTAssertEqual(attempts.first?.cost ?? 0, 0.5, accuracy: 1e-9)
        let spend = try await harness.store.spend(keyID: harness.owner.id, at: Date())
        XCTAssertEqual(spend.day, 0.5, accuracy: 1e-9, "what it may have been charged, and no more")
    }

    func testAnAnswerArrivingAfterAnotherWorkerTookOverWritesNothingAndItsTaskIsCancelled() async throws {
        let harness = try await Harness(
            provider: ScriptedProvider(submitDelay: .milliseconds(600)),
            policy: JobPolicy(leaseSeconds: 30))
        let job = try await harness.submit()
        let slow = Task { try await Submission(context: try harness.context("worker-a")).dispatch(job.id) }
        try await harness.until { harness.provider.submissions.count == 1 }
        // Worker A is judged gone (its lease voided); worker B recovers the job meanwhile.
        _ = try await harness.store.releaseLeases(owners: ["worker-a"], dueAt: Date())
        try await Submission(context: try harness.context("worker-b")).dispatch(job.id)
        try await slow.value

        let running = try await harness.job(job.id)
        XCTAssertEqual(running.status, .running)
        XCTAssertEqual(running.providerTaskID, "task-\(job.id)-a2", "B's submission is the one being followed")
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.abandoned, .submitted], "A's late answer moved nothing B owns")
        XCTAssertEqual(attempts[0].providerTaskID, "task-\(job.id)-a1", "A's task is kept on record, abandoned")
        XCTAssertEqual(harness.provider.cancelled, ["task-\(job.id)-a1"], "A's orphaned task is stopped")
        let charges = try await harness.store.possibleDoubleCharges()
        XCTAssertEqual(charges, ["scripted": 1], "B could not rule out A's submission, and said so")
    }

    func testCancellingDuringASubmissionStopsTheProviderTaskThroughTheSweep() async throws {
        let harness = try await Harness(provider: ScriptedProvider(submitDelay: .milliseconds(300)))
        let job = try await harness.submit()
        let context = try harness.context()
        let dispatching = Task { try await Submission(context: context).dispatch(job.id) }
        try await harness.until { harness.provider.submissions.count == 1 }
        let current = try await harness.job(job.id)
        guard case .cancelled = try await context.cancel(current) else { return XCTFail("not cancelled") }
        try await dispatching.value

        var attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.submitted], "the task is on record although the job ended")
        try await RecoverySweep(context: context).sweepOnce()
        XCTAssertEqual(harness.provider.cancelled, ["task-\(job.id)-a1"])
        attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.abandoned])
        let cancelled = try await harness.job(job.id)
        XCTAssertEqual(cancelled.status, .cancelled)
    }

    func testTheSweepStopsAnInterruptedSubmissionOfAJobThatEnded() async throws {
        let harness = try await Harness(
            provider: ScriptedProvider(findsByReference: true), policy: JobPolicy(leaseSeconds: 0.5))
        let job = try await leftMidSubmission(harness, reachedProvider: true)
        let context = try harness.context()
        guard case .cancelled = try await context.cancel(job) else { return XCTFail("not cancelled") }
        try await RecoverySweep(context: context).sweepOnce()
        XCTAssertEqual(harness.provider.cancelled, [], "a submission this young may still have its worker")
        try await Task.sleep(for: .milliseconds(600))
        try await RecoverySweep(context: context).sweepOnce()
        XCTAssertEqual(harness.provider.cancelled, ["task-\(job.id)-a1"], "found by reference and stopped")
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.abandoned])
        XCTAssertEqual(attempts.first?.providerTaskID, "task-\(job.id)-a1")
    }

    func testAProviderThatCannotSayNowIsAskedAgainLaterNotResubmitted() async throws {
        final class Unreachable: ProviderAdapter, Sendable {
            let inner = ScriptedProvider(findsByReference: true)
            var name: String { inner.name }
            var capabilities: ProviderCapabilities { inner.capabilities }
            var models: [ModelInfo] { inner.models }
            func submit(_ request: ProviderRequest) async throws -> String { try await inner.submit(request) }
            func status(taskID: String, request: ProviderRequest) async throws -> ProviderTaskState { .queued }
            func findSubmission(clientReference: String, request: ProviderRequest) async throws -> String? {
                throw GenGateError(.providerUnavailable, "503", retryable: true)
            }
            func fetch(_ output: Output) async throws -> (data: Data, contentType: String) { (Data(), "image/png") }
        }
        let harness = try await Harness()
        let job = try await leftMidSubmission(harness, reachedProvider: false)
        let unreachable = Unreachable()
        let context = JobContext(
            instance: "worker-b", store: harness.store, providers: ProviderRegistry(adapters: [unreachable]),
            objects: try LocalObjectStore(root: harness.directory), policy: JobPolicy(),
            logger: Logger(label: "test"))
        try await Submission(context: context).dispatch(job.id)
        let waiting = try await harness.job(job.id)
        XCTAssertEqual(waiting.status, .dispatching)
        XCTAssertNil(waiting.leaseOwner, "let go, to ask again")
        XCTAssertGreaterThan(waiting.nextActionAt ?? .distantPast, Date())
        XCTAssertEqual(unreachable.inner.submissions, [], "nothing submitted while the provider cannot say")
    }

    func testAJobThatBreaksItsHandlerRepeatedlyFailsInsteadOfLooping() async throws {
        let harness = try await Harness(policy: JobPolicy(maxHandlerFailures: 3))
        let job = try await harness.submit()
        let context = try harness.context()
        struct Broken: Error {}
        await context.guarding(job.id, step: .submit) { throw Broken() }
        let unheld = try await harness.job(job.id)
        XCTAssertEqual(unheld.status, .pending, "a failure before the claim (a store hiccup) counts nothing")
        for _ in 0..<3 {
            await context.guarding(job.id, step: .submit) {
                _ = try await harness.store.claim(
                    id: job.id, statuses: [.pending], owner: "worker-a", leaseUntil: Date() + 30,
                    now: Date() + 3_600)
                throw Broken()
            }
        }
        let failed = try await harness.job(job.id)
        XCTAssertEqual(failed.status, .failed)
        XCTAssertEqual(failed.error?.code, .internalError)
        XCTAssertTrue(
            failed.error?.message.contains("submit failed unexpectedly") ?? false, "\(String(describing: failed.error))"
        )
    }

    func testKeepingLeaseOutlivesASlowOperation() async throws {
        // A lease long enough that one slow commit (a loaded machine's fsync) between two renewals
        // cannot let it lapse; the operation still outlasts it 2.5 times.
        let harness = try await Harness(policy: JobPolicy(leaseSeconds: 1.2))
        let job = try await harness.submit()
        let context = try harness.context()
        let claimed = try await harness.store.claim(
            id: job.id, statuses: [.pending], owner: "worker-a",
            leaseUntil: context.leaseUntil(), now: Date())
        let result = try await context.keepingLease(try XCTUnwrap(claimed)) {
            try await Task.sleep(for: .milliseconds(3_000))  // 2.5 lease periods
            return "done"
        }
        XCTAssertEqual(result, "done")
        let stolen = try await harness.store.claim(
            id: job.id, statuses: [.pending], owner: "worker-b", leaseUntil: Date() + 10, now: Date())
        XCTAssertNil(stolen, "the lease was renewed while the operation ran, so nobody could take the job")
    }

    /// What a worker that stopped mid-submission leaves: the job in `dispatching`, nobody holding
    /// it, attempt 1 `submitting`; the provider got it or not.
    func leftMidSubmission(_ harness: Harness, reachedProvider: Bool) async throws -> Generation {
        let job = try await harness.submit()
        let claimed = try await harness.store.claim(
            id: job.id, statuses: [.pending], owner: "gone", leaseUntil: Date() + 30, now: Date())
        var change = Transition.of(try XCTUnwrap(claimed), to: .dispatching)
        change.attempts = 1
        change.newAttempt = Attempt(
            generationID: job.id, number: 1, provider: "scripted", clientReference: "\(job.id)-a1",
            providerTaskID: nil, outputIndexes: [0], state: .submitting, error: nil, createdAt: Date(),
            finishedAt: nil)
        _ = try await harness.store.transition(change)
        if reachedProvider {
            _ = try await harness.provider.submit(
                ProviderRequest(
                    generationID: job.id, clientReference: "\(job.id)-a1",
                    model: "scripted/image", prompt: "", outputIndexes: [0],
                    seed: nil, width: nil, height: nil, params: [:]))
        }
        _ = try await harness.store.releaseLeases(owners: ["gone"], dueAt: Date())
        return try await harness.job(job.id)
    }

    /// After a run of submissions that found the provider down, the next job waits for the
    /// circuit instead of calling (and spending an attempt on) a provider that does not answer.
    func testAnOpenCircuitHoldsSubmissionsBackWithoutSpendingAttempts() async throws {
        let harness = try await Harness(policy: JobPolicy(circuitThreshold: 2, circuitCoolDownSeconds: 30))
        let down = GenGateError(.providerUnavailable, "503", retryable: true)
        harness.provider.state.withLock { $0.submitErrors = [down, down] }
        let context = try harness.context()
        for _ in 0..<2 {
            let job = try await harness.submit()
            try await Submission(context: context).dispatch(job.id)
        }
        XCTAssertEqual(harness.provider.submissions.count, 2)
        XCTAssertTrue(context.circuit.isOpen("scripted"))
        let held = try await harness.submit()
        try await Submission(context: context).dispatch(held.id)
        XCTAssertEqual(harness.provider.submissions.count, 2, "the provider was not called")
        let waiting = try await harness.job(held.id)
        XCTAssertEqual(waiting.status, .pending)
        XCTAssertEqual(waiting.attempts, 0, "no attempt spent")
        XCTAssertNil(waiting.leaseOwner)
        XCTAssertGreaterThan(waiting.nextActionAt ?? .distantPast, Date().addingTimeInterval(20))
        let events = try await harness.store.events(generationID: held.id)
        XCTAssertFalse(events.contains { $0.type == .generationFailed })

        // A job whose deadline comes before the circuit closes fails now, saying why.
        let hurried = try await harness.submit(deadline: 10)
        try await Submission(context: context).dispatch(hurried.id)
        let failed = try await harness.job(hurried.id)
        XCTAssertEqual(failed.status, .failed)
        XCTAssertEqual(failed.error?.code, .providerUnavailable)
        XCTAssertEqual(harness.provider.submissions.count, 2)
    }

    // MARK: Synchronous providers

    /// A synchronous call's outputs are stored, under keys that name the attempt, and recorded
    /// with the attempt's success in one go; with every output of the job in its answer, that
    /// same transaction completes the job, and nothing is left for the uploader.
    func testASynchronousCallsOutputsAreStoredAndRecordedTogether() async throws {
        let harness = try await Harness(provider: ScriptedProvider(synchronous: true))
        let job = try await harness.submit(n: 2)
        try await Submission(context: try harness.context()).dispatch(job.id)
        let after = try await harness.job(job.id)
        XCTAssertEqual(after.status, .completed)
        XCTAssertEqual(after.progress, 100)
        XCTAssertNil(after.leaseOwner)
        XCTAssertNil(after.nextActionAt)
        XCTAssertEqual(after.outputs.map(\.index), [0, 1])
        XCTAssertTrue(after.outputs.allSatisfy { $0.isStored && ($0.objectKey ?? "").hasSuffix("-a1.png") })
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.succeeded])
        XCTAssertEqual(harness.noticed(.upload), [], "nothing left for the uploader")
        let events = try await harness.store.events(generationID: job.id).map(\.type)
        XCTAssertEqual(events.filter { $0 == .generationOutput }.count, 2)
        XCTAssertEqual(events.last, .generationCompleted, "\(events)")
    }

    /// A synchronous provider that makes one output a call, for a job of two: the first answer
    /// leaves the job to the uploader, which has the rest asked for; the second answer, with the
    /// last output the job lacked, completes it.
    func testASynchronousCallLeavingOutputsMissingHandsTheJobToTheUploader() async throws {
        let harness = try await Harness(provider: ScriptedProvider(maxOutputsPerCall: 1, synchronous: true))
        let job = try await harness.submit(n: 2)
        try await Submission(context: try harness.context()).dispatch(job.id)
        var after = try await harness.job(job.id)
        XCTAssertEqual(after.status, .uploading)
        XCTAssertEqual(after.outputs.map(\.index), [0])
        XCTAssertEqual(harness.noticed(.upload), [job.id])
        try await OutputTransfer(context: try harness.context("uploader-a")).transfer(job.id)
        after = try await harness.job(job.id)
        XCTAssertEqual(after.status, .pending, "the rest is asked for")
        try await Submission(context: try harness.context()).dispatch(job.id)
        after = try await harness.job(job.id)
        XCTAssertEqual(after.status, .completed)
        XCTAssertEqual(after.outputs.map(\.index).sorted(), [0, 1])
        XCTAssertEqual(harness.provider.submissions.count, 2)
        let events = try await harness.store.events(generationID: job.id).map(\.type)
        XCTAssertEqual(events.filter { $0 == .generationCompleted }.count, 1)
    }

    /// Object storage is down when a synchronous call's outputs arrive: they are stored once it
    /// is back, and the provider is not called again (it was paid).
    func testASynchronousCallsOutputsWaitForObjectStorageInsteadOfPayingAgain() async throws {
        let harness = try await Harness(provider: ScriptedProvider(synchronous: true))
        let objects = FailingObjects(
            inner: try LocalObjectStore(root: harness.directory.appendingPathComponent("objects")), failures: 2)
        let job = try await harness.submit(n: 1)
        try await Submission(context: try harness.context(objects: objects)).dispatch(job.id)
        let after = try await harness.job(job.id)
        XCTAssertEqual(after.status, .completed)
        XCTAssertTrue(after.outputs.allSatisfy(\.isStored))
        XCTAssertEqual(objects.failures.withLock { $0 }, 0, "tried until storage took them")
        XCTAssertEqual(harness.provider.state.withLock { $0.submissions.count }, 1, "paid once")
    }

    /// Storage fails after the first of two outputs went in: the second is tried again from
    /// the file it left, the first is not put again (its file was consumed), both are recorded.
    func testStorageFailingHalfwayThroughASynchronousCallsOutputsStoresEachOnce() async throws {
        let harness = try await Harness(provider: ScriptedProvider(synchronous: true))
        let objects = FailingObjects(
            inner: try LocalObjectStore(root: harness.directory.appendingPathComponent("objects")), failures: 2,
            passFirst: 1)
        let job = try await harness.submit(n: 2)
        try await Submission(context: try harness.context(objects: objects)).dispatch(job.id)
        let after = try await harness.job(job.id)
        XCTAssertEqual(after.status, .completed)
        XCTAssertEqual(after.outputs.count, 2)
        XCTAssertTrue(after.outputs.allSatisfy(\.isStored))
        for output in after.outputs {
            let bytes = try await objects.get(key: try XCTUnwrap(output.objectKey))
            XCTAssertEqual(bytes?.count, output.bytes, "output \(output.index) is in storage whole")
        }
        XCTAssertEqual(objects.failures.withLock { $0 }, 0)
        XCTAssertEqual(harness.provider.state.withLock { $0.submissions.count }, 1, "paid once")
    }

    /// Storage stays down past the deadline: the job fails with `upload_failed`, paid once.
    func testASynchronousCallsOutputsThatCannotBeStoredByTheDeadlineFailTheJobWithoutPayingAgain() async throws {
        let harness = try await Harness(provider: ScriptedProvider(synchronous: true))
        let objects = FailingObjects(
            inner: try LocalObjectStore(root: harness.directory.appendingPathComponent("objects")), failures: 1_000)
        let job = try await harness.submit(n: 1, deadline: 2.5)
        try await Submission(context: try harness.context(objects: objects)).dispatch(job.id)
        let after = try await harness.job(job.id)
        XCTAssertEqual(after.status, .failed)
        XCTAssertEqual(after.error?.code, .uploadFailed)
        XCTAssertEqual(harness.provider.state.withLock { $0.submissions.count }, 1, "paid once")
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.possibleDoubleCharge), [true], "a paid call whose outputs were lost is counted")
    }

    /// The worker's lease was voided during the call (a busy store, a long call) and nobody took
    /// the job: the worker takes it back and records what it made. Paid once.
    func testASynchronousCallWhoseLeaseLapsedStillRecordsItsOutputs() async throws {
        let provider = ScriptedProvider(synchronous: true)
        let harness = try await Harness(provider: provider)
        let job = try await harness.submit()
        let store = harness.store
        provider.state.withLock { state in
            state.duringGenerate = { _ = try await store.releaseLeases(owners: ["worker-a"], dueAt: Date()) }
        }
        try await Submission(context: try harness.context()).dispatch(job.id)
        let after = try await harness.job(job.id)
        XCTAssertEqual(after.status, .completed)
        XCTAssertTrue(after.outputs.allSatisfy(\.isStored))
        XCTAssertEqual(provider.submissions.count, 1)
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.succeeded])
    }

    /// Another worker took the job over during the call: this worker's outputs are not recorded
    /// and its attempt is left for that worker's recovery, which submits again and counts it.
    func testASynchronousCallOvertakenByAnotherWorkerIsCountedWhenMadeAgain() async throws {
        let provider = ScriptedProvider(synchronous: true)
        let harness = try await Harness(provider: provider)
        let job = try await harness.submit()
        let store = harness.store
        provider.state.withLock { state in
            state.duringGenerate = {
                _ = try await store.releaseLeases(owners: ["worker-a"], dueAt: Date())
                _ = try await store.claim(
                    id: job.id, statuses: [.dispatching], owner: "worker-b", leaseUntil: Date() + 30, now: Date())
            }
        }
        try await Submission(context: try harness.context()).dispatch(job.id)
        let overtaken = try await harness.job(job.id)
        XCTAssertEqual(overtaken.status, .dispatching)
        XCTAssertEqual(overtaken.leaseOwner, "worker-b")
        XCTAssertTrue(overtaken.outputs.isEmpty, "nothing recorded under another worker's lease")
        var attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.submitting], "left for recovery, not marked succeeded")

        provider.state.withLock { $0.duringGenerate = nil }
        _ = try await store.releaseLeases(owners: ["worker-b"], dueAt: Date())
        try await Submission(context: try harness.context("worker-b")).dispatch(job.id)
        attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.state), [.abandoned, .succeeded])
        XCTAssertEqual(attempts.map(\.possibleDoubleCharge), [true, false], "read back from the store")
        let charges = try await harness.store.possibleDoubleCharges()
        XCTAssertEqual(charges["scripted"], 1, "the second call is counted")
        XCTAssertEqual(provider.submissions.count, 2)
        let after = try await harness.job(job.id)
        XCTAssertEqual(after.status, .completed)
        XCTAssertTrue(after.outputs.allSatisfy { ($0.objectKey ?? "").hasSuffix("-a2.png") })
    }
}

/// Object storage that refuses the first `failures` puts (down, for now), then stores.
final class FailingObjects: ObjectStore, Sendable {
    let inner: LocalObjectStore
    let failures: Mutex<Int>
    /// Puts let through before the failures start.
    let passing: Mutex<Int>

    func check() async -> ObjectStoreCheck { await inner.check() }
    func exists(key: String) async throws -> Bool { try await inner.exists(key: key) }
    func delete(key: String) async throws { try await inner.delete(key: key) }

    init(inner: LocalObjectStore, failures: Int, passFirst: Int = 0) {
        self.inner = inner
        self.failures = Mutex(failures)
        self.passing = Mutex(passFirst)
    }

    func refuse() throws {
        let passes = passing.withLock { count -> Bool in
            guard count > 0 else { return false }
            count -= 1
            return true
        }
        if passes { return }
        let refuse = failures.withLock { count -> Bool in
            guard count > 0 else { return false }
            count -= 1
            return true
        }
        if refuse { throw GenGateError(.uploadFailed, "object storage is down", retryable: true) }
    }

    func put(key: String, data: Data, contentType: String) async throws -> StoredObject {
        try refuse()
        return try await inner.put(key: key, data: data, contentType: contentType)
    }

    func put(key: String, file: URL, contentType: String) async throws -> StoredObject {
        try refuse()
        return try await inner.put(key: key, file: file, contentType: contentType)
    }

    func get(key: String) async throws -> Data? { try await inner.get(key: key) }
    func localFile(key: String) async throws -> (path: String, size: Int)? { try await inner.localFile(key: key) }
    func scratchFile() throws -> URL { try inner.scratchFile() }
    func publicURL(key: String) -> String? { inner.publicURL(key: key) }
    func temporaryURL(key: String, now: Date) -> String? { inner.temporaryURL(key: key, now: now) }
}
