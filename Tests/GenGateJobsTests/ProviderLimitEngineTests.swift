import Foundation
import GenGateCore
import GenGateJobs
import GenGateProviders
import GenGateStore
import XCTest

/// Submissions under a provider's limits: held while it has no room, let go in order when room
/// appears, and the limit adapted by what the provider answers.
final class ProviderLimitEngineTests: XCTestCase {
    func testAJobOverItsProvidersLimitWaitsAndGoesFirstComeFirstServedWhenRoomAppears() async throws {
        let harness = try await Harness()
        let context = try harness.context(limits: ProviderLimits(maxConcurrency: 1))
        let submission = Submission(context: context)
        let first = try await harness.submit()
        let second = try await harness.submit()
        let third = try await harness.submit()
        try await submission.dispatch(first.id)
        let firstStatus = try await harness.job(first.id).status
        XCTAssertEqual(firstStatus, .running)

        try await submission.dispatch(second.id)
        let held = try await harness.job(second.id)
        XCTAssertEqual(held.status, .pending)
        XCTAssertNil(held.leaseOwner, "held jobs are not leased: a dead dispatcher loses nothing")
        XCTAssertGreaterThan(held.nextActionAt ?? .distantPast, Date() + 5, "due again only if nobody lets it go")
        XCTAssertEqual(held.attempts, 0, "no attempt is spent waiting")
        try await submission.dispatch(third.id)
        XCTAssertEqual(context.waiting.counts(), ["scripted": 2])
        XCTAssertEqual(harness.provider.submissions, ["\(first.id)-a1"])

        // The first task ends: the next in line goes, the one behind it still waits.
        let running = try await harness.job(first.id)
        _ = try await context.fail(running, error: GenGateError(.providerError, "ended"))
        try await harness.until { try await harness.job(second.id).status == .running }
        let thirdStatus = try await harness.job(third.id).status
        XCTAssertEqual(thirdStatus, .pending)
        XCTAssertEqual(harness.provider.submissions, ["\(first.id)-a1", "\(second.id)-a1"])
        XCTAssertEqual(context.waiting.counts(), ["scripted": 1])
    }

    func testAThrottledSubmissionShrinksItsProvidersLimitAndAnsweredOnesGrowItBack() async throws {
        let harness = try await Harness()
        let limits = ProviderLimits(maxConcurrency: 4)
        let context = try harness.context(limits: limits)
        let submission = Submission(context: context)
        var open: [Generation] = []
        for _ in 0..<3 {
            let job = try await harness.submit()
            try await submission.dispatch(job.id)
            open.append(job)
        }
        harness.provider.state.withLock {
            $0.submitErrors = [GenGateError(.rateLimited, "too many tasks", retryable: true, retryAfter: 1)]
        }
        let throttled = try await harness.submit()
        try await submission.dispatch(throttled.id)
        let throttledStatus = try await harness.job(throttled.id).status
        XCTAssertEqual(throttledStatus, .retryWait)
        var state = try await harness.store.providerLimits().first { $0.provider == "scripted" }
        XCTAssertEqual(state?.concurrency, 1.5, "half of the three tasks open")
        XCTAssertEqual(state?.room, 0)

        // Room again once tasks end; each answered submission then adds 1/limit.
        for job in open {
            _ = try await context.fail(try await harness.job(job.id), error: GenGateError(.providerError, "end"))
        }
        let next = try await harness.submit()
        try await submission.dispatch(next.id)
        state = try await harness.store.providerLimits().first { $0.provider == "scripted" }
        XCTAssertEqual(try XCTUnwrap(state?.concurrency), 1.5 + 1 / 1.5, accuracy: 0.001)
    }
}
