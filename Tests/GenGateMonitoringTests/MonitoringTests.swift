import Foundation
import GenGateCore
import GenGateStore
import Logging
import XCTest

@testable import GenGateMonitoring

final class EventWindowTests: XCTestCase {
    let start = Date(timeIntervalSince1970: 1_800_000_000)

    func call(_ provider: String, ok: Bool, code: String? = nil, latency: Int = 100) -> Event {
        Event(
            .providerCall(
                .init(
                    provider: provider, model: "\(provider)/image", operation: "submit", latencyMs: latency,
                    outcome: ok ? "ok" : "error", errorCode: ok ? nil : (code ?? "provider_error"))))
    }

    func testWindowsCountCallsFailuresTimeoutsAndRetriesPerProviderAndSlideOut() {
        var windows = ProviderWindows()
        for index in 0..<10 {
            windows.record(call("sim", ok: index < 6, latency: 100 * (index + 1)), now: start)
        }
        windows.record(call("sim", ok: false, code: "provider_timeout"), now: start)
        windows.record(
            Event(
                .generationRetrying(
                    .init(
                        attempt: 1, retryAt: start, error: GenGateError(.providerError, "x"), provider: "sim",
                        model: "sim/image"))), now: start)
        windows.record(
            Event(
                .generationCompleted(
                    .init(outputs: 1, attempts: 1, provider: "sim", model: "sim/image", durationMs: 4_000))),
            now: start.addingTimeInterval(30))
        windows.record(
            Event(
                .generationFailed(
                    .init(error: GenGateError(.taskTimeout, "late"), attempts: 2, provider: "sim", model: "sim/image"))),
            now: start.addingTimeInterval(30))
        windows.record(call("kling", ok: true), now: start.addingTimeInterval(61))

        let figures = windows.figures(now: start.addingTimeInterval(61))
        XCTAssertEqual(figures.map(\.provider), ["kling", "sim"])
        let sim = figures[1].figures
        XCTAssertEqual(sim.calls, 11)
        XCTAssertEqual(sim.callErrors, 5)
        XCTAssertEqual(sim.errors, ["provider_error": 4, "provider_timeout": 1, "task_timeout": 1])
        XCTAssertEqual(sim.timeouts, 2)
        XCTAssertEqual(sim.retries, 1)
        XCTAssertEqual(sim.completed, 1)
        XCTAssertEqual(sim.failed, 1)
        XCTAssertEqual(sim.jobFailureRate, 0.5)
        XCTAssertEqual(sim.callFailureRate ?? 0, 5.0 / 11, accuracy: 1e-9)
        // Latencies 100…1000 ms and one of 100: the median between 200 and 500.
        let median = try! XCTUnwrap(sim.latency.percentile(0.5))
        XCTAssertTrue((200...500).contains(median), "\(median)")
        XCTAssertEqual(sim.latency.percentile(1.0), 1_000)

        // A window is whole minutes, the one it starts in included: 60 s back from 61 s after
        // the start reaches into the start's minute.
        let lastMinute = windows.figures(now: start.addingTimeInterval(61), window: 60)
        XCTAssertEqual(lastMinute.map(\.provider), ["kling", "sim"])
        let thisMinute = windows.figures(now: start.addingTimeInterval(100), window: 30)
        XCTAssertEqual(thisMinute.map(\.provider), ["kling"])
        // An hour later everything has slid out.
        windows.record(call("kling", ok: true), now: start.addingTimeInterval(3_800))
        let later = windows.figures(now: start.addingTimeInterval(3_800))
        XCTAssertEqual(later.map(\.provider), ["kling"])
        XCTAssertEqual(later.first?.figures.calls, 1)

        let timeline = windows.timeline(provider: "kling", now: start.addingTimeInterval(3_800))
        XCTAssertEqual(timeline.count, 60)
        XCTAssertEqual(timeline.last?.calls, 1)
        XCTAssertEqual(timeline.dropLast().map(\.calls).reduce(0, +), 0)
    }

    func testPercentilesOfAnEmptyAndOfAHugeHistogram() {
        var histogram = LatencyHistogram()
        XCTAssertNil(histogram.percentile(0.5))
        histogram.record(milliseconds: 10_000_000)
        histogram.record(milliseconds: -5)
        XCTAssertEqual(histogram.percentile(1), 10_000_000)
        // The lower value is in the first bucket (up to 1 ms): placed within it.
        XCTAssertLessThanOrEqual(histogram.percentile(0.5) ?? 99, 1)
    }

    func testGapsAreCountedPerServiceOnceAPublisherIsKnown() {
        var gaps = EventGaps()
        XCTAssertEqual(gaps.saw(source: "poller-1@a", service: "poller", seq: 40, now: start), 0)
        XCTAssertEqual(gaps.saw(source: "poller-1@a", service: "poller", seq: 41, now: start), 0)
        XCTAssertEqual(gaps.saw(source: "poller-1@a", service: "poller", seq: 45, now: start), 3)
        // A lower number is a new process under the same name, counting again: no gap, and
        // its own losses count from there.
        XCTAssertEqual(gaps.saw(source: "poller-1@a", service: "poller", seq: 1, now: start), 0)
        XCTAssertEqual(gaps.saw(source: "poller-1@a", service: "poller", seq: 2, now: start), 0)
        XCTAssertEqual(gaps.saw(source: "poller-1@a", service: "poller", seq: UInt64.max, now: start), 1 << 40)
        XCTAssertEqual(gaps.saw(source: "poller-1@a", service: "poller", seq: 1, now: start), 0)
        XCTAssertEqual(gaps.saw(source: "poller-2@b", service: "poller", seq: 1, now: start), 0)
        XCTAssertEqual(gaps.saw(source: "poller-2@b", service: "poller", seq: 3, now: start), 1)
        XCTAssertEqual(gaps.saw(source: "old", service: "old", seq: nil, now: start), 0)
        XCTAssertEqual(gaps.missed(now: start.addingTimeInterval(1)).count, 1)
        XCTAssertEqual(gaps.missed(now: start.addingTimeInterval(3_700)), [:])
    }
}

final class AlertRuleTests: XCTestCase {
    func outcomes(_ provider: String, model: String? = nil, succeeded: Int, failed: [String: Int], charged: Int = 0)
        -> OutcomeCounts
    {
        OutcomeCounts(
            provider: provider, model: model ?? "\(provider)/image", succeeded: succeeded,
            failed: failed.values.reduce(0, +), failures: failed, possibleDoubleCharges: charged)
    }

    func inputs(
        _ attempts: [OutcomeCounts], recent: [OutcomeCounts]? = nil, jobs: [OutcomeCounts] = [],
        totals: [String: Int] = [:], retried: [RetriedJob] = [], services: [(String, Double?)]? = nil,
        storeError: String? = nil
    ) -> AlertInputs {
        AlertInputs(
            attempts: [3_600: attempts, 300: recent ?? attempts], jobs: [3_600: jobs], doubleChargeTotals: totals,
            retried: retried, services: services?.map { (service: $0.0, heartbeatAge: $0.1) }, staleAfter: 10,
            storeError: storeError)
    }

    func testTheSeedsRulesFireOverTheirThresholdsOnly() {
        let rules = AlertRules(settings: AlertRuleSettings())
        let verdict = rules.evaluate(
            inputs(
                [
                    // 6 of 10 failed: over 50%.
                    outcomes("kling", succeeded: 4, failed: ["provider_timeout": 3, "provider_error": 3]),
                    // 5 of 10 failed: not over 50%.
                    outcomes("flux", succeeded: 5, failed: ["provider_error": 5]),
                    // All failed, but too few to judge.
                    outcomes("pollo", succeeded: 0, failed: ["provider_error": 9]),
                    // 8 of 10 failed, all for what the requests asked: not the provider's fault.
                    outcomes("openai", succeeded: 2, failed: ["content_policy": 6, "invalid_request": 2]),
                    outcomes("sim", succeeded: 30, failed: [:], charged: 2),
                ],
                jobs: [
                    // 3 of 10 jobs ran past their deadline: over 20%; 2 of 10: not.
                    outcomes("kling", succeeded: 7, failed: ["task_timeout": 3]),
                    outcomes("flux", succeeded: 8, failed: ["task_timeout": 2]),
                ],
                totals: ["sim": 5],
                retried: [
                    RetriedJob(
                        generationID: "gen_1", provider: "sim", model: "sim/image", attempts: 5,
                        lastErrorCode: "provider_error")
                ],
                services: [("poller", 3), ("uploader", 11), ("dispatcher", nil), ("monitor", 1)]))
        XCTAssertEqual(
            verdict.raised.map(\.fingerprint).sorted(),
            [
                "job_retries:sim", "possible_double_charge:sim", "provider_failure_rate:kling",
                "service_down:dispatcher",
                "service_down:uploader", "task_timeout_rate:kling",
            ])
        XCTAssertEqual(verdict.checked, Set(AlertRule.allCases))
        let failure = verdict.raised.first { $0.fingerprint == "provider_failure_rate:kling" }!
        XCTAssertEqual(failure.severity, .high)
        XCTAssertEqual(failure.details["rate"], .number(0.6))
        XCTAssertEqual(failure.message, "kling: 6 of 10 attempts failed in the last 60 min (60%, over 50%)")
        let timeouts = verdict.raised.first { $0.fingerprint == "task_timeout_rate:kling" }!
        XCTAssertEqual(
            timeouts.message, "kling: 3 of 10 jobs ran past their deadline in the last 60 min (30%, over 20%)")
        let down = verdict.raised.first { $0.fingerprint == "service_down:uploader" }!
        XCTAssertEqual(down.severity, .critical)
        let charged = verdict.raised.first { $0.type == "possible_double_charge" }!
        XCTAssertEqual(charged.level, 5, "sent again whenever the provider's count grows")
    }

    func testAProviderThatStopsWorkingIsSeenInTheShortWindowAndAModelThatFailsAloneToo() {
        let rules = AlertRules(settings: AlertRuleSettings())
        // An hour of success, then five minutes of nothing but failures.
        let hour = [outcomes("kling", succeeded: 200, failed: ["provider_unavailable": 12])]
        let recent = [outcomes("kling", succeeded: 0, failed: ["provider_unavailable": 12])]
        var verdict = rules.evaluate(inputs(hour, recent: recent))
        XCTAssertEqual(verdict.raised.map(\.fingerprint), ["provider_failure_rate:kling"])
        XCTAssertTrue(verdict.raised[0].message.contains("in the last 5 min (100%"), verdict.raised[0].message)

        // One model of several failing: its own incident; the provider as a whole is fine.
        let models = [
            outcomes("flux", model: "flux/pro", succeeded: 100, failed: [:]),
            outcomes("flux", model: "flux/kontext", succeeded: 1, failed: ["provider_error": 11]),
        ]
        verdict = rules.evaluate(inputs(models))
        XCTAssertEqual(verdict.raised.map(\.fingerprint), ["provider_failure_rate:flux/flux/kontext"])
    }

    func testRulesWithoutTheirFiguresAreNeitherRaisedNorResolvedAndDisabledOnesNever() {
        var settings = AlertRuleSettings()
        settings.disabled = [.jobRetries]
        let rules = AlertRules(settings: settings)
        let verdict = rules.evaluate(
            AlertInputs(
                attempts: nil,
                retried: [RetriedJob(generationID: "g", provider: "sim", model: "m", attempts: 9, lastErrorCode: nil)],
                services: nil, staleAfter: 10, storeError: "connection refused"))
        XCTAssertEqual(verdict.raised.map(\.fingerprint), ["store_unreachable"])
        XCTAssertEqual(verdict.checked, [.storeUnreachable])
    }

    func testWhenNoHeartbeatArrivesAtAllTheBusIsOneIncident() {
        let verdict = AlertRules(settings: AlertRuleSettings()).evaluate(
            inputs([], services: [("poller", 30), ("uploader", 30), ("monitor", 30), ("dispatcher", nil)]))
        XCTAssertEqual(verdict.raised.map(\.fingerprint), ["service_down:bus"])
        XCTAssertTrue(verdict.checked.contains(.serviceDown))
        // Others heard, the monitor's own heartbeat not: each silent service on its own.
        let some = AlertRules(settings: AlertRuleSettings()).evaluate(
            inputs([], services: [("poller", 30), ("monitor", 30), ("dispatcher", 2)]))
        XCTAssertEqual(some.raised.map(\.fingerprint), ["service_down:poller", "service_down:monitor"])
    }

    func testManyRetriedJobsOfOneProviderAreOneAlert() {
        let jobs = (0..<25).map {
            RetriedJob(generationID: "gen_\($0)", provider: "kling", model: "kling/v2", attempts: 5, lastErrorCode: nil)
        }
        let verdict = AlertRules(settings: AlertRuleSettings()).evaluate(inputs([], retried: jobs))
        XCTAssertEqual(verdict.raised.count, 1)
        XCTAssertTrue(verdict.raised[0].message.hasPrefix("kling: 25 jobs were retried more than 3 times: gen_0"))
        XCTAssertTrue(verdict.raised[0].message.hasSuffix(", …"))
    }
}

final class AlertNotifierTests: XCTestCase {
    final class FlakyChannel: AlertChannel, @unchecked Sendable {
        let name: String
        let lock = NSLock()
        var failures: Int
        private var sentIDs: [String] = []
        private var triesCount = 0

        init(name: String, failures: Int) {
            self.name = name
            self.failures = failures
        }

        private var sentMessages: [String] = []
        var sent: [String] { lock.withLock { sentIDs } }
        var messages: [String] { lock.withLock { sentMessages } }
        var tries: Int { lock.withLock { triesCount } }

        func send(_ alert: Alert) async throws {
            try lock.withLock {
                triesCount += 1
                if failures > 0 {
                    failures -= 1
                    throw AlertDeliveryError(description: "HTTP 503")
                }
                sentIDs.append(alert.id)
                sentMessages.append(alert.message)
            }
        }
    }

    /// A store's alerts in memory, with their delivery records and claims.
    final class Ledger: Sendable {
        let alerts = Locked<[String: Alert]>([:])
        let log = Locked<[String]>([])

        func add(_ alert: Alert) { alerts.withLock { $0[alert.id] = alert } }

        func make(owner: String) -> AlertNotifier.Ledger {
            AlertNotifier.Ledger(
                claim: { id, channel, until in
                    self.alerts.withLock { alerts -> Alert? in
                        guard var alert = alerts[id],
                            let claimed = AlertDeliveryRecord.claim(
                                alert.deliveries[channel], owner: owner, until: until, now: Date(), level: alert.level)
                        else { return nil }
                        alert.deliveries[channel] = claimed
                        alerts[id] = alert
                        return alert
                    }
                },
                record: { id, channel, error, level in
                    self.alerts.withLock { alerts in
                        let record = AlertDeliveryRecord.after(
                            alerts[id]?.deliveries[channel], error: error, at: Date(), level: level)
                        alerts[id]?.deliveries[channel] = record
                    }
                    self.log.withLock { $0.append("\(id) \(channel) \(error ?? "sent") \(level)") }
                })
        }
    }

    func alert(_ id: String) -> Alert {
        Alert(
            id: id, type: "service_down", severity: .critical, fingerprint: "service_down:poller", message: "down",
            details: [:], createdAt: Date(), lastSeenAt: Date(), occurrences: 1, resolvedAt: nil, acknowledgedAt: nil,
            acknowledgedBy: nil, deliveries: [:])
    }

    func waitUntil(_ done: () -> Bool) async throws {
        let deadline = Date().addingTimeInterval(5)
        while !done() && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
    }

    func testAFailingChannelIsTriedAgainWithoutHoldingUpTheOthersAndEachOutcomeRecorded() async throws {
        let flaky = FlakyChannel(name: "webhook", failures: 2)
        let dead = FlakyChannel(name: "slack", failures: 100)
        let fine = FlakyChannel(name: "email", failures: 0)
        let ledger = Ledger()
        ledger.add(alert("alt_1"))
        let notifier = AlertNotifier(
            channels: [flaky, dead, fine], ledger: ledger.make(owner: "a"), giveUpAfter: .seconds(1),
            firstDelay: .milliseconds(50), logger: Logger(label: "test"))
        let running = Task { await notifier.run() }
        notifier.deliver(alert("alt_1"))
        try await waitUntil { flaky.sent.count == 1 && fine.sent.count == 1 && dead.tries >= 3 }
        try await Task.sleep(for: .milliseconds(1_100))
        notifier.finish()
        await running.value
        XCTAssertEqual(fine.sent, ["alt_1"])
        XCTAssertEqual(flaky.sent, ["alt_1"])
        XCTAssertEqual(flaky.tries, 3)
        XCTAssertEqual(dead.sent, [])
        // 50, 100, 200, 400 ms apart, then given up: the next pause would pass the second.
        XCTAssertTrue((3...5).contains(dead.tries), "\(dead.tries)")
        let recorded = ledger.log.withLock { $0 }
        XCTAssertEqual(recorded.filter { $0.hasPrefix("alt_1 slack HTTP 503") }.count, dead.tries)
        XCTAssertEqual(recorded.filter { $0 == "alt_1 webhook sent 0" }.count, 1)
        XCTAssertEqual(recorded.filter { $0 == "alt_1 email sent 0" }.count, 1)
    }

    func testTwoMonitorsDeliveringOneAlertSendItOnceAndASentOneIsNotSentAgain() async throws {
        let webhook = FlakyChannel(name: "webhook", failures: 0)
        let ledger = Ledger()
        ledger.add(alert("alt_2"))
        let first = AlertNotifier(channels: [webhook], ledger: ledger.make(owner: "a"), logger: Logger(label: "a"))
        let second = AlertNotifier(channels: [webhook], ledger: ledger.make(owner: "b"), logger: Logger(label: "b"))
        let running = [Task { await first.run() }, Task { await second.run() }]
        for _ in 0..<5 {
            first.deliver(alert("alt_2"))
            second.deliver(alert("alt_2"))
        }
        try await waitUntil { !webhook.sent.isEmpty }
        try await Task.sleep(for: .milliseconds(100))
        // Handed on again as the store had it before it was sent: the claim says it was.
        first.deliver(alert("alt_2"))
        try await Task.sleep(for: .milliseconds(100))
        first.finish()
        second.finish()
        for task in running { await task.value }
        XCTAssertEqual(webhook.sent, ["alt_2"])
    }

    func testAGrownAlertIsSentAsItIsNowAndRecordedAtThatLevel() async throws {
        let webhook = FlakyChannel(name: "webhook", failures: 1)
        let ledger = Ledger()
        var first = alert("alt_4")
        first.level = 1
        first.message = "1 double charge"
        ledger.add(first)
        let notifier = AlertNotifier(
            channels: [webhook], ledger: ledger.make(owner: "a"), firstDelay: .milliseconds(200),
            logger: Logger(label: "a"))
        let running = Task { await notifier.run() }
        notifier.deliver(first)
        try await waitUntil { webhook.tries == 1 }
        // It grew while the first try's pause ran: the next try sends what the store has now.
        var grown = first
        grown.level = 3
        grown.message = "3 double charges"
        ledger.add(grown)
        notifier.deliver(grown)
        try await waitUntil { webhook.sent.count == 1 }
        try await Task.sleep(for: .milliseconds(100))
        notifier.finish()
        await running.value
        XCTAssertEqual(webhook.tries, 2, "one task for the alert and channel, not one per level")
        XCTAssertEqual(webhook.messages, ["3 double charges"])
        XCTAssertEqual(ledger.alerts.withLock { $0["alt_4"]?.deliveries["webhook"]?.sentLevel }, 3)
    }
}

final class SMTPTests: XCTestCase {
    func testSettingsReadTheURLAndRefuseWhatTheyDoNotKnow() throws {
        let plain = try SMTPSettings(url: "smtp://alerts%40example.com:p%40ss@mail.example.com:587?starttls=required")
        XCTAssertEqual(plain.host, "mail.example.com")
        XCTAssertEqual(plain.port, 587)
        XCTAssertEqual(plain.user, "alerts@example.com")
        XCTAssertEqual(plain.password, "p@ss")
        XCTAssertEqual(plain.startTLS, .required)
        XCTAssertFalse(plain.implicitTLS)
        XCTAssertEqual(plain.description, "smtp://alerts@example.com@mail.example.com:587")
        let implicit = try SMTPSettings(url: "smtps://mail.example.com?ca_file=/etc/ca.pem")
        XCTAssertEqual(implicit.port, 465)
        XCTAssertTrue(implicit.implicitTLS)
        XCTAssertEqual(implicit.caFile, "/etc/ca.pem")
        XCTAssertEqual(try SMTPSettings(url: "smtp://localhost").port, 25)
        for bad in [
            "http://mail.example.com", "smtp://", "smtp://h?starttls=maybe", "smtp://h?tls=1", "mail.example.com",
        ] {
            XCTAssertThrowsError(try SMTPSettings(url: bad), bad)
        }
    }

    func testAMessageIsBase64WithCRLFAndAFoldedEncodedSubject() throws {
        let subject = "Alarm: Kling fällt aus, " + String(repeating: "und noch mehr ", count: 30)
        let message = EmailMessage(
            from: "gengate@example.com", to: ["a@example.com", "b@example.com"], subject: subject,
            body: "first\n.hidden line\rlast")
        let rendered = message.rendered(id: "m1", date: Date(timeIntervalSince1970: 0))
        XCTAssertTrue(rendered.contains("To: a@example.com, b@example.com\r\n"))
        XCTAssertTrue(rendered.contains("Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"))
        XCTAssertFalse(rendered.replacingOccurrences(of: "\r\n", with: "").contains("\n"))
        let lines = rendered.components(separatedBy: "\r\n")
        XCTAssertTrue(lines.allSatisfy { $0.count <= 78 }, "\(lines.filter { $0.count > 78 })")
        XCTAssertFalse(lines.contains { $0.hasPrefix(".") })
        // The subject: encoded words, folded, that decode to its first 199 characters and "…".
        let start = try XCTUnwrap(lines.firstIndex { $0.hasPrefix("Subject: ") })
        var words: [String] = [String(lines[start].dropFirst("Subject: ".count))]
        for line in lines[(start + 1)...] where line.hasPrefix(" ") { words.append(String(line.dropFirst())) }
        let decoded = try words.map { word -> String in
            let inner = try XCTUnwrap(word.split(separator: "?").dropFirst(3).first)
            return String(decoding: try XCTUnwrap(Data(base64Encoded: String(inner))), as: UTF8.self)
        }.joined()
        XCTAssertEqual(decoded, String(subject.prefix(199)) + "…")
        // The body: base64 of its text with CRLF line ends.
        let body = lines[(lines.firstIndex(of: "")! + 1)...].joined()
        XCTAssertEqual(
            String(decoding: try XCTUnwrap(Data(base64Encoded: body)), as: UTF8.self),
            "first\r\n.hidden line\r\nlast")
        XCTAssertEqual(EmailMessage.encodedWords("a\r\nBcc: x@y"), "a  Bcc: x@y")
    }

    func testAddressesThatCouldInjectCommandsAreRefused() async {
        for bad in ["a@b>\r\nRCPT TO:<c@d", "no-at-sign", "a@b, c@d", "@b"] {
            do {
                try await SMTPClient.send(
                    EmailMessage(from: "x@y", to: [bad], subject: "s", body: "b"),
                    via: try SMTPSettings(url: "smtp://127.0.0.1:9"), timeout: .seconds(2))
                XCTFail("sent to \(bad)")
            } catch {
                XCTAssertTrue("\(error)".contains("not an email address"), "\(error)")
            }
        }
    }

    func testAServerThatIsNotThereIsAClearErrorInTime() async throws {
        let started = ContinuousClock.now
        do {
            try await SMTPClient.send(
                EmailMessage(from: "x@y", to: ["a@b"], subject: "s", body: "b"),
                via: try SMTPSettings(url: "smtp://127.0.0.1:1"), timeout: .seconds(5))
            XCTFail("sent")
        } catch {
            XCTAssertTrue("\(error)".contains("cannot connect to 127.0.0.1:1"), "\(error)")
        }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(5))
    }
}
