import Foundation
import GenGateCore
import GenGateMonitoring
import XCTest

/// Alerts end to end: failures induced through the simulator reach a signed webhook (checked
/// with the Standard Webhooks reference library), a Slack-format receiver and a real SMTP server
/// (aiosmtpd from PyPI, STARTTLS and AUTH required), once per incident; the admin API lists
/// and acknowledges them and lists the error log.
final class AlertTests: XCTestCase {
    static let smtpScript = EventSchemaTests.root.appendingPathComponent("Tests/Alerts/smtp_receiver.py")

    /// A self-signed certificate for `localhost` (its own authority), in a new directory.
    func certificate() throws -> (cert: String, key: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("gg-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let cert = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        let made = try Command.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ])
        XCTAssertEqual(made.status, 0, made.output)
        return (cert, key)
    }

    /// The SMTP server on a free port: its port, and the messages it printed.
    func smtpServer(cert: String, key: String) async throws -> (Python.Running, Int) {
        try await Python.serve(Self.smtpScript, arguments: [cert, key, "alerts", "s3cret"])
    }

    func lines(_ running: Python.Running) -> [JSONValue] { WebhookTests.deliveries(running) }

    /// The server's lines once it printed `count` (its output reaches this process a moment
    /// after the server answered), or what it printed within 5 s.
    func lines(_ running: Python.Running, atLeast count: Int) async throws -> [JSONValue] {
        let deadline = ContinuousClock.now + .seconds(5)
        while lines(running).count < count && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        return lines(running)
    }

    func testEmailGoesOverSTARTTLSWithAuthAndAWrongPasswordIsAClearError() async throws {
        let (cert, key) = try certificate()
        let (server, port) = try await smtpServer(cert: cert, key: key)
        defer { server.stop() }
        let message = EmailMessage(
            from: "gengate@example.com", to: ["ops@example.com", "oncall@example.com"],
            subject: "[GenGate HIGH] kling: 6 of 10 attempts failed", body: "first line\n.starts with a dot\nlast")
        try await SMTPClient.send(
            message, via: try SMTPSettings(url: "smtp://alerts:s3cret@localhost:\(port)?ca_file=\(cert)"))
        let printed = try await lines(server, atLeast: 1)
        let received = try XCTUnwrap(printed.first)
        XCTAssertEqual(received["from"], .string("gengate@example.com"))
        XCTAssertEqual(received["to"], .array([.string("ops@example.com"), .string("oncall@example.com")]))
        XCTAssertEqual(received["tls"], .bool(true))
        XCTAssertEqual(received["user"], .string("alerts"))
        XCTAssertEqual(received["subject"], .string(message.subject))
        XCTAssertEqual(received["body"]?.stringValue, "first line\n.starts with a dot\nlast")

        do {
            try await SMTPClient.send(
                message, via: try SMTPSettings(url: "smtp://alerts:wrong@localhost:\(port)?ca_file=\(cert)"))
            XCTFail("sent with a wrong password")
        } catch {
            XCTAssertTrue("\(error)".contains("AUTH PLAIN was answered 535"), "\(error)")
            XCTAssertFalse("\(error)".contains("wrong"), "the password is never in an error")
        }
        // Without the certificate's authority, TLS refuses the server.
        do {
            try await SMTPClient.send(message, via: try SMTPSettings(url: "smtp://alerts:s3cret@localhost:\(port)"))
            XCTFail("sent to a server whose certificate is not trusted")
        } catch {
            XCTAssertFalse("\(error)".contains("s3cret"))
        }
        XCTAssertEqual(lines(server).count, 1)
    }

    func testAFailingProviderRaisesOneAlertOnEveryChannelThatCanBeAcknowledged() async throws {
        let (cert, key) = try certificate()
        let (smtp, smtpPort) = try await smtpServer(cert: cert, key: key)
        defer { smtp.stop() }
        let secret = "whsec_" + Data((0..<24).map { UInt8($0) }).base64EncodedString()
        let hooks = WebhookTests.self
        let (webhook, webhookPort) = try await hooks.receiver(failFirst: 1, secrets: [secret])
        defer { webhook.stop() }
        let (slack, slackPort) = try await hooks.receiver(failFirst: 0, secrets: [])
        defer { slack.stop() }

        let config = """
            {"alerts": {"evaluate_every_seconds": 1, "cool_down_seconds": 600, "max_retries": 2,
              "failure_rate": {"threshold": 0.5, "window_seconds": 600, "minimum_attempts": 4},
              "webhook_url": "http://127.0.0.1:\(webhookPort)/alerts", "email_from": "gengate@example.com",
              "email_to": "ops@example.com", "delivery_give_up_seconds": 60},
             "jobs": {"max_attempts": 4, "retry_base_seconds": 0.1, "retry_max_seconds": 0.2}}
            """
        let system = try await GenGateSystem.start(
            environment: [
                "GENGATE_SIM_LATENCY_MS": "50", "GENGATE_SIM_FAILURE_RATE": "1",
                "GENGATE_ALERT_WEBHOOK_SECRET": secret,
                "GENGATE_ALERT_SLACK_URL": "http://127.0.0.1:\(slackPort)/services/T000/B000/XXXX",
                "GENGATE_ALERT_SMTP_URL": "smtp://alerts:s3cret@localhost:\(smtpPort)?ca_file=\(cert)",
            ], config: config)
        defer { system.stop() }
        for index in 0..<2 {
            let id = try await system.submit(#"{"model": "sim/image", "prompt": "fails \#(index)"}"#)
            _ = try await system.waitForStatus(id, "failed", timeout: .seconds(30))
        }

        // Two incidents: sim's failure rate (8 of 8 attempts), and its jobs retried 3 times.
        let expected: Set<String> = ["provider_failure_rate:sim", "job_retries:sim"]
        let deadline = ContinuousClock.now + .seconds(30)
        var sent: [JSONValue] = []
        while ContinuousClock.now < deadline {
            sent = hooks.deliveries(webhook).filter { $0["status"] == .number(200) }
            let mails = lines(smtp)
            let slacks = hooks.deliveries(slack)
            if sent.count >= 2 && mails.count >= 2 && slacks.count >= 2 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        // Several evaluations later, still one delivery per incident and channel.
        try await Task.sleep(for: .seconds(4))
        let webhookSeen = hooks.deliveries(webhook)
        sent = webhookSeen.filter { $0["status"] == .number(200) }
        XCTAssertEqual(
            Set(sent.compactMap { $0["body"]?["data"]?["fingerprint"]?.stringValue }), expected, "\(webhookSeen)")
        XCTAssertEqual(sent.count, 2, "\(webhookSeen)")
        // The first attempt was answered 500 and tried again with the same webhook-id; every
        // delivery verifies with the reference library.
        XCTAssertEqual(webhookSeen.count, 3)
        XCTAssertTrue(webhookSeen.allSatisfy { $0["verified"] == .array([.bool(true)]) }, "\(webhookSeen)")
        XCTAssertEqual(Set(webhookSeen.compactMap { $0["id"]?.stringValue }).count, 2)
        let failureAlert = try XCTUnwrap(
            sent.first { $0["body"]?["data"]?["type"] == .string("provider_failure_rate") }?["body"])
        XCTAssertEqual(failureAlert["type"], .string("alert.raised"))
        XCTAssertEqual(failureAlert["data"]?["severity"], .string("high"))
        XCTAssertEqual(failureAlert["data"]?["details"]?["rate"], .number(1))
        // Raised once the minimum sample (four attempts) had failed: with the figures of then.
        let failedThen = try XCTUnwrap(failureAlert["data"]?["details"]?["failures"]?["provider_error"]?.intValue)
        XCTAssertTrue((4...8).contains(failedThen), "\(failedThen)")

        let slacks = hooks.deliveries(slack)
        XCTAssertEqual(slacks.count, 2, "\(slacks)")
        XCTAssertTrue(slacks.allSatisfy { $0["path"] == .string("/services/T000/B000/XXXX") })
        let slackText = slacks.compactMap { $0["body"]?["text"]?.stringValue }.joined(separator: "\n")
        // Each channel gets the alert as it stands when it is sent (a retried one, later figures).
        XCTAssertTrue(slackText.contains("[HIGH] GenGate provider_failure_rate: sim: "), slackText)
        XCTAssertTrue(slackText.contains(" attempts failed in the last 10 min (100%, over 50%)"), slackText)
        XCTAssertTrue(slacks.allSatisfy { ($0["body"]?["blocks"]?.arrayValue?.count ?? 0) == 3 })

        let mails = lines(smtp)
        XCTAssertEqual(mails.count, 2, "\(mails)")
        XCTAssertTrue(mails.allSatisfy { $0["tls"] == .bool(true) && $0["to"] == .array([.string("ops@example.com")]) })
        XCTAssertTrue(
            mails.contains {
                let subject = $0["subject"]?.stringValue ?? ""
                // One job or both, by when the evaluation came.
                return subject.hasPrefix("[GenGate MEDIUM] sim: 1 job was retried")
                    || subject.hasPrefix("[GenGate MEDIUM] sim: 2 jobs were retried")
            },
            "\(mails)")

        // The admin API lists them, with each channel's delivery, and acknowledges one.
        let listed = try await system.request(.GET, "/v1/admin/alerts?state=open").json
        let alerts = try XCTUnwrap(listed["data"]?.arrayValue)
        XCTAssertEqual(Set(alerts.compactMap { $0["fingerprint"]?.stringValue }), expected)
        let alert = try XCTUnwrap(alerts.first { $0["type"] == .string("provider_failure_rate") })
        let id = try XCTUnwrap(alert["id"]?.stringValue)
        // Seen again at each evaluation since: the same alert, with the figures of now.
        XCTAssertEqual(alert["details"]?["failures"]?["provider_error"], .number(8))
        XCTAssertGreaterThan(alert["occurrences"]?.intValue ?? 0, 1)
        for channel in ["webhook", "slack", "email"] {
            XCTAssertNotNil(alert["deliveries"]?[channel]?["sent_at"]?.stringValue, "\(channel): \(alert)")
        }
        let webhookTries = try XCTUnwrap(
            alerts.compactMap { $0["deliveries"]?["webhook"]?["attempts"]?.intValue }.reduce(0, +) as Int?)
        XCTAssertEqual(webhookTries, 3, "one delivery was answered 500 and made again")

        let user = try await system.request(
            .POST, "/v1/admin/keys", body: #"{"name": "app"}"#
        ).json["key"]?.stringValue
        let forbidden = try await system.request(.POST, "/v1/admin/alerts/\(id)/ack", key: .some(user))
        XCTAssertEqual(forbidden.status, 403)
        let acknowledged = try await system.request(.POST, "/v1/admin/alerts/\(id)/ack")
        XCTAssertEqual(acknowledged.status, 200)
        XCTAssertEqual(acknowledged.json["state"], .string("acknowledged"))
        XCTAssertNotNil(acknowledged.json["acknowledged_by"]?.stringValue)
        let again = try await system.request(.POST, "/v1/admin/alerts/\(id)/ack")
        XCTAssertEqual(again.json["acknowledged_at"], acknowledged.json["acknowledged_at"])
        let missing = try await system.request(.POST, "/v1/admin/alerts/alt_0000/ack")
        XCTAssertEqual(missing.status, 404)
        let open = try await system.request(.GET, "/v1/admin/alerts?state=open").json["data"]?.arrayValue ?? []
        XCTAssertEqual(open.compactMap { $0["fingerprint"]?.stringValue }, ["job_retries:sim"])
        let bad = try await system.request(.GET, "/v1/admin/alerts?state=closed&severity=urgent")
        XCTAssertEqual(bad.status, 400)
        XCTAssertEqual(bad.json["error"]?["details"]?.arrayValue?.count, 2)

        // The error log has every failed job and failed call, newest first.
        let errors = try await system.request(.GET, "/v1/admin/errors?level=error&source=sim").json
        let failedJobs = try XCTUnwrap(errors["data"]?.arrayValue)
        XCTAssertEqual(failedJobs.count, 2, "\(errors)")
        XCTAssertTrue(failedJobs.allSatisfy { $0["code"] == .string("provider_error") && $0["generation_id"] != .null })
        let calls = try await system.request(.GET, "/v1/admin/errors?level=warning&source=sim&limit=100").json
        XCTAssertEqual(calls["data"]?.arrayValue?.count, 10, "8 failed calls and 2 failed jobs")

        // And Prometheus sees them.
        let metrics = String(decoding: try await system.monitor("/metrics").body, as: UTF8.self)
        XCTAssertTrue(
            metrics.contains(#"gengate_alerts_raised_total{type="provider_failure_rate",severity="high"} 1"#), metrics)
        XCTAssertTrue(metrics.contains(#"gengate_alerts_open{type="provider_failure_rate"} 1"#), metrics)
    }
}
