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

        // A window of one minute holds the last minute's bucket only.
        let lastMinute = windows.figures(now: start.addingTimeInterval(61), window: 60)
        XCTAssertEqual(lastMinute.map(\.provider), ["kling"])
        // An hour later everything has slid out.
        windows.record(call("kling", ok: true), now: start.addingTimeInterval(3_700))
        let later = windows.figures(now: start.addingTimeInterval(3_700))
        XCTAssertEqual(later.map(\.provider), ["kling"])
        XCTAssertEqual(later.first?.figures.calls, 1)

        let timeline = windows.timeline(provider: "kling", now: start.addingTimeInterval(3_700))
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
        // Reordered or repeated messages are no gap.
        XCTAssertEqual(gaps.saw(source: "poller-1@a", service: "poller", seq: 44, now: start), 0)
        XCTAssertEqual(gaps.saw(source: "poller-2@b", service: "poller", seq: 1, now: start), 0)
        XCTAssertEqual(gaps.saw(source: "poller-2@b", service: "poller", seq: 3, now: start), 1)
        XCTAssertEqual(gaps.saw(source: "old", service: "old", seq: nil, now: start), 0)
        XCTAssertEqual(gaps.missed(now: start), ["poller": 4])
        XCTAssertEqual(gaps.missed(now: start.addingTimeInterval(3_700)), [:])
    }
}

final class AlertRuleTests: XCTestCase {
    func outcomes(_ provider: String, succeeded: Int, failed: [String: Int], charged: Int = 0) -> AttemptOutcomes {
        AttemptOutcomes(
            provider: provider, model: "\(provider)/image", succeeded: succeeded, failed: failed.values.reduce(0, +),
            failures: failed, possibleDoubleCharges: charged)
    }

    func inputs(
        _ outcomes: [AttemptOutcomes], retried: [RetriedJob] = [], services: [(String, Double?)]? = nil,
        storeError: String? = nil
    ) -> AlertInputs {
        AlertInputs(
            outcomes: [3_600: outcomes], retried: retried,
            services: services?.map { (service: $0.0, heartbeatAge: $0.1) }, staleAfter: 10, storeError: storeError)
    }

    func testTheSeedsRulesFireOverTheirThresholdsOnly() {
        let rules = AlertRules(settings: AlertRuleSettings())
        let verdict = rules.evaluate(
            inputs(
                [
                    // 6 of 10 failed (over 50%), 3 of 10 timed out (over 20%).
                    outcomes("kling", succeeded: 4, failed: ["task_timeout": 3, "provider_error": 3]),
                    // 5 of 10 failed: not over 50%; 2 of 10 timed out: not over 20%.
                    outcomes("flux", succeeded: 5, failed: ["task_timeout": 2, "provider_error": 3]),
                    // All failed, but too few to judge.
                    outcomes("pollo", succeeded: 0, failed: ["provider_error": 9]),
                    outcomes("sim", succeeded: 30, failed: [:], charged: 2),
                ],
                retried: [
                    RetriedJob(
                        generationID: "gen_1", provider: "sim", model: "sim/image", attempts: 5,
                        lastErrorCode: "provider_error")
                ],
                services: [("poller", 3), ("uploader", 11), ("dispatcher", nil)]))
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
        let down = verdict.raised.first { $0.fingerprint == "service_down:uploader" }!
        XCTAssertEqual(down.severity, .critical)
    }

    func testRulesWithoutTheirFiguresAreNeitherRaisedNorResolvedAndDisabledOnesNever() {
        var settings = AlertRuleSettings()
        settings.disabled = [.jobRetries]
        let rules = AlertRules(settings: settings)
        let verdict = rules.evaluate(
            AlertInputs(
                outcomes: nil,
                retried: [RetriedJob(generationID: "g", provider: "sim", model: "m", attempts: 9, lastErrorCode: nil)],
                services: nil, staleAfter: 10, storeError: "connection refused"))
        XCTAssertEqual(verdict.raised.map(\.fingerprint), ["store_unreachable"])
        XCTAssertEqual(verdict.checked, [.storeUnreachable])
    }

    func testWhenNoHeartbeatArrivesAtAllTheBusIsOneIncident() {
        let verdict = AlertRules(settings: AlertRuleSettings()).evaluate(
            inputs([], services: [("poller", 30), ("uploader", 30), ("monitor", 30), ("dispatcher", 2)]))
        XCTAssertEqual(verdict.raised.map(\.fingerprint), ["service_down:bus"])
        XCTAssertTrue(verdict.checked.contains(.serviceDown))
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
        var sent: [String] = []
        var tries = 0

        init(name: String, failures: Int) {
            self.name = name
            self.failures = failures
        }

        func send(_ alert: Alert) async throws {
            try lock.withLock {
                tries += 1
                if failures > 0 {
                    failures -= 1
                    throw AlertDeliveryError(description: "HTTP 503")
                }
                sent.append(alert.id)
            }
        }
    }

    func alert(_ id: String) -> Alert {
        Alert(
            id: id, type: "service_down", severity: .critical, fingerprint: "service_down:poller", message: "down",
            details: [:], createdAt: Date(), lastSeenAt: Date(), occurrences: 1, resolvedAt: nil, acknowledgedAt: nil,
            acknowledgedBy: nil, deliveries: [:])
    }

    func testAFailingChannelIsTriedAgainWithoutHoldingUpTheOthersAndEachOutcomeRecorded() async throws {
        let flaky = FlakyChannel(name: "webhook", failures: 2)
        let dead = FlakyChannel(name: "slack", failures: 100)
        let fine = FlakyChannel(name: "email", failures: 0)
        let records = Locked<[String]>([])
        let notifier = AlertNotifier(
            channels: [flaky, dead, fine], attempts: 3, firstDelay: .milliseconds(20),
            logger: Logger(label: "test")
        ) { id, channel, error in
            records.withLock { $0.append("\(id) \(channel) \(error ?? "sent")") }
        }
        let running = Task { await notifier.run() }
        notifier.notify(alert("alt_1"))
        let deadline = Date().addingTimeInterval(5)
        while records.withLock({ $0.count }) < 7 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        notifier.finish()
        await running.value
        XCTAssertEqual(fine.sent, ["alt_1"])
        XCTAssertEqual(flaky.sent, ["alt_1"])
        XCTAssertEqual(flaky.tries, 3)
        XCTAssertEqual(dead.tries, 3)
        XCTAssertEqual(dead.sent, [])
        let recorded = records.withLock { $0 }
        XCTAssertEqual(recorded.filter { $0.hasPrefix("alt_1 slack HTTP 503") }.count, 3)
        XCTAssertEqual(recorded.filter { $0 == "alt_1 webhook sent" }.count, 1)
        XCTAssertEqual(recorded.filter { $0 == "alt_1 email sent" }.count, 1)
    }

    func testAResumedAlertGoesOnlyWhereItHasNotBeen() async throws {
        let webhook = FlakyChannel(name: "webhook", failures: 0)
        let email = FlakyChannel(name: "email", failures: 0)
        let notifier = AlertNotifier(channels: [webhook, email], attempts: 3, logger: Logger(label: "test")) {
            _, _, _ in
        }
        var sentOnce = alert("alt_2")
        sentOnce.deliveries = ["webhook": AlertDeliveryRecord(attempts: 1, sentAt: Date(), lastError: nil)]
        var givenUp = alert("alt_3")
        givenUp.deliveries = [
            "webhook": AlertDeliveryRecord(attempts: 3, sentAt: nil, lastError: "x"),
            "email": AlertDeliveryRecord(attempts: 3, sentAt: nil, lastError: "x"),
        ]
        let running = Task { await notifier.run() }
        notifier.resume(sentOnce)
        notifier.resume(givenUp)
        let deadline = Date().addingTimeInterval(5)
        while email.sent.isEmpty && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        notifier.finish()
        await running.value
        XCTAssertEqual(webhook.sent, [])
        XCTAssertEqual(email.sent, ["alt_2"])
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

    func testAMessageIsDotStuffedWithCRLFAndAnEncodedSubject() {
        let message = EmailMessage(
            from: "gengate@example.com", to: ["a@example.com", "b@example.com"], subject: "Alarm: Kling fällt aus",
            body: "first\n.hidden line\nlast")
        let rendered = message.rendered(id: "m1", date: Date(timeIntervalSince1970: 0))
        XCTAssertTrue(rendered.contains("To: a@example.com, b@example.com\r\n"))
        XCTAssertTrue(
            rendered.contains("Subject: =?utf-8?B?\(Data("Alarm: Kling fällt aus".utf8).base64EncodedString())?=\r\n"))
        XCTAssertTrue(rendered.contains("Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"))
        XCTAssertTrue(rendered.hasSuffix("\r\n\r\nfirst\r\n..hidden line\r\nlast\r\n"))
        XCTAssertFalse(rendered.replacingOccurrences(of: "\r\n", with: "").contains("\n"))
        XCTAssertEqual(EmailMessage.encodedWord("a\r\nBcc: x@y"), "a  Bcc: x@y")
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
