import Foundation
import GenGateCore
import XCTest

@testable import GenGateStore

/// The event log's reading side and webhook deliveries, on the store contract.
extension GenerationStoreContractTests {
    func hooked(events: [WebhookEvent]) async throws -> Generation {
        var generation = makeGeneration()
        generation.request.webhook = "https://example.com/hook"
        generation.request.webhookEvents = events
        return try await inserted(generation)
    }

    /// Moves the job on with `events`, as a worker would.
    func apply(_ generation: Generation, to status: GenerationStatus, events: [EventPayload]) async throws
        -> Generation
    {
        var change = Transition.of(generation, to: status)
        change.events = events.map { Event($0, generationID: generation.id) }
        return try await XCTUnwrapAsync(try await store.transition(change))
    }

    func testDeliveriesAreMadeWithTheEventsAWebhookAsksFor() async throws {
        let plain = try await inserted()
        let hooked = try await hooked(events: [.start, .completed])
        for job in [plain, hooked] {
            let started = try await apply(
                job, to: .dispatching,
                events: [
                    .generationStarted(.init(attempt: 1, provider: "sim", model: "sim/image", providerTaskID: "t")),
                    .generationProgress(.init(progress: 50)),
                ])
            _ = try await apply(
                started, to: .failed,
                events: [
                    .generationFailed(
                        .init(
                            error: GenGateError(.providerError, "no"), attempts: 1, provider: "sim",
                            model: "sim/image"))
                ])
        }
        let none = try await store.webhookDeliveries(generationID: plain.id)
        XCTAssertEqual(none, [], "no webhook, no delivery")
        let made = try await store.webhookDeliveries(generationID: hooked.id)
        XCTAssertEqual(made.map(\.eventType), [.generationStarted, .generationFailed], "progress was not asked for")
        XCTAssertTrue(made.allSatisfy { $0.state == .pending && $0.url == "https://example.com/hook" })
        XCTAssertEqual(Set(made.map(\.id)).count, 2)

        // The events behind them, by their place in the log.
        let log = try await store.events(generationID: hooked.id, after: 0, limit: 10)
        XCTAssertEqual(
            made.map(\.eventSeq),
            log.filter { [.generationStarted, .generationFailed].contains($0.event.type) }.map(\.seq))
        let later = try await store.events(generationID: hooked.id, after: log[1].seq, limit: 10)
        XCTAssertEqual(later, Array(log.dropFirst(2)))
        let mine = try await store.events(ownerKeyID: owner.id, after: 0, limit: 100, scan: 10_000)
        XCTAssertEqual(mine.events.count, 8)
        let newest = try await store.lastEventSeq()
        XCTAssertEqual(mine.through, newest)
        let paged = try await store.events(ownerKeyID: owner.id, after: 0, limit: 3, scan: 10_000)
        XCTAssertEqual(paged.events.count, 3)
        XCTAssertEqual(paged.through, paged.events.last?.seq)
        let someoneElse = try await store.createAPIKey(name: "b", isAdmin: false).key
        let theirs = try await store.events(ownerKeyID: someoneElse.id, after: 0, limit: 100, scan: 10_000)
        XCTAssertEqual(theirs.events, [])
    }

    func testAJobsDeliveriesGoOutInOrderUnderLeasesAndRetry() async throws {
        let job = try await hooked(events: [.start, .completed])
        let started = try await apply(
            job, to: .dispatching,
            events: [.generationStarted(.init(attempt: 1, provider: "sim", model: "sim/image", providerTaskID: "t"))])
        _ = try await apply(
            started, to: .cancelled, events: [.generationCancelled(.init(previousStatus: "running", reason: "client"))])
        let now = Date().addingTimeInterval(1)
        let first = try await store.claimWebhookDeliveries(owner: "a", leaseUntil: now + 60, now: now, limit: 10)
        XCTAssertEqual(first.map(\.eventType), [.generationStarted], "the later one waits for the earlier")
        let again = try await store.claimWebhookDeliveries(owner: "b", leaseUntil: now + 60, now: now, limit: 10)
        XCTAssertEqual(again, [], "leased")

        let failed = WebhookOutcome(
            deliveryID: first[0].id, owner: "a",
            attempt: WebhookAttempt(number: 1, at: now, statusCode: 500, error: "500", durationMs: 3), body: "{}",
            state: .pending, nextAttemptAt: now + 5)
        let lost = WebhookOutcome(
            deliveryID: first[0].id, owner: "b", attempt: failed.attempt, body: "{}", state: .delivered,
            nextAttemptAt: nil)
        let recordedByStranger = try await store.recordWebhookAttempt(lost)
        XCTAssertFalse(recordedByStranger, "only the lease holder records")
        let recorded = try await store.recordWebhookAttempt(failed)
        XCTAssertTrue(recorded)
        let early = try await store.claimWebhookDeliveries(owner: "b", leaseUntil: now + 60, now: now + 1, limit: 10)
        XCTAssertEqual(early, [], "not due before its retry, and the next waits")
        let retried = try await store.claimWebhookDeliveries(owner: "b", leaseUntil: now + 60, now: now + 6, limit: 10)
        XCTAssertEqual(retried.map(\.id), [first[0].id])
        XCTAssertEqual(retried.first?.body, "{}", "the body is kept for every later attempt")
        XCTAssertEqual(retried.first?.attempts, 1)
        var delivered = failed
        delivered.owner = "b"
        delivered.state = .delivered
        delivered.nextAttemptAt = nil
        delivered.attempt = WebhookAttempt(number: 2, at: now + 6, statusCode: 200, error: nil, durationMs: 2)
        let done = try await store.recordWebhookAttempt(delivered)
        XCTAssertTrue(done)
        let next = try await store.claimWebhookDeliveries(owner: "b", leaseUntil: now + 60, now: now + 6, limit: 10)
        XCTAssertEqual(next.map(\.eventType), [.generationCancelled])
        let givenUp = try await store.recordWebhookAttempt(
            WebhookOutcome(
                deliveryID: next[0].id, owner: "b",
                attempt: WebhookAttempt(number: 1, at: now + 6, statusCode: 410, error: "gone", durationMs: 1),
                body: nil, state: .failed, nextAttemptAt: nil))
        XCTAssertTrue(givenUp)

        let shown = try await store.webhookDeliveries(generationID: job.id)
        XCTAssertEqual(shown[0].state, .delivered)
        XCTAssertEqual(shown[0].history.map(\.statusCode), [500, 200])
        XCTAssertNotNil(shown[0].deliveredAt)
        let redelivered = try await store.redeliverWebhook(id: shown[0].id, generationID: job.id, now: now + 7)
        XCTAssertTrue(redelivered)
        let unknown = try await store.redeliverWebhook(id: shown[0].id, generationID: "gen_other", now: now + 7)
        XCTAssertFalse(unknown, "only through its own job")
        let back = try await store.webhookDeliveries(generationID: job.id)
        XCTAssertEqual(back[0].state, .pending)
        XCTAssertEqual(back[0].history.count, 2, "the history stays")

        // Ended deliveries expire with their events; pending ones stay.
        _ = try await store.expire(eventsBefore: Date().addingTimeInterval(60), keysBefore: .distantPast, limit: 100)
        let left = try await store.webhookDeliveries(generationID: job.id)
        XCTAssertEqual(left.map(\.state), [.pending], "the failed one went, with its attempts")
    }

    func testWebhookSecretsAreCreatedOnceAndRotatedWithTheirPredecessor() async throws {
        let now = Date()
        let created = try await store.createWebhookSecret(keyID: owner.id, sealed: Data([1]), at: now)
        let again = try await store.createWebhookSecret(keyID: owner.id, sealed: Data([2]), at: now)
        XCTAssertEqual(again, created, "a second creation keeps the first")
        let rotated = try await store.rotateWebhookSecret(
            keyID: owner.id, sealed: Data([3]), previousUntil: now + 60, at: now + 1)
        XCTAssertEqual(rotated.sealed, Data([3]))
        XCTAssertEqual(rotated.previous, Data([1]))
        XCTAssertEqual(
            rotated.previousUntil?.timeIntervalSince1970 ?? 0, (now + 60).timeIntervalSince1970, accuracy: 0.01)
        let read = try await store.webhookSecrets(keyID: owner.id)
        XCTAssertEqual(read, rotated)
        let none = try await store.webhookSecrets(keyID: "key_none")
        XCTAssertNil(none)
    }

    func testTheQueuePositionCountsPendingJobsAhead() async throws {
        let now = Date()
        var jobs: [Generation] = []
        for offset in 0..<3 {
            var job = makeGeneration(now: now)
            job.id = "gen_q\(offset)"
            job.nextActionAt = now.addingTimeInterval(Double(offset))
            jobs.append(try await inserted(job))
        }
        var positions: [Int?] = []
        for job in jobs { positions.append(try await store.queuePosition(of: job)) }
        XCTAssertEqual(positions, [0, 1, 2])
    }
}
