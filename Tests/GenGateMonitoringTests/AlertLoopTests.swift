import Foundation
import GenGateCore
import GenGateStore
import Logging
import XCTest

@testable import GenGateMonitoring

/// The alert loop against a real (SQLite) store: monitors that share it send an incident once,
/// a store outage is alerted without the store and put on record after, and an alert whose raise
/// was not heard of is sent by the next evaluation.
final class AlertLoopTests: XCTestCase {
    var directory: URL!
    var sqlite: SQLiteStore!
    var owner: String!

    override func setUp() async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("gg-alerts-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        sqlite = try SQLiteStore(path: directory.appendingPathComponent("store.sqlite").path, migrate: true)
        owner = try await sqlite.createAPIKey(name: "test", isAdmin: false).key.id
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: directory)
    }

    /// The store, or "unavailable" while `down`.
    final class Flaky: MonitoringStore {
        let base: any MonitoringStore
        let down = Locked(false)
        /// Reads answer, writes fail (a full disk).
        let writesDown = Locked(false)

        init(_ base: any MonitoringStore) { self.base = base }

        func check() throws { if down.withLock({ $0 }) { throw StoreError.unavailable("connection refused") } }
        func checkWrite() throws {
            try check()
            if writesDown.withLock({ $0 }) { throw StoreError.unavailable("database or disk is full") }
        }

        func raiseAlert(_ draft: AlertDraft, coolDown: TimeInterval, now: Date, id: String?) async throws -> Alert? {
            try checkWrite()
            return try await base.raiseAlert(draft, coolDown: coolDown, now: now, id: id)
        }
        func resolveAlerts(fingerprints: [String], at: Date) async throws -> Int {
            try checkWrite()
            return try await base.resolveAlerts(fingerprints: fingerprints, at: at)
        }
        func acknowledgeAlert(id: String, by keyID: String, at: Date) async throws -> Alert? {
            try checkWrite()
            return try await base.acknowledgeAlert(id: id, by: keyID, at: at)
        }
        func recordAlertDelivery(id: String, channel: String, error: String?, level: Int, at: Date) async throws {
            try checkWrite()
            try await base.recordAlertDelivery(id: id, channel: channel, error: error, level: level, at: at)
        }
        func claimAlertDelivery(id: String, channel: String, owner: String, until: Date, now: Date) async throws
            -> Alert?
        {
            try checkWrite()
            return try await base.claimAlertDelivery(id: id, channel: channel, owner: owner, until: until, now: now)
        }
        func alert(id: String) async throws -> Alert? {
            try check()
            return try await base.alert(id: id)
        }
        func alerts(_ filter: AlertFilter) async throws -> [Alert] {
            try check()
            return try await base.alerts(filter)
        }
        func openAlertCounts() async throws -> [String: Int] {
            try check()
            return try await base.openAlertCounts()
        }
        func appendErrors(_ entries: [ErrorEntry]) async throws {
            try checkWrite()
            try await base.appendErrors(entries)
        }
        func errors(_ filter: ErrorFilter) async throws -> [ErrorEntry] {
            try check()
            return try await base.errors(filter)
        }
        func attemptOutcomes(since: Date) async throws -> [OutcomeCounts] {
            try check()
            return try await base.attemptOutcomes(since: since)
        }
        func jobOutcomes(since: Date) async throws -> [OutcomeCounts] {
            try check()
            return try await base.jobOutcomes(since: since)
        }
        func retriedJobs(moreThan attempts: Int, since: Date, limit: Int) async throws -> [RetriedJob] {
            try check()
            return try await base.retriedJobs(moreThan: attempts, since: since, limit: limit)
        }
        func possibleDoubleCharges() async throws -> [String: Int] {
            try check()
            return try await base.possibleDoubleCharges()
        }
    }

    /// A channel that counts what it was sent.
    final class Inbox: AlertChannel {
        let name = "webhook"
        let received = Locked<[Alert]>([])
        func send(_ alert: Alert) async throws { received.withLock { $0.append(alert) } }
        var ids: [String] { received.withLock { $0.map(\.id) } }
    }

    func monitor(_ store: any MonitoringStore, inbox: Inbox, name: String) -> (AlertLoop, AlertNotifier) {
        let notifier = AlertNotifier(
            channels: [inbox],
            ledger: .init(
                claim: { id, channel, until in
                    try await store.claimAlertDelivery(id: id, channel: channel, owner: name, until: until, now: Date())
                },
                record: { id, channel, error, level in
                    try await store.recordAlertDelivery(
                        id: id, channel: channel, error: error, level: level, at: Date())
                }), firstDelay: .milliseconds(10), logger: Logger(label: name))
        var settings = AlertRuleSettings()
        settings.failureRate = .init(threshold: 0.5, window: 3_600, minimumAttempts: 4, shortWindow: 300)
        let loop = AlertLoop(
            store: store, rules: AlertRules(settings: settings), notifier: notifier, coolDown: 600, staleAfter: 10,
            readTimeout: .seconds(5), logger: Logger(label: name),
            heartbeatAges: { [("monitor", 1), ("poller", 1)] }, log: { _ in })
        return (loop, notifier)
    }

    /// A job with `failed` failed attempts at sim, ended `ago` seconds before `now`.
    func failedAttempts(_ failed: Int, now: Date, ago: Double = 30) async throws {
        let id = Identifier.make("gen", at: now)
        let generation = Generation(
            id: id, ownerKeyID: owner, request: GenerationRequest(model: "sim/image", prompt: "x"),
            provider: "sim", status: .pending, version: 1, progress: 0, attempts: 0, error: nil, providerTaskID: nil,
            leaseOwner: nil, leaseExpiresAt: nil, nextActionAt: now, deadlineAt: now.addingTimeInterval(600),
            createdAt: now, updatedAt: now, phaseTimes: [.pending: now], outputs: [])
        try await sqlite.insert(
            generation,
            event: Event(.generationCreated(.init(model: "sim/image", provider: "sim", n: 1)), generationID: id))
        for number in 1...failed {
            try await sqlite.recordAttempt(
                Attempt(
                    generationID: id, number: number, provider: "sim", clientReference: "r\(number)",
                    providerTaskID: nil, outputIndexes: [0], state: .failed,
                    error: GenGateError(.providerError, "down"), createdAt: now.addingTimeInterval(-ago - 1),
                    finishedAt: now.addingTimeInterval(-ago), model: "sim/image"))
        }
    }

    func waitFor(_ inbox: Inbox, count: Int) async throws {
        let deadline = Date().addingTimeInterval(5)
        while inbox.ids.count < count && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
    }

    func testMonitorsSharingAStoreSendAnIncidentOnceAndResolveItWhenItEnds() async throws {
        let now = Date()
        try await failedAttempts(2, now: now)
        try await failedAttempts(3, now: now)
        let inbox = Inbox()
        let monitors = [monitor(sqlite, inbox: inbox, name: "a"), monitor(sqlite, inbox: inbox, name: "b")]
        let running = monitors.map { _, notifier in Task { await notifier.run() } }
        for round in 0..<3 {
            await withTaskGroup(of: Void.self) { group in
                for (loop, _) in monitors {
                    group.addTask { await loop.evaluate(now: now.addingTimeInterval(Double(round))) }
                }
            }
        }
        try await waitFor(inbox, count: 1)
        try await Task.sleep(for: .milliseconds(200))
        XCTAssertEqual(inbox.received.withLock { $0.map(\.fingerprint) }, ["provider_failure_rate:sim"])
        // The delivery is recorded just after the send: looked for until it is.
        var stored = try await sqlite.alerts(AlertFilter())
        let recorded = Date().addingTimeInterval(5)
        while stored.first?.deliveries["webhook"]?.sentAt == nil && Date() < recorded {
            try await Task.sleep(for: .milliseconds(20))
            stored = try await sqlite.alerts(AlertFilter())
        }
        XCTAssertEqual(stored.count, 1)
        XCTAssertEqual(stored.first?.occurrences, 6)
        XCTAssertNotNil(stored.first?.deliveries["webhook"]?.sentAt)

        // Two hours on, the attempts are out of every window: resolved, and nothing is sent.
        await monitors[0].0.evaluate(now: now.addingTimeInterval(7_200))
        let resolved = try await sqlite.alerts(AlertFilter(states: [.resolved]))
        XCTAssertEqual(resolved.map(\.id), stored.map(\.id))
        for (_, notifier) in monitors { notifier.finish() }
        for task in running { await task.value }
        XCTAssertEqual(inbox.ids.count, 1)
    }

    func testAStoreOutageIsAlertedOnceWithoutTheStoreAndPutOnRecordUnderTheSameID() async throws {
        let flaky = Flaky(sqlite)
        let inbox = Inbox()
        let (loop, notifier) = monitor(flaky, inbox: inbox, name: "a")
        let running = Task { await notifier.run() }
        let now = Date()
        flaky.down.withLock { $0 = true }
        await loop.evaluate(now: now)
        try await Task.sleep(for: .milliseconds(100))
        XCTAssertEqual(inbox.ids, [], "one failed evaluation is not an incident yet")
        for second in 1...3 { await loop.evaluate(now: now.addingTimeInterval(Double(second))) }
        try await waitFor(inbox, count: 1)
        let sent = try XCTUnwrap(inbox.received.withLock { $0.first })
        XCTAssertEqual(sent.type, "store_unreachable")
        XCTAssertTrue(sent.message.contains("connection refused"), sent.message)

        flaky.down.withLock { $0 = false }
        await loop.evaluate(now: now.addingTimeInterval(10))
        let recorded = try await XCTUnwrapAsync(try await sqlite.alert(id: sent.id))
        XCTAssertEqual(recorded.state, .resolved)
        XCTAssertTrue(recorded.message.contains("(from "), recorded.message)

        // Down again soon after: within the cool-down of the first, no second alert; up:
        // nothing re-sent.
        flaky.down.withLock { $0 = true }
        for second in 20...23 { await loop.evaluate(now: now.addingTimeInterval(Double(second))) }
        flaky.down.withLock { $0 = false }
        await loop.evaluate(now: now.addingTimeInterval(30))
        await loop.evaluate(now: now.addingTimeInterval(31))
        try await Task.sleep(for: .milliseconds(200))
        notifier.finish()
        await running.value
        XCTAssertEqual(inbox.ids, [sent.id])
    }

    func testALongOutageSoonAfterAnotherIsSentOnceTheCoolDownHasPassed() async throws {
        let flaky = Flaky(sqlite)
        let inbox = Inbox()
        let (loop, notifier) = monitor(flaky, inbox: inbox, name: "a")
        let running = Task { await notifier.run() }
        let now = Date()
        flaky.down.withLock { $0 = true }
        for second in 0...2 { await loop.evaluate(now: now.addingTimeInterval(Double(second))) }
        flaky.down.withLock { $0 = false }
        await loop.evaluate(now: now.addingTimeInterval(5))
        try await waitFor(inbox, count: 1)
        // Down again a minute later, and for long: quiet within the cool-down (600 s), then sent.
        flaky.down.withLock { $0 = true }
        for second in stride(from: 60, through: 600, by: 60) {
            await loop.evaluate(now: now.addingTimeInterval(Double(second)))
        }
        try await Task.sleep(for: .milliseconds(100))
        XCTAssertEqual(inbox.ids.count, 1)
        await loop.evaluate(now: now.addingTimeInterval(610))
        try await waitFor(inbox, count: 2)
        notifier.finish()
        await running.value
        XCTAssertEqual(inbox.received.withLock { $0.map(\.type) }, ["store_unreachable", "store_unreachable"])
    }

    func testAStoreThatTakesNoWritesIsAnOutageToo() async throws {
        let now = Date()
        try await failedAttempts(4, now: now)
        let flaky = Flaky(sqlite)
        flaky.writesDown.withLock { $0 = true }
        let inbox = Inbox()
        let (loop, notifier) = monitor(flaky, inbox: inbox, name: "a")
        let running = Task { await notifier.run() }
        for second in 0...2 { await loop.evaluate(now: now.addingTimeInterval(Double(second))) }
        try await waitFor(inbox, count: 1)
        let sent = try XCTUnwrap(inbox.received.withLock { $0.first })
        XCTAssertEqual(sent.type, "store_unreachable")
        XCTAssertTrue(sent.message.contains("disk is full"), sent.message)
        // Writes work again: the failure rate's alert is raised and sent, the outage recorded.
        flaky.writesDown.withLock { $0 = false }
        await loop.evaluate(now: now.addingTimeInterval(3))
        await loop.evaluate(now: now.addingTimeInterval(4))
        try await waitFor(inbox, count: 2)
        notifier.finish()
        await running.value
        XCTAssertEqual(inbox.received.withLock { $0.map(\.type) }, ["store_unreachable", "provider_failure_rate"])
        let recorded = try await sqlite.alert(id: sent.id)
        XCTAssertEqual(recorded?.state, .resolved)
    }

    func testWhileWritesFailASentAlertIsNotSentAgain() async throws {
        let now = Date()
        try await failedAttempts(4, now: now)
        let flaky = Flaky(sqlite)
        let inbox = Inbox()
        let (loop, notifier) = monitor(flaky, inbox: inbox, name: "a")
        // Raised while writes worked; then the store stops taking writes before the notifier
        // runs: its claim and its record of the delivery both fail.
        await loop.evaluate(now: now)
        flaky.writesDown.withLock { $0 = true }
        let running = Task { await notifier.run() }
        try await waitFor(inbox, count: 1)
        // Evaluation after evaluation (the store still says it was never sent): only the outage
        // is sent, once.
        for second in 1...6 { await loop.evaluate(now: now.addingTimeInterval(Double(second))) }
        try await Task.sleep(for: .milliseconds(300))
        notifier.finish()
        await running.value
        XCTAssertEqual(inbox.received.withLock { $0.map(\.type) }, ["provider_failure_rate", "store_unreachable"])
    }

    func testATurnedOffOutageRuleSendsNothing() async throws {
        let flaky = Flaky(sqlite)
        let inbox = Inbox()
        let notifier = AlertNotifier(
            channels: [inbox], ledger: .init(claim: { _, _, _ in nil }, record: { _, _, _, _ in }),
            logger: Logger(label: "a"))
        var settings = AlertRuleSettings()
        settings.disabled = [.storeUnreachable]
        let loop = AlertLoop(
            store: flaky, rules: AlertRules(settings: settings), notifier: notifier, coolDown: 600, staleAfter: 10,
            logger: Logger(label: "a"), heartbeatAges: { [] }, log: { _ in })
        let running = Task { await notifier.run() }
        flaky.down.withLock { $0 = true }
        for second in 0...3 { await loop.evaluate(now: Date().addingTimeInterval(Double(second))) }
        flaky.down.withLock { $0 = false }
        flaky.writesDown.withLock { $0 = true }
        for second in 4...7 { await loop.evaluate(now: Date().addingTimeInterval(Double(second))) }
        try await Task.sleep(for: .milliseconds(200))
        notifier.finish()
        await running.value
        XCTAssertEqual(inbox.ids, [])
    }

    func testAnAlertWhoseRaiseWentUnheardIsSentByTheNextEvaluation() async throws {
        let now = Date()
        try await failedAttempts(4, now: now)
        // Committed, but its raiser never heard (a commit whose answer was lost).
        let unheard = try await XCTUnwrapAsync(
            try await sqlite.raiseAlert(
                AlertDraft(
                    type: "provider_failure_rate", severity: .high, fingerprint: "provider_failure_rate:sim",
                    message: "sim", details: [:]), coolDown: 600, now: now))
        let inbox = Inbox()
        let (loop, notifier) = monitor(sqlite, inbox: inbox, name: "a")
        let running = Task { await notifier.run() }
        await loop.evaluate(now: now.addingTimeInterval(1))
        try await waitFor(inbox, count: 1)
        await loop.evaluate(now: now.addingTimeInterval(2))
        try await Task.sleep(for: .milliseconds(200))
        notifier.finish()
        await running.value
        XCTAssertEqual(inbox.ids, [unheard.id])
    }
}

func XCTUnwrapAsync<T>(
    _ expression: @autoclosure () async throws -> T?, file: StaticString = #filePath, line: UInt = #line
)
    async throws -> T
{
    let value = try await expression()
    return try XCTUnwrap(value, file: file, line: line)
}
