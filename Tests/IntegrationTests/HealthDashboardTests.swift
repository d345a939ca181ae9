import Foundation
import GenGateCore
import XCTest

/// Detailed health and the dashboard, on a running system: health turns degraded when a service
/// is killed and healthy when it is back; the dashboard, rendered by headless Chromium (Debian's
/// `chromium`), shows the live figures, checked in its DOM and in a screenshot (Pillow).
final class HealthDashboardTests: XCTestCase {
    static let screenshotCheck = EventSchemaTests.root.appendingPathComponent("Tests/Alerts/screenshot_colors.py")

    func detailed(_ system: GenGateSystem, key: String?) async throws -> GenGateSystem.Answer {
        try await GenGateSystem.rawRequest(
            .GET, "http://127.0.0.1:\(system.monitorPort)/health/detailed", body: nil, key: key)
    }

    func waitForHealth(_ system: GenGateSystem, _ status: String, timeout: Duration = .seconds(30)) async throws
        -> JSONValue
    {
        let deadline = ContinuousClock.now + timeout
        var last = JSONValue.null
        while ContinuousClock.now < deadline {
            last = try await detailed(system, key: system.adminKey).json
            if last["status"] == .string(status) { return last }
            try await Task.sleep(for: .milliseconds(250))
        }
        XCTFail("health never became \(status): \(last)")
        throw SystemError("timeout")
    }

    func testHealthTurnsDegradedWhenAServiceIsKilledAndHealthyWhenItIsBack() async throws {
        let system = try await GenGateSystem.start(
            environment: ["GENGATE_SIM_LATENCY_MS": "50", "GENGATE_ALERT_EVALUATE_EVERY_SECONDS": "1"],
            config: #"{"monitor": {"stale_after_seconds": 3}}"#)
        defer { system.stop() }
        let healthy = try await waitForHealth(system, "healthy")
        XCTAssertEqual(healthy["components"]?["store"]?["status"], .string("up"))
        XCTAssertEqual(healthy["components"]?["objects"]?["status"], .string("up"))
        XCTAssertEqual(healthy["components"]?["services"]?["poller"]?["status"], .string("ok"))
        XCTAssertNotNil(healthy["queues"]?["pending"]?.doubleValue)

        // Admin only: no key asks for one (a browser gets Basic's prompt), an app's key is refused.
        let anonymous = try await detailed(system, key: nil)
        XCTAssertEqual(anonymous.status, 401)
        XCTAssertEqual(anonymous.headers.first(name: "www-authenticate")?.hasPrefix("Basic"), true)
        let user = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "app"}"#).json["key"]?.stringValue
        let refused = try await detailed(system, key: user)
        XCTAssertEqual(refused.status, 403)

        // The poller stops answering (SIGSTOP: no heartbeat, and its supervisor sees no exit).
        let poller = try XCTUnwrap(system.pid(of: "poller"))
        XCTAssertEqual(kill(poller, SIGSTOP), 0)
        var killed = false
        defer { if !killed { kill(poller, SIGKILL) } }
        let degraded = try await waitForHealth(system, "degraded")
        XCTAssertEqual(degraded["components"]?["services"]?["poller"]?["status"], .string("stale"))
        XCTAssertEqual(degraded["components"]?["services"]?["uploader"]?["status"], .string("ok"))
        // And the rule raised its alert.
        // And the rule raised its alert (only the poller's is looked at: on a loaded machine a
        // service that started slowly may have had one of its own).
        func pollerAlerts() async throws -> [JSONValue] {
            let listed = try await system.request(.GET, "/v1/admin/alerts?type=service_down").json
            return (listed["data"]?.arrayValue ?? []).filter { $0["fingerprint"] == .string("service_down:poller") }
        }
        var alerts: [JSONValue] = []
        for _ in 0..<40 {
            alerts = try await pollerAlerts()
            if !alerts.isEmpty { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        XCTAssertEqual(alerts.count, 1)
        XCTAssertEqual(alerts.first?["state"], .string("open"))

        // Killed, it is started again by its supervisor, and health is back.
        XCTAssertEqual(kill(poller, SIGKILL), 0)
        killed = true
        let back = try await waitForHealth(system, "healthy")
        XCTAssertEqual(back["components"]?["services"]?["poller"]?["status"], .string("ok"))
        for _ in 0..<40 {
            alerts = try await pollerAlerts()
            if alerts.first?["state"] == .string("resolved") { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        XCTAssertEqual(alerts.first?["state"], .string("resolved"), "\(alerts)")
        XCTAssertEqual(alerts.count, 1, "one incident, one alert")
    }

    func testTheDashboardRendersTheLiveFiguresInChromium() async throws {
        let chromium = ["chromium", "chromium-browser"].first { name in
            (try? Command.run(["sh", "-c", "command -v \(name)"]))?.status == 0
        }
        let browser = try XCTUnwrap(chromium, "Debian's chromium is needed (scripts/install-deps installs it)")
        let system = try await GenGateSystem.start(environment: [
            "GENGATE_SIM_LATENCY_MS": "50", "GENGATE_ALERT_EVALUATE_EVERY_SECONDS": "1",
            "GENGATE_RETRY_BASE_SECONDS": "0.1", "GENGATE_SIM_SUBMIT_LATENCY_MS": "30",
        ])
        defer { system.stop() }
        // Live figures: completed jobs, and jobs that fail (an alert and errors with them).
        for index in 0..<3 {
            let id = try await system.submit(#"{"model": "sim/image", "prompt": "fine \#(index)"}"#)
            _ = try await system.waitForStatus(id, "completed")
        }
        for index in 0..<3 {
            let id = try await system.submit(
                #"{"model": "sim/image", "prompt": "broken \#(index)", "params": {"sim_fail": true}}"#)
            _ = try await system.waitForStatus(id, "failed", timeout: .seconds(60))
        }
        _ = try await waitForHealth(system, "degraded")
        // The alert is raised by an evaluation a second: wait for it before rendering.
        var open: [JSONValue] = []
        for _ in 0..<60 where open.isEmpty {
            open = try await system.request(.GET, "/v1/admin/alerts?state=open").json["data"]?.arrayValue ?? []
            if open.isEmpty { try await Task.sleep(for: .milliseconds(250)) }
        }
        let alertID = try XCTUnwrap(open.first?["id"]?.stringValue, "no alert was raised")

        let url = "http://admin:\(system.adminKey)@127.0.0.1:\(system.monitorPort)/dashboard"
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("gg-chromium-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: profile) }
        let flags = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--user-data-dir=\(profile.path)", "--window-size=1400,1600",
        ]
        let dom = try Command.run(flags + ["--dump-dom", url], timeout: 60)
        XCTAssertEqual(dom.status, 0, dom.output)
        let page = dom.output
        XCTAssertTrue(page.contains(#"id="status">degraded<"#), page)
        XCTAssertTrue(page.contains(#"<tr id="provider-sim">"#), page)
        XCTAssertTrue(page.contains(#"<svg class="chart" id="calls-sim""#), page)
        XCTAssertTrue(page.contains(#"<svg class="chart" id="latency-sim""#), page)
        XCTAssertTrue(page.contains("Acknowledge</button>"), page)
        XCTAssertTrue(page.contains(#"<tr id="spend-sim/image (sim)">"#), "this month's spend by model: \(page)")
        XCTAssertTrue(page.contains("provider_failure_rate") || page.contains("job_retries"), page)
        XCTAssertTrue(page.contains("(gave up after 4 attempts)</td>"), "the recent errors: \(page)")
        for service in ["api-ingress", "dispatcher", "poller", "uploader", "monitor"] {
            XCTAssertTrue(page.contains("<td>\(service)</td>"), service)
        }

        let screenshot = profile.appendingPathComponent("dashboard.png")
        let shot = try Command.run(flags + ["--screenshot=\(screenshot.path)", url], timeout: 60)
        XCTAssertEqual(shot.status, 0, shot.output)
        // The picture itself: the amber badge of a degraded system, and the charts' own colours
        // (used nowhere else on the page): grey bars of calls, orange of failures, blue latency.
        let colors = try Python.run(
            Self.screenshotCheck, arguments: [screenshot.path, "c77700", "8c9bab", "e4572e", "1f6feb"])
        XCTAssertEqual(colors.status, 0, colors.output)

        // The Acknowledge button's post, as the page sends it (from its own origin).
        let ackURL = "http://127.0.0.1:\(system.monitorPort)/dashboard/alerts/\(alertID)/ack"
        let forged = try await GenGateSystem.rawRequest(
            .POST, ackURL, body: nil, key: system.adminKey, headers: [("Origin", "https://evil.example")])
        XCTAssertEqual(forged.status, 403, "a post from another site is refused")
        // What a browser sends for another site's form: the Basic credentials it remembers, and
        // no Origin (or a cross-site fetch): refused too.
        let basic = "Basic " + Data("admin:\(system.adminKey)".utf8).base64EncodedString()
        for extra in [[], [("Sec-Fetch-Site", "cross-site")]] {
            let sneaked = try await GenGateSystem.rawRequest(
                .POST, ackURL, body: nil, key: nil, headers: [("Authorization", basic)] + extra)
            XCTAssertEqual(sneaked.status, 403, "\(extra)")
        }
        let stillOpen = try await system.request(.GET, "/v1/admin/alerts/\(alertID)").json
        XCTAssertEqual(stillOpen["state"], .string("open"))
        let posted = try await GenGateSystem.rawRequest(
            .POST, "http://127.0.0.1:\(system.monitorPort)/dashboard/alerts/\(alertID)/ack", body: nil,
            key: system.adminKey, headers: [("Origin", "http://127.0.0.1:\(system.monitorPort)")])
        // 303 to the dashboard (which the client here follows).
        XCTAssertTrue([200, 303].contains(posted.status), "\(posted.status)")
        let alert = try await system.request(.GET, "/v1/admin/alerts/\(alertID)").json
        XCTAssertEqual(alert["state"], .string("acknowledged"))
        let after = try Command.run(flags + ["--dump-dom", url], timeout: 60).output
        XCTAssertTrue(after.contains(#"<span class="badge acknowledged">acknowledged</span>"#), after)
    }
}
