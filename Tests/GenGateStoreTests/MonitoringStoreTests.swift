import Foundation
import GenGateCore
import XCTest

@testable import GenGateStore

/// Alerts, the error log and the figures alert rules read, on the store contract.
extension GenerationStoreContractTests {
    func draft(_ fingerprint: String = "provider_failure_rate:sim", severity: AlertSeverity = .high) -> AlertDraft {
        AlertDraft(
            type: "provider_failure_rate", severity: severity, fingerprint: fingerprint,
            message: "sim failed 6 of 10 attempts", details: ["failed": .number(6), "ended": .number(10)])
    }

    func testAnIncidentIsRaisedOnceWhileItLastsAndAgainOnlyAfterItsCoolDown() async throws {
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let first = try await XCTUnwrapAsync(try await store.raiseAlert(draft(), coolDown: 600, now: start))
        XCTAssertEqual(first.state, .open)
        XCTAssertEqual(first.details["failed"], .number(6))
        // Seen again while open: the same incident, no new alert.
        let again = try await store.raiseAlert(draft(), coolDown: 600, now: start.addingTimeInterval(30))
        XCTAssertNil(again)
        // Another monitor's connection sees the same.
        let second = try await makeSecondConnection()
        let elsewhere = try await second.raiseAlert(draft(), coolDown: 600, now: start.addingTimeInterval(40))
        XCTAssertNil(elsewhere)
        var stored = try await XCTUnwrapAsync(try await store.alert(id: first.id))
        XCTAssertEqual(stored.occurrences, 3)
        XCTAssertEqual(stored.lastSeenAt.timeIntervalSince1970, start.timeIntervalSince1970 + 40, accuracy: 0.001)

        // Resolved, then back within the cool-down: reopened, not raised.
        let resolved = try await store.resolveAlerts(
            fingerprints: [first.fingerprint], at: start.addingTimeInterval(60))
        XCTAssertEqual(resolved, 1)
        stored = try await XCTUnwrapAsync(try await store.alert(id: first.id))
        XCTAssertEqual(stored.state, .resolved)
        let flap = try await store.raiseAlert(draft(), coolDown: 600, now: start.addingTimeInterval(120))
        XCTAssertNil(flap)
        stored = try await XCTUnwrapAsync(try await store.alert(id: first.id))
        XCTAssertEqual(stored.state, .open)

        // Resolved for longer than the cool-down: a new incident.
        _ = try await store.resolveAlerts(fingerprints: [first.fingerprint], at: start.addingTimeInterval(200))
        let later = try await XCTUnwrapAsync(
            try await store.raiseAlert(draft(), coolDown: 600, now: start.addingTimeInterval(900)))
        XCTAssertNotEqual(later.id, first.id)
        // Another fingerprint is another incident at once.
        let other = try await store.raiseAlert(
            draft("provider_failure_rate:kling"), coolDown: 600, now: start.addingTimeInterval(901))
        XCTAssertNotNil(other)
        let open = try await store.openAlertCounts()
        XCTAssertEqual(open, ["provider_failure_rate": 2])
    }

    func testTwoMonitorsRaisingOneIncidentAtOnceMakeOneAlert() async throws {
        let second = try await makeSecondConnection()
        let now = Date()
        let raised = try await withThrowingTaskGroup(of: Alert?.self) { group in
            for index in 0..<8 {
                let target: any GenerationStore = index.isMultiple(of: 2) ? store : second
                let draft = draft()
                group.addTask { try await target.raiseAlert(draft, coolDown: 600, now: now) }
            }
            return try await group.reduce(into: [Alert]()) { all, alert in if let alert { all.append(alert) } }
        }
        XCTAssertEqual(raised.count, 1)
        let listed = try await store.alerts(AlertFilter())
        XCTAssertEqual(listed.count, 1)
        XCTAssertEqual(listed.first?.occurrences, 8)
    }

    func testAcknowledgingKeepsTheFirstAcknowledgementAndListsFilter() async throws {
        let now = Date()
        let low = try await XCTUnwrapAsync(
            try await store.raiseAlert(draft("a", severity: .low), coolDown: 60, now: now))
        let critical = try await XCTUnwrapAsync(
            try await store.raiseAlert(draft("b", severity: .critical), coolDown: 60, now: now.addingTimeInterval(1)))
        let acknowledged = try await XCTUnwrapAsync(
            try await store.acknowledgeAlert(id: critical.id, by: "key_1", at: now.addingTimeInterval(5)))
        XCTAssertEqual(acknowledged.state, .acknowledged)
        XCTAssertEqual(acknowledged.acknowledgedBy, "key_1")
        let twice = try await XCTUnwrapAsync(
            try await store.acknowledgeAlert(id: critical.id, by: "key_2", at: now.addingTimeInterval(9)))
        XCTAssertEqual(twice.acknowledgedBy, "key_1")
        XCTAssertEqual(
            twice.acknowledgedAt?.timeIntervalSince1970 ?? 0, now.timeIntervalSince1970 + 5, accuracy: 0.001)
        let missing = try await store.acknowledgeAlert(id: "alt_missing", by: "key_1", at: now)
        XCTAssertNil(missing)

        var listed = try await store.alerts(AlertFilter(states: [.open]))
        XCTAssertEqual(listed.map(\.id), [low.id])
        listed = try await store.alerts(AlertFilter(minimumSeverity: .high))
        XCTAssertEqual(listed.map(\.id), [critical.id])
        listed = try await store.alerts(AlertFilter(states: [.open, .acknowledged]))
        XCTAssertEqual(listed.map(\.id), [critical.id, low.id])
        listed = try await store.alerts(AlertFilter(before: critical.id, limit: 5))
        XCTAssertEqual(listed.map(\.id), [low.id])
        listed = try await store.alerts(AlertFilter(type: "none"))
        XCTAssertEqual(listed, [])
        listed = try await store.alerts(AlertFilter(states: []))
        XCTAssertEqual(listed, [])

        try await store.recordAlertDelivery(id: low.id, channel: "slack", error: "HTTP 500", level: 1, at: now)
        try await store.recordAlertDelivery(
            id: low.id, channel: "slack", error: nil, level: 1, at: now.addingTimeInterval(2))
        try await store.recordAlertDelivery(id: low.id, channel: "email", error: "refused", level: 1, at: now)
        let delivered = try await XCTUnwrapAsync(try await store.alert(id: low.id))
        XCTAssertEqual(delivered.deliveries["slack"]?.attempts, 2)
        XCTAssertNotNil(delivered.deliveries["slack"]?.sentAt)
        XCTAssertNil(delivered.deliveries["slack"]?.lastError)
        XCTAssertEqual(delivered.deliveries["email"]?.lastError, "refused")
        XCTAssertNil(delivered.deliveries["email"]?.sentAt)
    }

    func testTheErrorLogListsNewestFirstWithFiltersAndExpires() async throws {
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        var entries: [ErrorEntry] = []
        for index in 0..<6 {
            entries.append(
                ErrorEntry(
                    level: index == 5 ? .critical : (index.isMultiple(of: 2) ? .warning : .error),
                    source: index < 3 ? "sim" : "kling", code: index == 4 ? "task_timeout" : "provider_error",
                    message: "failure \(index)", generationID: index == 1 ? "gen_1" : nil,
                    context: ["operation": .string("submit")], at: start.addingTimeInterval(Double(index))))
        }
        try await store.appendErrors(entries)
        try await store.appendErrors([entries[0]])  // a batch written twice keeps one of each

        var listed = try await store.errors(ErrorFilter(limit: 100))
        XCTAssertEqual(listed.map(\.message), (0..<6).reversed().map { "failure \($0)" })
        XCTAssertEqual(listed.last, entries[0])
        listed = try await store.errors(ErrorFilter(minimumLevel: .error))
        XCTAssertEqual(listed.map(\.message), ["failure 5", "failure 3", "failure 1"])
        listed = try await store.errors(ErrorFilter(source: "sim", limit: 2))
        XCTAssertEqual(listed.map(\.message), ["failure 2", "failure 1"])
        listed = try await store.errors(ErrorFilter(source: "sim", before: listed.last?.id))
        XCTAssertEqual(listed.map(\.message), ["failure 0"])
        listed = try await store.errors(ErrorFilter(code: "task_timeout"))
        XCTAssertEqual(listed.map(\.message), ["failure 4"])
        listed = try await store.errors(ErrorFilter(generationID: "gen_1"))
        XCTAssertEqual(listed.map(\.message), ["failure 1"])
        listed = try await store.errors(ErrorFilter(since: start.addingTimeInterval(4)))
        XCTAssertEqual(listed.map(\.message), ["failure 5", "failure 4"])

        // Resolved alerts and old entries go with the events they came with.
        let alert = try await XCTUnwrapAsync(try await store.raiseAlert(draft(), coolDown: 60, now: start))
        _ = try await store.resolveAlerts(fingerprints: [alert.fingerprint], at: start.addingTimeInterval(1))
        let open = try await XCTUnwrapAsync(try await store.raiseAlert(draft("b"), coolDown: 60, now: start))
        _ = try await store.expire(eventsBefore: start.addingTimeInterval(3), keysBefore: start, limit: 100)
        listed = try await store.errors(ErrorFilter(limit: 100))
        XCTAssertEqual(listed.map(\.message), ["failure 5", "failure 4", "failure 3"])
        let alerts = try await store.alerts(AlertFilter())
        XCTAssertEqual(alerts.map(\.id), [open.id])
    }

    func testOutcomesAndRetriedJobsComeFromTheAttemptsAndTheJobs() async throws {
        let now = Date()
        let quiet = try await inserted()
        let busy = try await inserted()
        func attempt(_ generation: Generation, _ number: Int, _ state: Attempt.State, _ code: ErrorCode?, ago: Double)
            -> Attempt
        {
            Attempt(
                generationID: generation.id, number: number, provider: "sim", clientReference: "ref-\(number)",
                providerTaskID: nil, outputIndexes: [0], state: state,
                error: code.map { GenGateError($0, "attempt \(number)") }, createdAt: now.addingTimeInterval(-ago),
                finishedAt: state == .submitted ? nil : now.addingTimeInterval(-ago + 1), model: "sim/image")
        }
        try await store.recordAttempt(attempt(quiet, 1, .succeeded, nil, ago: 30))
        try await store.recordAttempt(attempt(busy, 1, .failed, .taskTimeout, ago: 50))
        try await store.recordAttempt(attempt(busy, 2, .failed, .providerError, ago: 40))
        try await store.recordAttempt(attempt(busy, 3, .failed, .providerError, ago: 7200))  // outside the window
        try await store.recordAttempt(attempt(busy, 4, .submitted, nil, ago: 20))
        let abandoned = try await store.updateAttempt(
            AttemptUpdate(
                generationID: busy.id, number: 4, from: [.submitted], to: .abandoned, possibleDoubleCharge: true,
                at: now.addingTimeInterval(-19)))
        XCTAssertTrue(abandoned)
        var fallback = attempt(busy, 5, .submitted, nil, ago: 10)
        fallback.provider = "kling"
        fallback.model = "kling/v2"
        try await store.recordAttempt(fallback)

        let outcomes = try await store.attemptOutcomes(since: now.addingTimeInterval(-3600))
        XCTAssertEqual(
            outcomes,
            [
                OutcomeCounts(
                    provider: "sim", model: "sim/image", succeeded: 1, failed: 2,
                    failures: ["task_timeout": 1, "provider_error": 1], possibleDoubleCharges: 1)
            ])

        var retried = try await store.retriedJobs(moreThan: 3, since: now.addingTimeInterval(-3600), limit: 10)
        XCTAssertEqual(
            retried,
            [
                // The provider and model of its latest attempt (a fallback route's next one).
                RetriedJob(
                    generationID: busy.id, provider: "kling", model: "kling/v2", attempts: 5,
                    lastErrorCode: "provider_error")
            ])
        retried = try await store.retriedJobs(moreThan: 5, since: now.addingTimeInterval(-3600), limit: 10)
        XCTAssertEqual(retried, [])

        // Jobs that ended, by how: completed, failed past the deadline; a cancelled one is neither.
        for (generation, status, code) in [
            (quiet, GenerationStatus.completed, ErrorCode?.none), (busy, .failed, .taskTimeout),
            (try await inserted(), .cancelled, .cancelled), (try await inserted(), .failed, .providerError),
        ] {
            var change = Transition.of(generation, to: status, at: now)
            if let code { change.error = .some(GenGateError(code, "ended")) }
            _ = try await XCTUnwrapAsync(try await store.transition(change))
        }
        let jobs = try await store.jobOutcomes(since: now.addingTimeInterval(-60))
        XCTAssertEqual(
            jobs,
            [
                OutcomeCounts(
                    provider: "sim", model: "sim/image", succeeded: 1, failed: 2,
                    failures: ["task_timeout": 1, "provider_error": 1])
            ])
        let later = try await store.jobOutcomes(since: now.addingTimeInterval(1))
        XCTAssertEqual(later, [])
    }

    func testAGrowingIncidentIsSentAgainAndAnAlertSentWithoutTheStoreKeepsItsID() async throws {
        let now = Date()
        var grown = draft("possible_double_charge:sim")
        grown.level = 1
        let first = try await XCTUnwrapAsync(try await store.raiseAlert(grown, coolDown: 600, now: now))
        XCTAssertEqual(first.level, 1)
        let same = try await store.raiseAlert(grown, coolDown: 600, now: now.addingTimeInterval(1))
        XCTAssertNil(same)
        grown.level = 3
        let more = try await XCTUnwrapAsync(
            try await store.raiseAlert(grown, coolDown: 600, now: now.addingTimeInterval(2)))
        XCTAssertEqual(more.id, first.id)
        XCTAssertEqual(more.level, 3)
        grown.level = 2
        let fewer = try await store.raiseAlert(grown, coolDown: 600, now: now.addingTimeInterval(3))
        XCTAssertNil(fewer, "a level that falls (charges leaving the window) is not news")

        let given = "alt_" + String(repeating: "0", count: 26)
        let outage = try await XCTUnwrapAsync(
            try await store.raiseAlert(draft("store_unreachable"), coolDown: 600, now: now, id: given))
        XCTAssertEqual(outage.id, given)
        let stored = try await store.alert(id: given)
        XCTAssertEqual(stored?.fingerprint, "store_unreachable")
    }

    func testADeliveryIsClaimedByOneMonitorAtATimeAndNotAfterItWasSent() async throws {
        let now = Date()
        var grown = draft()
        grown.level = 1
        let alert = try await XCTUnwrapAsync(try await store.raiseAlert(grown, coolDown: 600, now: now))
        let second = try await makeSecondConnection()
        func claim(_ owner: String, _ via: any GenerationStore, at offset: Double) async throws -> Bool {
            try await via.claimAlertDelivery(
                id: alert.id, channel: "slack", owner: owner, until: now.addingTimeInterval(offset + 60),
                now: now.addingTimeInterval(offset)) != nil
        }
        var claimed = try await claim("a", store, at: 0)
        XCTAssertTrue(claimed)
        claimed = try await claim("b", second, at: 1)
        XCTAssertFalse(claimed, "a's claim holds")
        claimed = try await claim("a", store, at: 2)
        XCTAssertTrue(claimed, "renewed by its holder")
        try await store.recordAlertDelivery(id: alert.id, channel: "slack", error: "HTTP 500", level: 1, at: now)
        claimed = try await claim("b", second, at: 90)
        XCTAssertTrue(claimed, "a's claim ran out")
        try await second.recordAlertDelivery(
            id: alert.id, channel: "slack", error: nil, level: 1, at: now.addingTimeInterval(91))
        claimed = try await claim("a", store, at: 200)
        XCTAssertFalse(claimed, "sent")
        claimed = try await claim("a", store, at: 200)
        XCTAssertFalse(claimed)
        let missing = try await store.claimAlertDelivery(
            id: "alt_missing", channel: "slack", owner: "a", until: now, now: now)
        XCTAssertNil(missing)

        // Grown: due again, and the claim hands over the alert as it is now.
        grown.level = 2
        grown.message = "grown"
        _ = try await store.raiseAlert(grown, coolDown: 600, now: now.addingTimeInterval(300))
        let current = try await store.claimAlertDelivery(
            id: alert.id, channel: "slack", owner: "a", until: now.addingTimeInterval(360),
            now: now.addingTimeInterval(300))
        XCTAssertEqual(current?.message, "grown")
        XCTAssertEqual(current?.level, 2)
        let record = try await XCTUnwrapAsync(try await store.alert(id: alert.id)).deliveries["slack"]
        XCTAssertEqual(record?.attempts, 2)
        XCTAssertEqual(record?.sentLevel, 1)
        XCTAssertEqual(record?.claimedBy, "a")
    }
}
