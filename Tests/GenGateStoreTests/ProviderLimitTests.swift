import Foundation
import GenGateCore
import XCTest

@testable import GenGateStore

/// Adaptive provider limits: the arithmetic, and admissions through the store, exact across
/// connections (processes).
final class ProviderLimitTests: XCTestCase {
    let limits = ProviderLimits(maxConcurrency: 8, maxRequestsPerSecond: 4)

    func testAdmissionStopsAtTheConcurrencyLimitAndAtAnEmptyBucket() {
        let row = AdaptiveLimit.Row.initial(limits, now: 100)
        XCTAssertEqual(row.tokens, 4)
        guard case .failure(let full) = AdaptiveLimit.admit(row, inFlight: 8, limits: limits, provider: "p", now: 100)
        else { return XCTFail("admitted past the concurrency limit") }
        XCTAssertEqual(full.reason, .concurrency)

        var current = row
        for _ in 0..<4 {
            guard
                case .success(let next) = AdaptiveLimit.admit(
                    current, inFlight: 0, limits: limits, provider: "p", now: 100)
            else { return XCTFail("refused with tokens left") }
            current = next
        }
        guard
            case .failure(let empty) = AdaptiveLimit.admit(
                current, inFlight: 0, limits: limits, provider: "p", now: 100)
        else { return XCTFail("admitted with no token left") }
        XCTAssertEqual(empty.reason, .rate)
        XCTAssertEqual(empty.retryAt.timeIntervalSince1970, 100.25, accuracy: 0.001, "one token comes in 1/4 s")
        // A quarter second later one token is back.
        guard case .success = AdaptiveLimit.admit(current, inFlight: 0, limits: limits, provider: "p", now: 100.25)
        else { return XCTFail("the bucket did not refill") }
    }

    func testAThrottleHalvesOncePerSpacingAndSuccessesGrowItBackToTheMaximum() throws {
        let throttled = LimitFeedback(provider: "p", limits: limits, throttled: true)
        let answered = LimitFeedback(provider: "p", limits: limits, throttled: false)
        let start = AdaptiveLimit.Row.initial(limits, now: 0)
        let halved = try XCTUnwrap(AdaptiveLimit.adapt(start, feedback: throttled, inFlight: 8, now: 10))
        XCTAssertEqual(halved.concurrency, 4)
        XCTAssertEqual(halved.rate, 2)
        XCTAssertLessThanOrEqual(halved.tokens, 0, "a throttle empties the bucket")
        // The other calls of the same overload, answered 429 within the spacing, change nothing.
        XCTAssertNil(AdaptiveLimit.adapt(halved, feedback: throttled, inFlight: 8, now: 14))
        // Halving works from the tasks open, not from a limit far above them.
        let fromOpen = try XCTUnwrap(AdaptiveLimit.adapt(halved, feedback: throttled, inFlight: 2, now: 16))
        XCTAssertEqual(fromOpen.concurrency, 1)
        // Additive increase: about one more per round of successes, never past the maximum.
        var row = fromOpen
        var successes = 0
        while let next = AdaptiveLimit.adapt(row, feedback: answered, inFlight: 1, now: 20) {
            row = next
            successes += 1
            XCTAssertLessThan(successes, 1_000)
        }
        XCTAssertEqual(row.concurrency, 8)
        XCTAssertEqual(row.rate, 4)
        XCTAssertGreaterThan(successes, 20, "growth is slow: 1/limit a success")
    }

    func testAThrottleWithNoLimitKnownLearnsOneFromTheTasksOpen() throws {
        let unknown = ProviderLimits()
        let learned = try XCTUnwrap(
            AdaptiveLimit.adapt(
                nil, feedback: LimitFeedback(provider: "p", limits: unknown, throttled: true), inFlight: 10, now: 0))
        XCTAssertEqual(learned.concurrency, 5)
        XCTAssertNil(learned.rate, "no rate limit is invented")
        XCTAssertNil(
            AdaptiveLimit.adapt(
                nil, feedback: LimitFeedback(provider: "p", limits: unknown, throttled: false), inFlight: 10, now: 0),
            "success with no row writes nothing")
    }

    func testAThrottleSlowsAProviderKnownToLimitItsRateWithoutNarrowingIt() throws {
        let rateOnly = ProviderLimits(maxRequestsPerSecond: 10)
        let slowed = try XCTUnwrap(
            AdaptiveLimit.adapt(
                nil, feedback: LimitFeedback(provider: "p", limits: rateOnly, throttled: true), inFlight: 12, now: 0))
        XCTAssertEqual(slowed.rate, 5)
        XCTAssertNil(slowed.concurrency, "a rate limit's 429 says nothing of how many tasks may run")
    }

    func testALearnedLimitIsForgottenAfterAQuietMinuteSoStuckTasksCannotHoldItForGood() throws {
        let unknown = ProviderLimits()
        let learned = try XCTUnwrap(
            AdaptiveLimit.adapt(
                nil, feedback: LimitFeedback(provider: "p", limits: unknown, throttled: true), inFlight: 4, now: 0))
        XCTAssertEqual(learned.concurrency, 2)
        // Two tasks stuck at the provider fill it: nothing is admitted, so nothing grows it back.
        guard case .failure = AdaptiveLimit.admit(learned, inFlight: 2, limits: unknown, provider: "p", now: 30) else {
            return XCTFail("admitted over the learned limit")
        }
        guard
            case .success(let later) = AdaptiveLimit.admit(
                learned, inFlight: 2, limits: unknown, provider: "p", now: 61)
        else { return XCTFail("a quiet minute later the learned limit still holds") }
        XCTAssertNil(later.concurrency)
        let configured = ProviderLimits(maxConcurrency: 8)
        let narrowed = AdaptiveLimit.Row(concurrency: 2, rate: nil, tokens: 1, refilledAt: 0, decreasedAt: 0)
        XCTAssertEqual(narrowed.settled(configured, now: 61).concurrency, 8, "a configured one is back at its maximum")
    }

    func testALoweredMaximumTakesEffectAtOnce() {
        let row = AdaptiveLimit.Row(concurrency: 20, rate: 50, tokens: 50, refilledAt: 0, decreasedAt: nil)
        let clamped = row.clamped(to: ProviderLimits(maxConcurrency: 3, maxRequestsPerSecond: nil))
        XCTAssertEqual(clamped.concurrency, 3)
        XCTAssertNil(clamped.rate)
    }
}

extension GenerationStoreContractTests {
    func testJobsResubmittingInPlaceAreNotRefusedByEachOther() async throws {
        let limits = ProviderLimits(maxConcurrency: 1)
        var stuck: [Generation] = []
        for _ in 0..<3 {
            // Left `dispatching` by a dispatcher that died: each holds a slot already.
            var change = Transition.of(try await inserted(), to: .dispatching)
            change.attempts = 1
            let moved = try await store.transition(change)
            stuck.append(try XCTUnwrap(moved))
        }
        for job in stuck {
            var change = Transition.of(job, to: .dispatching)
            change.attempts = 2
            change.admission = ProviderAdmission(provider: "sim", limits: limits, replacing: true)
            let resubmitted = try await store.transition(change)
            XCTAssertNotNil(resubmitted, "a job replacing its own submission takes no new slot")
        }
    }
}
