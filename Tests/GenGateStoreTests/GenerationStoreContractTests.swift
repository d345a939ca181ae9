import Foundation
import XCTest
import GenGateCore
@testable import GenGateStore

/// The behaviour every `GenerationStore` backend must have. The tests speak to the protocol only,
/// except where they check SQLite itself (the file, the schema check); a second backend runs the
/// same cases by overriding `makeStore` and `makeSecondConnection` (`PostgresStoreTests`).
class GenerationStoreContractTests: XCTestCase {
    var directory: URL!
    var store: (any GenerationStore)!
    var owner: APIKey!

    /// A fresh, migrated, empty store.
    func makeStore() async throws -> any GenerationStore {
        try SQLiteStore(path: path, migrate: true)
    }

    /// Another connection to the same store, as another process would have.
    func makeSecondConnection() async throws -> any GenerationStore {
        try SQLiteStore(path: path)
    }

    override func setUp() async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("gg-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        store = try await makeStore()
        owner = try await store.createAPIKey(name: "test", isAdmin: false).key
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: directory)
    }

    var path: String { directory.appendingPathComponent("store.sqlite").path }

    func makeGeneration(n: Int = 2, now: Date = Date(), deadline: TimeInterval = 600, owner: APIKey? = nil)
        -> Generation
    {
        Generation(
            id: Identifier.make("gen", at: now), ownerKeyID: (owner ?? self.owner).id,
            request: GenerationRequest(model: "sim/image", prompt: "a fox", n: n, seed: 3), provider: "sim",
            status: .pending, version: 1, progress: 0, attempts: 0, error: nil, providerTaskID: nil, leaseOwner: nil,
            leaseExpiresAt: nil, nextActionAt: now, deadlineAt: now.addingTimeInterval(deadline), createdAt: now,
            updatedAt: now,
            phaseTimes: [.pending: now], outputs: [])
    }

    func inserted(_ generation: Generation? = nil) async throws -> Generation {
        let generation = generation ?? makeGeneration()
        try await store.insert(
            generation,
            event: Event(
                .generationCreated(.init(model: "sim/image", provider: "sim", n: 1)), generationID: generation.id))
        return generation
    }

    func testInsertAndReadBack() async throws {
        let generation = try await inserted()
        let read = try await XCTUnwrapAsync(try await store.generation(id: generation.id))
        XCTAssertEqual(read.request, generation.request)
        XCTAssertEqual(read.status, .pending)
        XCTAssertEqual(read.ownerKeyID, owner.id)
        XCTAssertEqual(
            read.createdAt.timeIntervalSince1970, generation.createdAt.timeIntervalSince1970, accuracy: 0.001)
        let events = try await store.events(generationID: generation.id)
        XCTAssertEqual(events.map(\.type), [.generationCreated], "the created event is committed with the generation")
        do {
            try await store.insert(
                generation,
                event: Event(
                    .generationCreated(.init(model: "sim/image", provider: "sim", n: 1)), generationID: generation.id))
            XCTFail("a duplicate id must be refused")
        } catch let error as StoreError {
            XCTAssertEqual(error, .duplicateID(generation.id))
        }
    }

    func testUploadsInputObjectsAndWhatWasDoneToEachInputAreKept() async throws {
        let now = Date()
        let info = ImageInfo(format: .jpeg, width: 640, height: 480, bytes: 12_000, sha256: "ab12")
        let upload = Upload(
            id: Identifier.make("upl", at: now), ownerKeyID: owner.id, objectKey: "inputs/2026-12-08/ab12.jpg",
            info: info, createdAt: now, expiresAt: now.addingTimeInterval(3_600))
        try await store.insertUpload(upload)
        let read = try await store.upload(id: upload.id, now: now)
        XCTAssertEqual(read?.info, info)
        XCTAssertEqual(read?.objectKey, upload.objectKey)
        XCTAssertEqual(
            read?.expiresAt.timeIntervalSince1970 ?? 0, upload.expiresAt.timeIntervalSince1970, accuracy: 0.001)
        let later = now.addingTimeInterval(3_601)
        let gone = try await store.upload(id: upload.id, now: later)
        XCTAssertNil(gone, "an expired upload is no upload")

        // Input objects: recorded once (a second record keeps the first expiry), listed once due,
        // forgotten with the uploads they held.
        try await store.recordInputObject(key: upload.objectKey, expiresAt: upload.expiresAt)
        try await store.recordInputObject(key: upload.objectKey, expiresAt: upload.expiresAt.addingTimeInterval(99))
        try await store.recordInputObject(
            key: "inputs/2026-12-09/cd34.png", expiresAt: later.addingTimeInterval(86_400))
        let due = try await store.expiredInputObjects(now: now, limit: 10)
        XCTAssertEqual(due, [])
        let dueLater = try await store.expiredInputObjects(now: later, limit: 10)
        XCTAssertEqual(dueLater, [upload.objectKey])
        try await store.forgetInputObject(key: upload.objectKey)
        let afterwards = try await store.expiredInputObjects(now: later, limit: 10)
        XCTAssertEqual(afterwards, [])
        let forgotten = try await store.upload(id: upload.id, now: now)
        XCTAssertNil(forgotten)

        // What was done to each input, recorded with a transition and read back.
        var generation = makeGeneration()
        generation.request.images = [.upload(upload.id), .url("https://example.com/a.png")]
        generation.request.preprocess = ImagePipeline.presets["standard"]
        let job = try await inserted(generation)
        var change = Transition.of(job, to: .dispatching)
        let record = PreparedInput(
            index: 0, source: .upload(upload.id), original: info,
            processed: ImageInfo(format: .jpeg, width: 320, height: 240, bytes: 4_000, sha256: "ef56"),
            pipeline: ImagePipeline.presets["standard"]!, delivery: .base64, provider: "kling")
        change.inputs = [record]
        let changed = try await store.transition(change)
        XCTAssertEqual(changed?.inputs, [record])
        let back = try await XCTUnwrapAsync(try await store.generation(id: job.id))
        XCTAssertEqual(back.inputs, [record])
        XCTAssertEqual(back.request.images, generation.request.images)
        XCTAssertEqual(back.request.preprocess, ImagePipeline.presets["standard"])
    }

    func testOnlyOneOfTwoClaimantsWinsAndAnExpiredLeaseCanBeTakenOver() async throws {
        let generation = try await inserted()
        let now = Date()
        let first = store!
        let second = try await makeSecondConnection()
        async let a = first.claim(id: generation.id, statuses: [.pending], owner: "a", leaseUntil: now + 30, now: now)
        async let b = second.claim(id: generation.id, statuses: [.pending], owner: "b", leaseUntil: now + 30, now: now)
        let winners = [try await a, try await b].compactMap { $0 }
        XCTAssertEqual(winners.count, 1, "exactly one claimant may win")
        XCTAssertEqual(winners[0].version, 2)

        let notYet = try await store.claim(
            id: generation.id, statuses: [.pending], owner: "c", leaseUntil: now + 60, now: now + 10)
        XCTAssertNil(notYet, "a live lease keeps others out")
        let takeover = try await store.claim(
            id: generation.id, statuses: [.pending], owner: "c", leaseUntil: now + 90, now: now + 31)
        XCTAssertEqual(takeover?.leaseOwner, "c", "an expired lease can be taken over")
    }

    func testClaimWaitsForNextActionTime() async throws {
        let now = Date()
        var generation = makeGeneration(now: now)
        generation.nextActionAt = now + 60
        _ = try await inserted(generation)
        let early = try await store.claim(
            id: generation.id, statuses: [.pending], owner: "a", leaseUntil: now + 30, now: now)
        XCTAssertNil(early)
        let due = try await store.claim(
            id: generation.id, statuses: [.pending], owner: "a", leaseUntil: now + 90, now: now + 61)
        XCTAssertNotNil(due)
    }

    func testTransitionIsCompareAndSet() async throws {
        let generation = try await inserted()
        var change = Transition.of(generation, to: .dispatching)
        change.attempts = 1
        change.events = [
            Event(
                .generationStarted(.init(attempt: 1, provider: "sim", model: "sim/image", providerTaskID: "t1")),
                generationID: generation.id)
        ]
        let moved = try await XCTUnwrapAsync(try await store.transition(change))
        XCTAssertEqual(moved.status, .dispatching)
        XCTAssertEqual(moved.version, generation.version + 1)
        XCTAssertEqual(moved.attempts, 1)
        XCTAssertNotNil(moved.phaseTimes[.dispatching])

        let stale = try await store.transition(change)
        XCTAssertNil(stale, "a change based on an old version must not apply")
        let events = try await store.events(generationID: generation.id)
        XCTAssertEqual(
            events.map(\.type), [.generationCreated, .generationStarted], "a refused change writes no event")
    }

    func testTerminalStateClearsLeaseAndNextAction() async throws {
        let generation = try await inserted()
        let now = Date()
        let claimed = try await XCTUnwrapAsync(
            try await store.claim(
                id: generation.id, statuses: [.pending], owner: "a",
                leaseUntil: now + 30, now: now))
        var change = Transition.of(claimed, to: .failed)
        change.error = .some(GenGateError(.contentPolicy, "no"))
        let failed = try await XCTUnwrapAsync(try await store.transition(change))
        XCTAssertNil(failed.leaseOwner)
        XCTAssertNil(failed.nextActionAt)
        XCTAssertEqual(failed.error?.code, .contentPolicy)
        let due = try await store.dueWork(now: now + 3_600, staleBefore: now + 3_600, limit: 10)
        XCTAssertFalse(due.contains { $0.id == generation.id }, "terminal jobs are never due")
    }

    func testOutputsAreCheckpointedOneByOne() async throws {
        let generation = try await inserted(makeGeneration(n: 3))
        var change = Transition.of(generation, to: .uploading)
        change.newOutputs = (0..<3).map { Output(index: $0, source: "sim://\($0)", contentType: "image/png") }
        let uploading = try await XCTUnwrapAsync(try await store.transition(change))
        XCTAssertEqual(uploading.outputs.count, 3)
        XCTAssertEqual(uploading.missingOutputIndexes, [0, 1, 2])

        var stored = uploading.outputs[1]
        stored.objectKey = "k/1.png"
        stored.bytes = 10
        stored.sha256 = "abc"
        stored.storedAt = Date()
        let recorded = try await store.recordStoredOutput(
            generationID: generation.id, output: stored,
            event: Event(
                .generationOutput(
                    .init(index: 0, contentType: "image/png", bytes: 4, sha256: "00", url: "http://localhost/o")),
                generationID: generation.id))
        XCTAssertTrue(recorded)
        let after = try await XCTUnwrapAsync(try await store.generation(id: generation.id))
        XCTAssertEqual(after.missingOutputIndexes, [0, 2])
        XCTAssertEqual(after.outputs[1].sha256, "abc")

        // A retry's fresh source replaces only outputs not yet stored.
        var retry = Transition.of(after, to: .uploading)
        retry.newOutputs = (0..<3).map { Output(index: $0, source: "sim://new\($0)", contentType: "image/png") }
        let refreshed = try await XCTUnwrapAsync(try await store.transition(retry))
        XCTAssertEqual(refreshed.outputs.map(\.source), ["sim://new0", "sim://1", "sim://new2"])
    }

    func testCheckpointIsRefusedOnceCancelled() async throws {
        let generation = try await inserted(makeGeneration(n: 1))
        var change = Transition.of(generation, to: .uploading)
        change.newOutputs = [Output(index: 0, source: "s", contentType: "image/png")]
        let uploading = try await XCTUnwrapAsync(try await store.transition(change))
        _ = try await store.transition(Transition.of(uploading, to: .cancelled))
        var output = uploading.outputs[0]
        output.objectKey = "k"
        output.storedAt = Date()
        let recorded = try await store.recordStoredOutput(
            generationID: generation.id, output: output,
            event: Event(
                .generationOutput(
                    .init(index: 0, contentType: "image/png", bytes: 4, sha256: "00", url: "http://localhost/o"))))
        XCTAssertFalse(recorded, "a cancelled job is final")
    }

    func testExpiredLeasesAreVoidedAndDueWorkFindsStaleMessagesAndDueRetries() async throws {
        let now = Date()
        let fresh = try await inserted(makeGeneration(now: now))
        let stale = try await inserted(makeGeneration(now: now - 60))
        let leased = try await inserted(makeGeneration(now: now - 60))
        _ = try await store.claim(
            id: leased.id, statuses: [.pending], owner: "dead", leaseUntil: now - 1, now: now - 60)
        let waiting = try await inserted(makeGeneration(now: now - 60))
        var retry = Transition.of(waiting, to: .retryWait)
        retry.nextActionAt = .some(now - 0.5)
        _ = try await store.transition(retry)

        let expired = try await store.releaseExpiredLeases(now: now, limit: 10)
        XCTAssertEqual(expired, [DueWork(id: leased.id, status: .pending, leaseExpired: true)])
        let voided = try await store.generation(id: leased.id)
        XCTAssertNil(voided?.leaseOwner, "an expired lease is voided")
        let lateWrite = try await store.renewLease(id: leased.id, owner: "dead", version: 2, until: now + 30)
        XCTAssertFalse(lateWrite, "its holder, if it still lives, can write nothing")

        let due = try await store.dueWork(now: now, staleBefore: now - 5, limit: 10)
        let byID = Dictionary(uniqueKeysWithValues: due.map { ($0.id, $0) })
        XCTAssertNil(byID[fresh.id], "a job whose message was just sent is not due yet")
        XCTAssertEqual(byID[stale.id]?.status, .pending)
        XCTAssertNil(byID[leased.id], "voided just now: due at once, within the staleness grace")
        XCTAssertEqual(byID[waiting.id]?.status, .retryWait, "a retry is due at its time, with no staleness grace")
    }

    func testActiveCountsCoverEveryNonTerminalState() async throws {
        let first = try await inserted()
        _ = try await inserted()
        _ = try await store.transition(Transition.of(first, to: .cancelled))
        let counts = try await store.activeCounts()
        XCTAssertEqual(counts[.pending], 1)
        XCTAssertEqual(counts[.running], 0)
        XCTAssertNil(counts[.cancelled], "terminal states are counted by the monitor's counters, not here")
    }

    func testPastDeadline() async throws {
        let now = Date()
        let late = try await inserted(makeGeneration(now: now - 100, deadline: 50))
        _ = try await inserted(makeGeneration(now: now, deadline: 600))
        let overdue = try await store.pastDeadline(now: now, limit: 10)
        XCTAssertEqual(overdue.map(\.id), [late.id])
    }

    func testListIsPerOwnerNewestFirstWithCursorAndStatusFilter() async throws {
        let other = try await store.createAPIKey(name: "other", isAdmin: false).key
        var ids: [String] = []
        for i in 0..<5 {
            ids.append(try await inserted(makeGeneration(now: Date(timeIntervalSinceNow: Double(i)))).id)
        }
        _ = try await inserted(makeGeneration(owner: other))
        let first = try await store.list(ownerKeyID: owner.id, status: nil, after: nil, limit: 3)
        XCTAssertEqual(first.map(\.id), Array(ids.reversed().prefix(3)))
        let second = try await store.list(ownerKeyID: owner.id, status: nil, after: first.last!.id, limit: 3)
        XCTAssertEqual(second.map(\.id), Array(ids.reversed().suffix(2)))
        let completed = try await store.list(ownerKeyID: owner.id, status: .completed, after: nil, limit: 10)
        XCTAssertTrue(completed.isEmpty)
    }

    func testReleaseLeaseMakesTheJobDueAgain() async throws {
        let generation = try await inserted()
        let now = Date()
        let claimed = try await XCTUnwrapAsync(
            try await store.claim(
                id: generation.id, statuses: [.pending], owner: "a",
                leaseUntil: now + 30, now: now))
        let wrongOwner = try await store.releaseLease(
            id: generation.id, owner: "b", version: claimed.version, nextActionAt: now)
        XCTAssertFalse(wrongOwner)
        let released = try await store.releaseLease(
            id: generation.id, owner: "a", version: claimed.version, nextActionAt: now)
        XCTAssertTrue(released)
        let again = try await store.claim(
            id: generation.id, statuses: [.pending], owner: "b", leaseUntil: now + 30, now: now)
        XCTAssertEqual(again?.leaseOwner, "b")
    }

    /// Moves `generation` to dispatching under `limits`: the job, or the refusal.
    static func dispatch(_ generation: Generation, on store: any GenerationStore, limits: ProviderLimits) async throws
        -> Result<Generation?, ProviderAtLimit>
    {
        var change = Transition.of(generation, to: .dispatching)
        change.admission = ProviderAdmission(provider: generation.provider, limits: limits)
        do {
            return .success(try await store.transition(change))
        } catch let refusal as ProviderAtLimit {
            return .failure(refusal)
        }
    }

    func testAdmissionsHoldTheConcurrencyLimitAcrossConnections() async throws {
        let limits = ProviderLimits(maxConcurrency: 5)
        var jobs: [Generation] = []
        for _ in 0..<24 { jobs.append(try await inserted()) }
        let second = try await makeSecondConnection()
        let stores: [any GenerationStore] = [store, second]
        let outcomes = try await withThrowingTaskGroup(of: Result<Generation?, ProviderAtLimit>.self) { group in
            for (index, job) in jobs.enumerated() {
                let target = stores[index % 2]
                group.addTask { try await Self.dispatch(job, on: target, limits: limits) }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let admitted = outcomes.filter { if case .success(let job) = $0 { return job != nil } else { return false } }
        XCTAssertEqual(admitted.count, 5, "exactly the limit, whichever connection asked")
        XCTAssertEqual(outcomes.count - admitted.count, 19)
        let refused = try await store.generation(id: jobs.last!.id)
        XCTAssertEqual(refused?.status, .pending, "a refused admission writes nothing")
        let state = try await store.providerLimits().first { $0.provider == "sim" }
        XCTAssertEqual(state?.inFlight, 5)
        XCTAssertEqual(state?.room, 0)
    }

    func testAThrottleFedBackWithAnOutcomeShrinksTheLimitForEveryone() async throws {
        let limits = ProviderLimits(maxConcurrency: 8)
        var running: [Generation] = []
        for _ in 0..<4 {
            if case .success(let job?) = try await Self.dispatch(try await inserted(), on: store, limits: limits) {
                running.append(job)
            }
        }
        XCTAssertEqual(running.count, 4)
        // The fifth submission was throttled: its retry records the feedback.
        var retry = Transition.of(running[3], to: .retryWait)
        retry.nextActionAt = .some(Date() + 60)
        retry.limitFeedback = LimitFeedback(provider: "sim", limits: limits, throttled: true)
        _ = try await store.transition(retry)
        let state = try await store.providerLimits().first { $0.provider == "sim" }
        XCTAssertEqual(state?.concurrency, 1.5, "half of the 3 tasks open once the throttled one left")
        XCTAssertEqual(state?.inFlight, 3)
        guard
            case .failure(let refusal) = try await Self.dispatch(
                try await inserted(), on: try await makeSecondConnection(), limits: limits)
        else { return XCTFail("admitted over the shrunk limit") }
        XCTAssertEqual(refusal.reason, .concurrency)
    }

    func testProvidersWithoutLimitsAreNeitherCountedNorWritten() async throws {
        let job = try await inserted()
        guard case .success(let moved?) = try await Self.dispatch(job, on: store, limits: ProviderLimits()) else {
            return XCTFail("refused with no limit")
        }
        XCTAssertEqual(moved.status, .dispatching)
        let states = try await store.providerLimits()
        XCTAssertEqual(states.map(\.provider), ["sim"])
        XCTAssertNil(states.first?.concurrency)
    }
}

func XCTUnwrapAsync<T>(_ value: T?, file: StaticString = #filePath, line: UInt = #line) async throws -> T {
    try XCTUnwrap(value, file: file, line: line)
}
