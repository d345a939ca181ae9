import Foundation
import GenGateCore
import GenGateJobs
import GenGateProviders
@testable import GenGateStore
import XCTest

/// Fallback routes: a job on an alias moves to the next model after a retryable failure or while
/// its provider's circuit is open, asking it only for what is missing.
final class FallbackEngineTests: XCTestCase {
    let route = ["scripted/image", "backup/image"]

    func testARetryableFailureMovesTheJobToTheNextModelAtOnce() async throws {
        let harness = try await Harness()
        let backup = ScriptedProvider(name: "backup")
        let context = try harness.context(also: [backup], aliases: ["alias": route])
        harness.provider.state.withLock {
            $0.submitErrors = [GenGateError(.rateLimited, "slow down", retryable: true, retryAfter: 60)]
        }
        let job = try await harness.submit(n: 2, route: route)
        try await Submission(context: context).dispatch(job.id)
        let moved = try await harness.job(job.id)
        XCTAssertEqual(moved.status, .retryWait)
        XCTAssertEqual(moved.routeIndex, 1)
        XCTAssertEqual(moved.provider, "backup")
        XCTAssertEqual(moved.model, "backup/image")
        XCTAssertLessThanOrEqual(moved.nextActionAt ?? .distantFuture, Date(), "not the throttled provider's 60 s")
        XCTAssertEqual(harness.noticed(.submit), [job.id], "the dispatchers are told at once")
        let events = try await harness.store.events(generationID: job.id)
        let fallback = try XCTUnwrap(events.first { $0.type == .generationFallback })
        XCTAssertEqual(
            fallback.payload,
            .generationFallback(.init(from: "scripted/image", to: "backup/image", because: "rate_limited")))

        try await Submission(context: context).dispatch(job.id)
        let running = try await harness.job(job.id)
        XCTAssertEqual(running.status, .running)
        XCTAssertEqual(backup.submissions, ["\(job.id)-a2"])
        let attempts = try await harness.store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.map(\.model), ["scripted/image", "backup/image"])
        XCTAssertEqual(attempts.map(\.provider), ["scripted", "backup"])
        XCTAssertEqual(attempts.last?.outputIndexes, [0, 1])
    }

    func testAFailureRetryingWillNotHelpDoesNotFallBack() async throws {
        let harness = try await Harness()
        let context = try harness.context(also: [ScriptedProvider(name: "backup")], aliases: ["alias": route])
        harness.provider.state.withLock { $0.submitErrors = [GenGateError(.contentPolicy, "refused")] }
        let job = try await harness.submit(route: route)
        try await Submission(context: context).dispatch(job.id)
        let failed = try await harness.job(job.id)
        XCTAssertEqual(failed.status, .failed)
        XCTAssertEqual(failed.routeIndex, 0)
    }

    func testAfterTheLastModelTheRouteStartsAgainAfterTheBackOff() async throws {
        let harness = try await Harness()
        let backup = ScriptedProvider(name: "backup")
        let context = try harness.context(also: [backup], aliases: ["alias": route])
        harness.provider.state.withLock { $0.submitErrors = [GenGateError(.providerError, "boom", retryable: true)] }
        backup.state.withLock { $0.submitErrors = [GenGateError(.providerError, "boom too", retryable: true)] }
        let job = try await harness.submit(route: route)
        try await Submission(context: context).dispatch(job.id)
        try await Submission(context: context).dispatch(job.id)
        let again = try await harness.job(job.id)
        XCTAssertEqual(again.status, .retryWait)
        XCTAssertEqual(again.routeIndex, 0, "back to the first model")
        XCTAssertEqual(again.provider, "scripted")
        XCTAssertGreaterThan(again.nextActionAt ?? .distantPast, Date() - 0.01, "after a back-off, not at once")
        XCTAssertEqual(harness.noticed(.submit), [job.id], "only the move forward is immediate")
    }

    func testAnOpenCircuitSendsTheJobToTheFallbackWithoutSpendingAnAttempt() async throws {
        let harness = try await Harness()
        let backup = ScriptedProvider(name: "backup")
        let context = try harness.context(also: [backup], aliases: ["alias": route])
        let down = GenGateError(.providerUnavailable, "connection refused")
        for _ in 0..<context.policy.circuitThreshold { context.circuit.record("scripted", error: down) }
        XCTAssertTrue(context.circuit.isOpen("scripted"))
        let job = try await harness.submit(route: route)
        try await Submission(context: context).dispatch(job.id)
        let running = try await harness.job(job.id)
        XCTAssertEqual(running.status, .running)
        XCTAssertEqual(running.provider, "backup")
        XCTAssertEqual(harness.provider.submissions, [], "nothing sent to the provider that is down")
        XCTAssertEqual(backup.submissions, ["\(job.id)-a1"])
        let events = try await harness.store.events(generationID: job.id)
        guard case .generationFallback(let fallback)? = events.first(where: { $0.type == .generationFallback })?.payload
        else { return XCTFail("no fallback event") }
        XCTAssertEqual(fallback.because, "circuit_open")
    }
}

/// Review findings, kept fixed.
final class FallbackEdgeTests: XCTestCase {
    let route = ["scripted/image", "backup/image"]

    func testAfterTheCoolDownTheProbeGoesToTheProviderInsteadOfBeingTakenAndRefused() async throws {
        let harness = try await Harness()
        let backup = ScriptedProvider(name: "backup")
        let context = try harness.context(
            policy: JobPolicy(leaseSeconds: 30, circuitThreshold: 1, circuitCoolDownSeconds: 0.2), also: [backup],
            aliases: ["alias": route])
        context.circuit.record("scripted", error: GenGateError(.providerTimeout, "no answer"))
        try await Task.sleep(for: .milliseconds(250))
        let job = try await harness.submit(route: route)
        try await Submission(context: context).dispatch(job.id)
        XCTAssertEqual(harness.provider.submissions, ["\(job.id)-a1"], "the probe went to the recovering provider")
        XCTAssertEqual(backup.submissions, [])
    }

    func testOurOwnFailureDoesNotPayTheFallbackProvider() async throws {
        let harness = try await Harness()
        let context = try harness.context(also: [ScriptedProvider(name: "backup")], aliases: ["alias": route])
        let job = try await harness.submit(route: route)
        try await Submission(context: context).dispatch(job.id)
        let running = try await harness.job(job.id)
        let retried = try await context.failOrRetry(
            running, error: GenGateError(.uploadFailed, "the disk is full", retryable: true))
        XCTAssertEqual(retried?.status, .retryWait)
        XCTAssertEqual(retried?.routeIndex, 0, "storing failed on our side: the same provider is tried again")
    }

    func testAJobWhoseCancelAfterLeavesNoTimeToRetryIsCancelledNotFailed() async throws {
        let harness = try await Harness()
        let context = try harness.context()
        let job = try await harness.submit(deadline: 1.5)
        try await harness.store.pool.write { db in
            try db.execute(
                sql: "UPDATE generations SET cancel_at = deadline_at WHERE id = ?", arguments: [job.id])
        }
        harness.provider.state.withLock {
            $0.submitErrors = [GenGateError(.providerError, "boom", retryable: true, retryAfter: 5)]
        }
        try await Submission(context: context).dispatch(job.id)
        let ended = try await harness.job(job.id)
        XCTAssertEqual(ended.status, .cancelled)
        XCTAssertEqual(ended.error?.reason, "deadline")
    }
}
