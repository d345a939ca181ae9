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
            jobs[0],
            event: Event(.generationCreated(.init(model: "sim/image", provider: "sim", n: 1)), generationID: jobs[0].id)
        )
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
            keyed,
            event: Event(
                .generationCreated(.init(model: "sim/image", provider: "sim", n: 1)), generationID: keyed.id, at: old),
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
            again,
            event: Event(.generationCreated(.init(model: "sim/image", provider: "sim", n: 1)), generationID: again.id),
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

    /// A process whose heartbeat stopped (killed, its host lost) has its leases on free steps
    /// voided by the next sweep, on its own `silentAfter`, and those jobs are re-driven at once; a
    /// submission it held is left to its lease; a process still beating, or with a longer
    /// `silentAfter`, keeps its own; one never seen in the store is left to its leases running out.
    func testTheSweepVoidsTheLeasesOfAProcessWhoseHeartbeatStopped() async throws {
        let harness = try await Harness()
        var submitted: [Generation] = []
        for _ in 0..<5 { submitted.append(try await harness.submit()) }
        let jobs = submitted
        let now = Date()
        let owners = ["uploader-1@a", "dispatcher-1@a", "uploader-2@b", "uploader-3@c", "uploader-4@d"]
        let statuses = ["uploading", "dispatching", "uploading", "uploading", "uploading"]
        try await harness.store.pool.write { db in
            for ((job, owner), status) in zip(zip(jobs, owners), statuses) {
                try db.execute(
                    sql: """
                        UPDATE generations SET status = ?, lease_owner = ?, lease_expires_at = ?, version = 2
                        WHERE id = ?
                        """, arguments: [status, owner, now.timeIntervalSince1970 + 600, job.id])
            }
        }
        for owner in owners.prefix(2) {
            try await harness.store.present(instance: owner, at: now - 20, silentAfter: 10)
        }
        try await harness.store.present(instance: owners[2], at: now - 20, silentAfter: 10)
        try await harness.store.present(instance: owners[2], at: now - 1, silentAfter: 10)  // beat again since
        // Patient by its own setting.
        try await harness.store.present(instance: owners[3], at: now - 20, silentAfter: 30)
        try await RecoverySweep(context: harness.context("sweeper")).sweepOnce(now: now)

        var after: [Generation] = []
        for job in jobs { after.append(try await harness.job(job.id)) }
        XCTAssertNil(after[0].leaseOwner, "the silent process's lease on an upload is void")
        XCTAssertEqual(after[0].version, 3, "so a late write from it finds another version")
        XCTAssertEqual(harness.noticed(.upload), [jobs[0].id], "and the job is re-driven in the same pass")
        XCTAssertEqual(after[1].leaseOwner, owners[1], "a submission it may still be paying for is not taken")
        XCTAssertEqual(after[2].leaseOwner, owners[2])
        XCTAssertEqual(after[3].leaseOwner, owners[3])
        XCTAssertEqual(after[4].leaseOwner, owners[4])
        let known = try await harness.store.releaseLeasesOfSilentInstances(now: now + 60, dueAt: now)
        XCTAssertEqual(Set(known.instances), Set(owners[2...3]), "the silent ones were forgotten")
    }

    func testBackoffGrowsWithJitterUnderACapAndHonoursRetryAfter() {
        let backoff = Backoff(base: 2, cap: 60)
        let low = { (range: ClosedRange<Double>) in range.lowerBound }
        let high = { (range: ClosedRange<Double>) in range.upperBound }
        XCTAssertEqual(backoff.delay(afterAttempt: 1, random: low), 0, "full jitter: anywhere from zero")
        XCTAssertEqual(backoff.delay(afterAttempt: 1, random: high), 2)
        XCTAssertEqual(backoff.delay(afterAttempt: 3, random: high), 8)
        XCTAssertEqual(backoff.delay(afterAttempt: 30, random: high), 60)
        XCTAssertEqual(backoff.delay(afterAttempt: 1, retryAfter: 30, random: low), 30)
    }
}
