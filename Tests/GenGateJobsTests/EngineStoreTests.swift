import Foundation
import GenGateCore
import GenGateJobs
@testable import GenGateStore
import GRDB
import XCTest

/// What the store promises the engine: real durability, group commit that survives its
/// callers' cancellation, what must never happen refused, and due work found by index.
final class EngineStoreTests: XCTestCase {
    func testDurabilityFullIsWhatTheWriterConnectionRuns() async throws {
        let harness = try await Harness()
        let synchronous = try await harness.store.writerSynchronous()
        XCTAssertEqual(synchronous, 2, "PRAGMA synchronous must be FULL (2) on the writer, where commits happen")
        let normal = try SQLiteStore(
            path: harness.directory.appendingPathComponent("gengate.sqlite").path, durability: .normal)
        let relaxed = try await normal.writerSynchronous()
        XCTAssertEqual(relaxed, 1)
    }

    func testConcurrentWritesShareCommitsAndEachCallerSeesItsOwnResult() async throws {
        let harness = try await Harness()
        let jobs = try await withThrowingTaskGroup(of: Generation.self) { group in
            for _ in 0..<300 { group.addTask { try await harness.submit() } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        XCTAssertEqual(jobs.count, 300)
        let counts = try await harness.store.activeCounts()
        XCTAssertEqual(counts[.pending], 300)
        // One duplicate among good writes fails alone.
        async let duplicate: Void = harness.store.insert(
            jobs[0], event: Event(.generationCreated, generationID: jobs[0].id))
        async let fresh = harness.submit()
        do {
            try await duplicate
            XCTFail("a duplicate id must be refused")
        } catch let error as StoreError {
            XCTAssertEqual(error, .duplicateID(jobs[0].id))
        }
        let kept = try await fresh
        let found = try await harness.store.generation(id: kept.id)
        XCTAssertNotNil(found)
    }

    func testAWriteStartedByACancelledTaskStillCommits() async throws {
        let harness = try await Harness()
        let writes = (0..<50).map { _ in Task { try await harness.submit() } }
        for write in writes { write.cancel() }
        var committed = 0
        for write in writes where (try? await write.value) != nil { committed += 1 }
        let counts = try await harness.store.activeCounts()
        XCTAssertEqual(counts[.pending], committed, "every write that returned is in the store")
    }

    func testATerminalJobNeverChangesEvenByHand() async throws {
        let harness = try await Harness()
        let job = try await harness.submit()
        let outcome = try await harness.context().cancel(job)
        guard case .cancelled = outcome else { return XCTFail() }
        do {
            try await harness.store.pool.write { db in
                try db.execute(sql: "UPDATE generations SET status = 'pending' WHERE id = ?", arguments: [job.id])
            }
            XCTFail("the store must refuse it")
        } catch let error as DatabaseError {
            XCTAssertTrue(error.message?.contains("never changes") ?? false, "\(error)")
        }
    }

    func testAnAttemptsSubmissionNeverGoesBack() async throws {
        let harness = try await Harness()
        let job = try await harness.submit()
        try await Submission(context: try harness.context()).dispatch(job.id)
        for sql in [
            "UPDATE attempts SET state = 'submitting'", "UPDATE attempts SET provider_task_id = 'other'",
            "UPDATE attempts SET provider_task_id = NULL",
        ] {
            do {
                try await harness.store.pool.write { db in try db.execute(sql: sql) }
                XCTFail("\(sql) must be refused")
            } catch let error as DatabaseError {
                XCTAssertTrue(error.message?.contains("never goes back") ?? false, "\(error)")
            }
        }
        let moved = try await harness.store.updateAttempt(
            AttemptUpdate(
                generationID: job.id, number: 1, from: [.submitting],
                to: .failed))
        XCTAssertFalse(moved, "an attempt update is a compare-and-set on its state")
    }

    func testAJobNeverHasMoreOutputsThanItAskedFor() async throws {
        let harness = try await Harness()
        let job = try await harness.submit(n: 2)
        do {
            try await harness.store.pool.write { db in
                try db.execute(
                    sql:
                        "INSERT INTO outputs (generation_id, idx, source, content_type) VALUES (?, 2, 's', 'image/png')",
                    arguments: [job.id])
            }
            XCTFail("output index 2 of n=2 must be refused")
        } catch let error as DatabaseError {
            XCTAssertTrue(error.message?.contains("more outputs") ?? false, "\(error)")
        }
    }

    func testDueWorkIsFoundByIndexNotByAScan() async throws {
        let harness = try await Harness()
        let plans = try await harness.store.pool.read { db -> [String] in
            let now = Date().timeIntervalSince1970
            let queries = [
                "SELECT id FROM generations INDEXED BY generations_unleased_due WHERE lease_owner IS NULL AND \(SQLiteSchema.active) AND status = 'running' AND next_action_at <= \(now) ORDER BY next_action_at LIMIT 10",
                "SELECT id FROM generations INDEXED BY generations_leased WHERE lease_owner IS NOT NULL AND lease_expires_at < \(now)",
                "SELECT id FROM generations INDEXED BY generations_deadline WHERE \(SQLiteSchema.active) AND deadline_at < \(now)",
            ]
            return try queries.map { query in
                try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + query).map { $0["detail"] as String }.joined(
                    separator: "; ")
            }
        }
        for plan in plans {
            XCTAssertTrue(plan.contains("USING INDEX") || plan.contains("USING COVERING INDEX"), plan)
            XCTAssertFalse(plan.contains("SCAN generations"), plan)
        }
    }

    func testOldEventsAndIdempotencyKeysExpire() async throws {
        let harness = try await Harness()
        let old = Date().addingTimeInterval(-40 * 86_400)
        let job = try await harness.submit(created: old)
        let keyed = Generation(
            id: Identifier.make("gen", at: old), ownerKeyID: harness.owner.id,
            request: GenerationRequest(model: "scripted/image", prompt: "k"),
            provider: "scripted", status: .pending, version: 1, progress: 0, attempts: 0, error: nil,
            providerTaskID: nil,
            leaseOwner: nil, leaseExpiresAt: nil, nextActionAt: old, deadlineAt: old + 60, createdAt: old,
            updatedAt: old,
            phaseTimes: [:], outputs: [])
        let first = try await harness.store.insert(
            keyed, event: Event(.generationCreated, generationID: keyed.id, at: old),
            idempotency: IdempotencyKey(key: "k1", requestHash: "a", window: 86_400))
        XCTAssertEqual(first, .inserted)
        let fresh = try await harness.submit()
        let now = Date()
        let expired = try await harness.store.expire(
            eventsBefore: now - 30 * 86_400, keysBefore: now - 86_400, limit: 100)
        XCTAssertEqual(expired, 3, "two old events and one old key")
        let oldEvents = try await harness.store.events(generationID: job.id)
        XCTAssertEqual(oldEvents, [])
        let freshEvents = try await harness.store.events(generationID: fresh.id)
        XCTAssertEqual(freshEvents.count, 1, "recent events stay")
        var again = keyed
        again.id = Identifier.make("gen")
        again.createdAt = now
        let reused = try await harness.store.insert(
            again, event: Event(.generationCreated, generationID: again.id),
            idempotency: IdempotencyKey(key: "k1", requestHash: "b", window: 86_400))
        XCTAssertEqual(reused, .inserted, "an expired key is free again")
    }

    func testOnlyOneProcessLeadsTheSweepAtATime() async throws {
        let harness = try await Harness()
        let now = Date()
        let a = try await harness.store.lead("sweep", owner: "a", until: now + 3, now: now)
        let b = try await harness.store.lead("sweep", owner: "b", until: now + 3, now: now)
        let renewed = try await harness.store.lead("sweep", owner: "a", until: now + 6, now: now + 1)
        let takenOver = try await harness.store.lead("sweep", owner: "b", until: now + 10, now: now + 7)
        XCTAssertEqual([a, b, renewed, takenOver], [true, false, true, true])
    }

    /// A process whose heartbeat stopped (killed, its host lost) has its leases voided by the next
    /// sweep, on any host, and its jobs re-driven at once; a process still beating keeps its own,
    /// and one never seen in the store is left to its leases running out.
    func testTheSweepVoidsTheLeasesOfAProcessWhoseHeartbeatStopped() async throws {
        let harness = try await Harness(policy: JobPolicy(leaseSeconds: 30, silentAfterSeconds: 10))
        let jobs = [try await harness.submit(), try await harness.submit(), try await harness.submit()]
        let now = Date()
        let owners = ["dispatcher-1@host-a", "dispatcher-2@host-b", "dispatcher-3@host-c"]
        for (job, owner) in zip(jobs, owners) {
            let claimed = try await harness.store.claim(
                id: job.id, statuses: [.pending], owner: owner, leaseUntil: now + 30, now: now)
            XCTAssertNotNil(claimed)
        }
        try await harness.store.present(instance: owners[0], at: now - 20)
        try await harness.store.present(instance: owners[1], at: now - 20)
        try await harness.store.present(instance: owners[1], at: now - 1)  // beat again since
        try await RecoverySweep(context: harness.context("sweeper")).sweepOnce(now: now)

        let (gone, alive, unknown) = (
            try await harness.job(jobs[0].id), try await harness.job(jobs[1].id), try await harness.job(jobs[2].id)
        )
        XCTAssertNil(gone.leaseOwner, "the silent process's lease is void")
        XCTAssertGreaterThan(gone.version, jobs[0].version + 1, "a late write from it finds another version")
        XCTAssertEqual(harness.noticed(.submit), [jobs[0].id], "and its job is re-driven in the same pass")
        XCTAssertEqual(alive.leaseOwner, owners[1])
        XCTAssertEqual(unknown.leaseOwner, owners[2])
        let again = try await harness.store.releaseLeasesOfSilentInstances(seenBefore: now + 60, dueAt: now)
        XCTAssertEqual(again.instances, [owners[1]], "the gone process was forgotten; only the live one is known")
    }

    func testBackoffGrowsWithJitterUnderACapAndHonoursRetryAfter() {
        let backoff = Backoff(base: 2, cap: 60)
        let low = { (range: ClosedRange<Double>) in range.lowerBound }
        let high = { (range: ClosedRange<Double>) in range.upperBound }
        XCTAssertEqual(backoff.delay(afterAttempt: 1, random: low), 1)
        XCTAssertEqual(backoff.delay(afterAttempt: 1, random: high), 2)
        XCTAssertEqual(backoff.delay(afterAttempt: 3, random: high), 8)
        XCTAssertEqual(backoff.delay(afterAttempt: 30, random: high), 60)
        XCTAssertEqual(backoff.delay(afterAttempt: 1, retryAfter: 30, random: low), 30)
    }
}
