import Foundation
import GenGateCore
import XCTest

@testable import GenGateStore

/// Costs, budgets and usage on the store contract (SQLite and PostgreSQL alike).
extension GenerationStoreContractTests {
    /// A job of `key` holding `reserved` back, made at `now`; throws what the store refused.
    func reserving(_ reserved: Double, key: APIKey, now: Date) async throws -> Generation {
        var generation = makeGeneration(n: 1, now: now, owner: key)
        generation.reservedCost = reserved
        return try await inserted(generation)
    }

    /// Moves `generation` to `dispatching` with a new attempt, then ends that attempt as `state`
    /// (with `update`'s changes) and the job as `status`.
    func run(
        _ generation: Generation, number: Int = 1, cost: Double, chargesOnAcceptance: Bool = false,
        state: Attempt.State, taskID: String? = nil, doubleCharge: Bool = false, status: GenerationStatus?,
        version: Int = 1, from: GenerationStatus = .pending
    ) async throws -> Int {
        var change = Transition(id: generation.id, from: from, version: version, to: .dispatching)
        change.attempts = number
        change.newAttempt = Attempt(
            generationID: generation.id, number: number, provider: "sim",
            clientReference: "\(generation.id)-a\(number)",
            providerTaskID: nil, outputIndexes: [0], state: .submitting, error: nil, createdAt: Date(),
            finishedAt: nil, model: "sim/image", cost: cost, chargesOnAcceptance: chargesOnAcceptance)
        let dispatching = try await XCTUnwrapAsync(try await store.transition(change))
        var end = Transition(
            id: generation.id, from: .dispatching, version: dispatching.version, to: status ?? .retryWait)
        end.attemptUpdate = AttemptUpdate(
            generationID: generation.id, number: number, from: [.submitting], to: state, providerTaskID: taskID,
            possibleDoubleCharge: doubleCharge)
        let ended = try await XCTUnwrapAsync(try await store.transition(end))
        return ended.version
    }

    func testABudgetRefusesWhatWouldPassItAndEndedJobsCountWhatTheirChargedAttemptsCost() async throws {
        let now = Date()
        let key = try await store.createAPIKey(
            name: "capped", isAdmin: false, budgets: KeyBudgets(daily: 1.0, monthly: 1.5)
        ).key
        XCTAssertEqual(key.budgets, KeyBudgets(daily: 1.0, monthly: 1.5))
        let first = try await reserving(0.6, key: key, now: now)
        var spend = try await store.spend(keyID: key.id, at: now)
        XCTAssertEqual(spend.day, 0.6, accuracy: 1e-9)
        XCTAssertEqual(spend.month, 0.6, accuracy: 1e-9)
        do {
            _ = try await reserving(0.6, key: key, now: now)
            XCTFail("a job that would take the key past its daily budget was made")
        } catch let refusal as BudgetExceeded {
            XCTAssertEqual(refusal.period, .daily)
            XCTAssertEqual(refusal.committed, 0.6, accuracy: 1e-9)
            XCTAssertEqual(refusal.requested, 0.6, accuracy: 1e-9)
        }
        // Nothing of the refused one was kept; a job within what is left goes through.
        spend = try await store.spend(keyID: key.id, at: now)
        XCTAssertEqual(spend.day, 0.6, accuracy: 1e-9)
        let second = try await reserving(0.4, key: key, now: now)

        // The first job ends having cost 0.25 (its first attempt failed unpaid, the second
        // delivered): its reservation gives way to that.
        var version = try await run(first, cost: 0.25, state: .failed, status: nil)
        version = try await run(
            first, number: 2, cost: 0.25, state: .succeeded, taskID: "t2", status: .completed, version: version,
            from: .retryWait)
        spend = try await store.spend(keyID: key.id, at: now)
        XCTAssertEqual(spend.day, 0.25 + 0.4, accuracy: 1e-9)
        // The second fails after a provider that charges on acceptance took it: paid all the same.
        _ = try await run(
            second, cost: 0.3, chargesOnAcceptance: true, state: .failed, taskID: "t3", status: .failed)
        spend = try await store.spend(keyID: key.id, at: now)
        XCTAssertEqual(spend.day, 0.25 + 0.3, accuracy: 1e-9)
        let attempts = try await store.attempts(generationID: first.id) + store.attempts(generationID: second.id)
        XCTAssertEqual(attempts.map(\.charged), [false, true, true])
        XCTAssertEqual(JobCost(attempts, currency: "USD").amount, 0.55, accuracy: 1e-9)
        XCTAssertEqual(JobCost(attempts, currency: "USD").wasted, 0.3, accuracy: 1e-9)

        // An attempt of an ended job found charged later (a task the sweep could not stop)
        // counts then.
        let third = try await reserving(0.2, key: key, now: now)
        _ = try await run(third, cost: 0.2, state: .submitted, taskID: "t4", status: .cancelled)
        spend = try await store.spend(keyID: key.id, at: now)
        XCTAssertEqual(spend.day, 0.55, accuracy: 1e-9, "a cancelled job's unpaid attempt costs nothing")
        let late = AttemptUpdate(
            generationID: third.id, number: 1, from: [.submitted], to: .abandoned, possibleDoubleCharge: true)
        let updated = try await store.updateAttempt(late)
        XCTAssertTrue(updated)
        spend = try await store.spend(keyID: key.id, at: now)
        XCTAssertEqual(spend.day, 0.75, accuracy: 1e-9)
        XCTAssertEqual(spend.month, 0.75, accuracy: 1e-9)

        // The monthly budget holds too: 0.75 is committed this month, 1.5 allowed.
        let changed = try await XCTUnwrapAsync(
            try await store.updateAPIKey(id: key.id, budgets: BudgetChange(daily: .some(nil), monthly: .some(0.9))))
        XCTAssertEqual(changed.budgets, KeyBudgets(daily: nil, monthly: 0.9))
        do {
            _ = try await reserving(0.2, key: key, now: now)
            XCTFail("a job that would take the key past its monthly budget was made")
        } catch let refusal as BudgetExceeded {
            XCTAssertEqual(refusal.period, .monthly)
        }
        // A free request passes a budget that is used up; an unbudgeted key is never refused.
        _ = try await reserving(0, key: key, now: now)
        _ = try await reserving(1_000, key: owner, now: now)
        let missing = try await store.updateAPIKey(id: "key_missing", budgets: BudgetChange(daily: .some(1)))
        XCTAssertNil(missing)
    }

    func testABatchIsReservedWholeOrNotAtAll() async throws {
        let now = Date()
        let key = try await store.createAPIKey(name: "batch", isAdmin: false, budgets: KeyBudgets(daily: 1)).key
        func batch(_ costs: [Double]) -> (Batch, [Generation]) {
            let batch = Batch(
                id: Identifier.make("bat", at: now), ownerKeyID: key.id, total: costs.count, maxConcurrency: 10,
                stopOnError: false, priority: 0, metadata: [:], createdAt: now)
            let jobs = costs.map { cost -> Generation in
                var job = makeGeneration(n: 1, now: now, owner: key)
                job.batchID = batch.id
                job.reservedCost = cost
                return job
            }
            return (batch, jobs)
        }
        let (refused, refusedJobs) = batch([0.5, 0.4, 0.3])
        do {
            _ = try await store.insertBatch(refused, generations: refusedJobs, events: [], idempotency: nil)
            XCTFail("a batch past the budget was made")
        } catch let refusal as BudgetExceeded {
            XCTAssertEqual(refusal.requested, 1.2, accuracy: 1e-9)
        }
        let nothing = try await store.batch(id: refused.id)
        XCTAssertNil(nothing)
        let (accepted, jobs) = batch([0.5, 0.4])
        _ = try await store.insertBatch(accepted, generations: jobs, events: [], idempotency: nil)
        let spend = try await store.spend(keyID: key.id, at: now)
        XCTAssertEqual(spend.day, 0.9, accuracy: 1e-9)
        let read = try await XCTUnwrapAsync(try await store.generation(id: jobs[1].id))
        XCTAssertEqual(read.reservedCost ?? -1, 0.4, accuracy: 1e-9)
    }

    func testUsageSumsChargedAttemptsByDayKeyModelAndProvider() async throws {
        let now = Date()
        let other = try await store.createAPIKey(name: "other", isAdmin: false).key
        let a = try await reserving(1, key: owner, now: now)
        let b = try await reserving(1, key: owner, now: now)
        let c = try await reserving(1, key: other, now: now)
        let version = try await run(
            a, cost: 0.1, state: .failed, doubleCharge: true, status: nil)
        _ = try await run(
            a, number: 2, cost: 0.1, state: .succeeded, taskID: "ta", status: .completed, version: version,
            from: .retryWait)
        _ = try await run(b, cost: 0.2, state: .failed, status: .failed)
        _ = try await run(c, cost: 0.4, state: .succeeded, taskID: "tc", status: .completed)
        // A charge the provider reported is summed beside the estimate.
        let reported = AttemptUpdate(
            generationID: c.id, number: 1, from: [.succeeded], to: .succeeded,
            charge: ProviderCharge(credits: 4))
        _ = try await store.updateAttempt(reported)

        let day = SpendPeriod.starts(of: now).day
        let rows = try await store.usage(from: day, to: day.addingTimeInterval(86_400), keyID: nil)
        XCTAssertEqual(rows.count, 2, "one row per key here (one day, model and provider)")
        let mine = try XCTUnwrap(rows.first { $0.keyID == owner.id })
        XCTAssertEqual(mine.jobs, 2)
        XCTAssertEqual(mine.attempts, 3)
        XCTAssertEqual(mine.chargedAttempts, 2, "the delivered one and the possible double charge")
        XCTAssertEqual(mine.amount, 0.2, accuracy: 1e-9)
        XCTAssertEqual(mine.wasted, 0.1, accuracy: 1e-9)
        XCTAssertEqual(mine.doubleCharges, 1)
        XCTAssertEqual(mine.model, "sim/image")
        XCTAssertEqual(mine.provider, "sim")
        let theirs = try XCTUnwrap(rows.first { $0.keyID == other.id })
        XCTAssertEqual(theirs.amount, 0.4, accuracy: 1e-9)
        XCTAssertEqual(theirs.reported.credits ?? 0, 4, accuracy: 1e-9)
        let only = try await store.usage(from: day, to: day.addingTimeInterval(86_400), keyID: other.id)
        XCTAssertEqual(only.map(\.keyID), [other.id])
        let before = try await store.usage(from: day.addingTimeInterval(-86_400), to: day, keyID: nil)
        XCTAssertTrue(before.isEmpty)
        // Each job's cost (from its attempts) adds up to the same.
        var total = 0.0
        for job in [a, b, c] {
            total += JobCost(try await store.attempts(generationID: job.id), currency: "USD").amount
        }
        XCTAssertEqual(total, rows.reduce(0) { $0 + $1.amount }, accuracy: 1e-9)
    }
}

final class SpendPeriodTests: XCTestCase {
    func testPeriodsAreUTCDaysAndMonthsAndTheCheckSaysWhichBudgetWouldBePassed() throws {
        let newYear = Date(timeIntervalSince1970: 1_798_761_600)  // 2027-01-01T00:00:00Z
        let before = SpendPeriod.names(at: newYear.addingTimeInterval(-1))
        XCTAssertEqual([before.day, before.month], ["day:2026-12-31", "month:2026-12"])
        let after = SpendPeriod.names(at: newYear)
        XCTAssertEqual([after.day, after.month], ["day:2027-01-01", "month:2027-01"])
        let starts = SpendPeriod.starts(of: newYear.addingTimeInterval(-1))
        XCTAssertEqual(starts.day.timeIntervalSince1970, newYear.timeIntervalSince1970 - 86_400)
        XCTAssertEqual(starts.month.timeIntervalSince1970, newYear.timeIntervalSince1970 - 31 * 86_400)

        let budgets = KeyBudgets(daily: 1, monthly: 10)
        XCTAssertNoThrow(try SpendPeriod.check(0.4, budgets: budgets, committed: KeySpend(day: 0.6, month: 0.6)))
        XCTAssertThrowsError(try SpendPeriod.check(0.41, budgets: budgets, committed: KeySpend(day: 0.6, month: 0.6))) {
            XCTAssertEqual(($0 as? BudgetExceeded)?.period, .daily)
        }
        XCTAssertThrowsError(try SpendPeriod.check(0.5, budgets: budgets, committed: KeySpend(day: 0, month: 9.6))) {
            XCTAssertEqual(($0 as? BudgetExceeded)?.period, .monthly)
        }
        // Nothing more passes a budget already used up; no budget, no refusal.
        XCTAssertNoThrow(try SpendPeriod.check(0, budgets: budgets, committed: KeySpend(day: 5, month: 50)))
        XCTAssertNoThrow(try SpendPeriod.check(1e9, budgets: KeyBudgets(), committed: KeySpend(day: 5, month: 50)))
    }
}

/// Experiments and ratings on the store contract.
extension GenerationStoreContractTests {
    func testExperimentsAreKeptMovedByCompareAndSetAndTheirJobsReadBackAsSamples() async throws {
        let now = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 * 1_000).rounded() / 1_000)
        let experiment = Experiment(
            id: Identifier.make("exp", at: now), name: "pro-vs-dev", description: "which?",
            variants: [
                Experiment.Variant(name: "pro", model: "sim/image", traffic: 50),
                Experiment.Variant(
                    name: "dev", model: "sim/image", params: ["steps": .number(20)], promptTemplate: "{prompt}!",
                    traffic: 50),
            ], metrics: Experiment.defaultMetrics, createdAt: now)
        let created = try await store.createExperiment(experiment)
        XCTAssertTrue(created)
        var twin = experiment
        twin.id = Identifier.make("exp", at: now)
        let duplicate = try await store.createExperiment(twin)
        XCTAssertFalse(duplicate, "names are unique")
        let byName = try await store.experiment("pro-vs-dev")
        let byID = try await store.experiment(experiment.id)
        XCTAssertEqual(byName, experiment)
        XCTAssertEqual(byID, experiment)
        let listed = try await store.experiments(after: nil, limit: 10)
        XCTAssertEqual(listed.map(\.id), [experiment.id])

        var running = experiment
        running.status = .running
        running.startedAt = now
        let moved = try await store.updateExperiment(running, from: [.draft])
        XCTAssertEqual(moved?.status, .running)
        let stale = try await store.updateExperiment(running, from: [.draft])
        XCTAssertNil(stale, "a move from a status it is no longer in is refused")

        // Jobs enrolled in it read back as samples, with what they cost and their rating.
        var first = makeGeneration(n: 1, now: now)
        first.experiment = ExperimentAssignment(experimentID: experiment.id, variant: "dev")
        first = try await inserted(first)
        let read = try await store.generation(id: first.id)
        XCTAssertEqual(read?.experiment, first.experiment)
        _ = try await run(first, cost: 0.2, state: .succeeded, taskID: "t1", status: .completed)
        var second = makeGeneration(n: 1, now: now)
        second.experiment = ExperimentAssignment(experimentID: experiment.id, variant: "pro")
        second = try await inserted(second)
        _ = try await inserted()  // not enrolled
        let rated = try await store.rate(
            Rating(generationID: first.id, ownerKeyID: owner.id, value: 4, feedback: "nice", ratedAt: now))
        XCTAssertTrue(rated)
        let stranger = try await store.rate(
            Rating(generationID: first.id, ownerKeyID: "key_other", value: 1, feedback: nil, ratedAt: now))
        XCTAssertFalse(stranger, "only the job's key rates it")
        let again = try await store.rate(
            Rating(generationID: first.id, ownerKeyID: owner.id, value: 5, feedback: nil, ratedAt: now))
        XCTAssertTrue(again)
        let rating = try await store.rating(generationID: first.id)
        XCTAssertEqual(rating?.value, 5)
        XCTAssertNil(rating?.feedback)

        let samples = try await store.experimentSamples(id: experiment.id).sorted { $0.variant < $1.variant }
        XCTAssertEqual(samples.map(\.variant), ["dev", "pro"])
        XCTAssertEqual(samples[0].status, .completed)
        XCTAssertEqual(samples[0].cost, 0.2, accuracy: 1e-9)
        XCTAssertEqual(samples[0].rating, 5)
        XCTAssertNotNil(samples[0].durationSeconds)
        XCTAssertEqual(samples[1].status, .pending)
        XCTAssertNil(samples[1].durationSeconds)

        // Only a draft no job was sent to can be deleted.
        let deletedRunning = try await store.deleteExperiment(id: experiment.id)
        XCTAssertFalse(deletedRunning)
        var draft = twin
        draft.name = "unused"
        _ = try await store.createExperiment(draft)
        let deleted = try await store.deleteExperiment(id: draft.id)
        XCTAssertTrue(deleted)
        let gone = try await store.experiment("unused")
        XCTAssertNil(gone)
    }
}

/// A retry's budget.
extension GenerationStoreContractTests {
    func testARetryAfterAChargedFailureIsHeldToTheBudgetToo() async throws {
        let now = Date()
        let key = try await store.createAPIKey(name: "retry", isAdmin: false, budgets: KeyBudgets(daily: 1)).key
        let job = try await reserving(0.6, key: key, now: now)
        // The first attempt is taken and fails: charged (the provider charges on acceptance).
        let version = try await run(
            job, cost: 0.6, chargesOnAcceptance: true, state: .failed, taskID: "t1", status: nil)
        // A second attempt may cost 0.6 more than the job holds: 1.2 committed would pass 1.
        var retry = Transition(id: job.id, from: .retryWait, version: version, to: .dispatching)
        retry.attempts = 2
        retry.newAttempt = Attempt(
            generationID: job.id, number: 2, provider: "sim", clientReference: "\(job.id)-a2", providerTaskID: nil,
            outputIndexes: [0], state: .submitting, error: nil, createdAt: Date(), finishedAt: nil,
            model: "sim/image", cost: 0.6, chargesOnAcceptance: true)
        do {
            _ = try await store.transition(retry)
            XCTFail("a retry past the budget was recorded")
        } catch let refusal as BudgetExceeded {
            XCTAssertEqual(refusal.requested, 0.6, accuracy: 1e-9)
            XCTAssertEqual(refusal.committed, 0.6, accuracy: 1e-9)
        }
        let attempts = try await store.attempts(generationID: job.id)
        XCTAssertEqual(attempts.count, 1, "nothing of the refused retry was written")
        // With room, the retry holds back the difference, and the job ends having cost both.
        _ = try await store.updateAPIKey(id: key.id, budgets: BudgetChange(daily: .some(2)))
        let dispatching = try await XCTUnwrapAsync(try await store.transition(retry))
        XCTAssertEqual(dispatching.reservedCost ?? 0, 1.2, accuracy: 1e-9)
        var spend = try await store.spend(keyID: key.id, at: now)
        XCTAssertEqual(spend.day, 1.2, accuracy: 1e-9)
        var end = Transition(id: job.id, from: .dispatching, version: dispatching.version, to: .completed)
        end.attemptUpdate = AttemptUpdate(
            generationID: job.id, number: 2, from: [.submitting], to: .succeeded, providerTaskID: "t2")
        _ = try await XCTUnwrapAsync(try await store.transition(end))
        spend = try await store.spend(keyID: key.id, at: now)
        XCTAssertEqual(spend.day, 1.2, accuracy: 1e-9)
    }
}

/// Unpriced models and budgets.
extension GenerationStoreContractTests {
    func testAKeyWithABudgetIsRefusedAnUnpricedModelAfterItsReplaysAreAnswered() async throws {
        let now = Date()
        var job = makeGeneration(n: 1, now: now)
        job.unpricedModel = "x/free"
        job.reservedCost = 0
        let idempotency = IdempotencyKey(key: "order-1", requestHash: "h1", window: 3_600)
        // No budget: accepted.
        let first = try await store.insert(
            job, event: Event(.generationCreated(.init(model: "x/free", provider: "x", n: 1)), generationID: job.id),
            idempotency: idempotency)
        XCTAssertEqual(first, .inserted)
        _ = try await store.updateAPIKey(id: owner.id, budgets: BudgetChange(monthly: .some(10)))
        // With a budget: its replay still finds the job; a new one is refused.
        var again = makeGeneration(n: 1, now: now)
        again.unpricedModel = "x/free"
        let replay = try await store.insert(
            again,
            event: Event(.generationCreated(.init(model: "x/free", provider: "x", n: 1)), generationID: again.id),
            idempotency: idempotency)
        XCTAssertEqual(replay, .replayed(generationID: job.id))
        do {
            _ = try await inserted(again)
            XCTFail("a budgeted key's job on an unpriced model was made")
        } catch let refusal as UnpricedModel {
            XCTAssertEqual(refusal.model, "x/free")
        }
        let nothing = try await store.generation(id: again.id)
        XCTAssertNil(nothing)
    }
}
