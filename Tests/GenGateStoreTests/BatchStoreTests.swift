import Foundation
import GenGateCore
import XCTest

@testable import GenGateStore

/// Batches on the store contract: windows, release, stop, listing (both backends).
extension GenerationStoreContractTests {
    func testABatchHoldsJobsBeyondItsWindowReleasesThemAsOthersEndAndStops() async throws {
        let now = Date()
        let jobs = (0..<5).map { index in makeGeneration(n: 1, now: now.addingTimeInterval(Double(index) / 1000)) }
        let batch = Batch(
            id: Identifier.make("bat", at: now), ownerKeyID: owner.id, total: jobs.count, maxConcurrency: 2,
            stopOnError: false, priority: 1, metadata: ["run": .string("nightly")], createdAt: now)
        let events = jobs.map {
            Event(.generationCreated(.init(model: "sim/image", provider: "sim", n: 1)), generationID: $0.id)
        }
        let outcome = try await store.insertBatch(batch, generations: jobs, events: events, idempotency: nil)
        XCTAssertEqual(outcome, .inserted)
        let read = try await XCTUnwrapAsync(try await store.batch(id: batch.id))
        XCTAssertEqual(read.id, batch.id)
        XCTAssertEqual(read.maxConcurrency, 2)
        XCTAssertEqual(read.priority, 1)
        XCTAssertEqual(read.metadata, batch.metadata)
        XCTAssertEqual(read.createdAt.timeIntervalSince1970, now.timeIntervalSince1970, accuracy: 0.001)
        let listed = try await store.batches(ownerKeyID: owner.id, after: nil, limit: 10)
        XCTAssertEqual(listed.map(\.id), [batch.id], "listed without a cursor, whatever the database's locale")
        let value2 = try await store.batches(ownerKeyID: owner.id, after: batch.id, limit: 10)
        XCTAssertEqual(value2, [])

        let listing = try await store.batchJobs(id: batch.id, after: -1, limit: 10)
        XCTAssertEqual(listing.map(\.index), [0, 1, 2, 3, 4])
        XCTAssertEqual(listing.map(\.held), [false, false, true, true, true])
        var counts = try await store.batchCounts(id: batch.id)
        XCTAssertEqual(counts.held, 3)
        XCTAssertEqual(counts.byStatus[.pending], 2)
        let value3 = try await store.releaseBatchJobs(batchID: batch.id, now: now)
        XCTAssertEqual(value3, [], "the window is full")

        // One of the first two ends: the next in order is released, due now.
        let first = try await XCTUnwrapAsync(try await store.generation(id: jobs[0].id))
        var cancel = Transition.of(first, to: .cancelled)
        cancel.events = [
            Event(.generationCancelled(.init(previousStatus: "pending", reason: "client")), generationID: first.id)
        ]
        _ = try await XCTUnwrapAsync(try await store.transition(cancel))
        let value4 = try await store.releaseBatchJobs(batchID: batch.id, now: Date())
        XCTAssertEqual(value4, [jobs[2].id])
        let released = try await XCTUnwrapAsync(try await store.generation(id: jobs[2].id))
        XCTAssertNotNil(released.nextActionAt)
        XCTAssertEqual(released.priority, 1)

        // Stopped: the two still held are cancelled with their events; nothing more is released.
        let value5 = try await store.stopBatch(id: batch.id, reason: "client", at: Date())
        XCTAssertEqual(value5, 2)
        let value6 = try await store.stopBatch(id: batch.id, reason: "client", at: Date())
        XCTAssertEqual(value6, 0, "idempotent")
        for job in jobs[3...] {
            let value7 = try await store.generation(id: job.id)?.status
            XCTAssertEqual(value7, .cancelled)
            let value8 = try await store.events(generationID: job.id).last?.type
            XCTAssertEqual(value8, .generationCancelled)
        }
        counts = try await store.batchCounts(id: batch.id)
        XCTAssertEqual(counts.held, 0)
        XCTAssertEqual(counts.byStatus[.cancelled], 3)
        let value9 = try await store.batch(id: batch.id)?.stopReason
        XCTAssertEqual(value9, "client")
        let value10 = try await store.unfinishedJobsOfStoppedBatches(limit: 10).sorted()
        XCTAssertEqual(value10, [jobs[1].id, jobs[2].id].sorted())
    }
}
