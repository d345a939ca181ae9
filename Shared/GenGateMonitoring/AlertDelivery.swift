import AsyncHTTPClient
import Foundation
import GenGateCore
import GenGateStore
import Logging
import NIOCore

/// Somewhere an alert is sent.
public protocol AlertChannel: Sendable {
    /// `webhook`, `slack` or `email`: the key of its delivery record on the alert.
    var name: String { get }
    func send(_ alert: Alert) async throws
}

/// A failed delivery, as recorded on the alert.
public struct AlertDeliveryError: Error, CustomStringConvertible {
    public var description: String
}

/// The generic webhook: the alert as JSON (`{"type": "alert.raised", "timestamp": …, "data":
/// {alert}}`), signed like application webhooks (Standard Webhooks headers, the alert's id as
/// `webhook-id`, the same on every retry) when a secret is set.
public struct WebhookAlertChannel: AlertChannel {
    public var name: String { "webhook" }
    let url: String
    let key: [UInt8]?
    let client: HTTPClient
    let timeout: TimeAmount

    public init(url: String, key: [UInt8]?, client: HTTPClient, timeout: TimeAmount) {
        self.url = url
        self.key = key
        self.client = client
        self.timeout = timeout
    }

    public func send(_ alert: Alert) async throws {
        let now = Date()
        let body = try JSONCoding.encode(
            JSONValue.object([
                "type": .string("alert.raised"), "timestamp": .string(Timestamp.format(now)),
                "data": .object(alert.json),
            ]))
        var headers: [(String, String)] = [("webhook-id", alert.id)]
        if let key {
            let timestamp = Int(now.timeIntervalSince1970)
            headers += [
                ("webhook-timestamp", String(timestamp)),
                ("webhook-signature", StandardWebhooks.sign(key: key, id: alert.id, timestamp: timestamp, body: body)),
            ]
        }
        try await AlertHTTP.post(body, to: url, headers: headers, client: client, timeout: timeout)
    }
}

/// A Slack incoming webhook: the alert as a message with a text fallback and blocks.
public struct SlackAlertChannel: AlertChannel {
    public var name: String { "slack" }
    let url: String
    let client: HTTPClient
    let timeout: TimeAmount

    public init(url: String, client: HTTPClient, timeout: TimeAmount) {
        self.url = url
        self.client = client
        self.timeout = timeout
    }

    static func message(_ alert: Alert) -> JSONValue {
        let emoji =
            [
                AlertSeverity.low: ":information_source:", .medium: ":warning:", .high: ":rotating_light:",
                .critical: ":fire:",
            ][alert.severity] ?? ""
        let title = "\(emoji) [\(alert.severity.rawValue.uppercased())] GenGate \(alert.type)"
        return .object([
            "text": .string("\(title): \(alert.message)"),
            "blocks": .array([
                .object([
                    "type": .string("header"),
                    "text": .object(["type": .string("plain_text"), "text": .string(title)]),
                ]),
                .object([
                    "type": .string("section"),
                    "text": .object(["type": .string("mrkdwn"), "text": .string(alert.message)]),
                ]),
                .object([
                    "type": .string("context"),
                    "elements": .array([
                        .object([
                            "type": .string("mrkdwn"),
                            "text": .string(
                                "`\(alert.id)` · \(alert.fingerprint) · \(Timestamp.format(alert.createdAt))"),
                        ])
                    ]),
                ]),
            ]),
        ])
    }

    public func send(_ alert: Alert) async throws {
        try await AlertHTTP.post(
            try JSONCoding.encode(Self.message(alert)), to: url, headers: [], client: client, timeout: timeout)
    }
}

/// Email over SMTP.
public struct EmailAlertChannel: AlertChannel {
    public var name: String { "email" }
    let settings: SMTPSettings
    let from: String
    let to: [String]
    let timeout: Duration

    public init(settings: SMTPSettings, from: String, to: [String], timeout: Duration) {
        self.settings = settings
        self.from = from
        self.to = to
        self.timeout = timeout
    }

    static func message(_ alert: Alert, from: String, to: [String]) -> EmailMessage {
        var body = """
            \(alert.message)

            Alert:     \(alert.id)
            Rule:      \(alert.type)
            Severity:  \(alert.severity.rawValue)
            Incident:  \(alert.fingerprint)
            Raised at: \(Timestamp.format(alert.createdAt))

            """
        if let details = try? JSONCoding.encoder(pretty: true).encode(JSONValue.object(alert.details)) {
            body += "Details:\n" + String(decoding: details, as: UTF8.self) + "\n"
        }
        body +=
            "\nAcknowledge it with POST /v1/admin/alerts/\(alert.id)/ack (an admin key), or on the monitor's dashboard.\n"
        return EmailMessage(
            from: from, to: to, subject: "[GenGate \(alert.severity.rawValue.uppercased())] \(alert.message)",
            body: body)
    }

    public func send(_ alert: Alert) async throws {
        try await SMTPClient.send(Self.message(alert, from: from, to: to), via: settings, timeout: timeout)
    }
}

enum AlertHTTP {
    static func post(
        _ body: Data, to url: String, headers: [(String, String)], client: HTTPClient, timeout: TimeAmount
    ) async throws {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: "user-agent", value: "GenGate-Alerts")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await client.execute(request, timeout: timeout)
        // The answer's body is not needed; read a little so the connection can be reused.
        _ = try? await response.body.collect(upTo: 64 * 1024)
        guard (200..<300).contains(response.status.code) else {
            throw AlertDeliveryError(description: "answered HTTP \(response.status.code)")
        }
    }
}

/// Sends alerts to every channel, each delivery in a task of its own, tried again after a
/// failure (1 s, 2 s, 4 s … at most a minute apart, `attempts` in all), and recorded on the
/// alert. `notify` never waits: a slow or dead channel never holds up the monitor.
public final class AlertNotifier: Sendable {
    public typealias Record = @Sendable (_ alertID: String, _ channel: String, _ error: String?) async -> Void

    public let channels: [any AlertChannel]
    let attempts: Int
    let firstDelay: Duration
    let record: Record
    let logger: Logger
    let stream: AsyncStream<Alert>
    let continuation: AsyncStream<Alert>.Continuation

    public init(
        channels: [any AlertChannel], attempts: Int, firstDelay: Duration = .seconds(1), logger: Logger,
        record: @escaping Record
    ) {
        self.channels = channels
        self.attempts = max(1, attempts)
        self.firstDelay = firstDelay
        self.record = record
        self.logger = logger
        (stream, continuation) = AsyncStream.makeStream(of: Alert.self, bufferingPolicy: .bufferingOldest(1_000))
    }

    /// Queues `alert` for every channel.
    public func notify(_ alert: Alert) {
        guard !channels.isEmpty else { return }
        if case .dropped = continuation.yield(alert) {
            logger.error("alert not sent: over 1000 alerts waiting to be sent", metadata: ["alert": "\(alert.id)"])
        }
    }

    /// Queues `alert` for the channels it has not reached yet (after a restart).
    public func resume(_ alert: Alert) {
        let missing = channels.filter { channel in
            let record = alert.deliveries[channel.name]
            return record?.sentAt == nil && (record?.attempts ?? 0) < attempts
        }
        guard !missing.isEmpty else { return }
        continuation.yield(alert)
    }

    /// Delivers until cancelled; deliveries in progress are cancelled with it.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await alert in stream {
                for channel in channels {
                    let done = alert.deliveries[channel.name]
                    if done?.sentAt != nil { continue }
                    let already = done?.attempts ?? 0
                    group.addTask { await self.deliver(alert, to: channel, tried: already) }
                }
            }
        }
    }

    public func finish() { continuation.finish() }

    func deliver(_ alert: Alert, to channel: any AlertChannel, tried: Int) async {
        var delay = firstDelay
        for attempt in (tried + 1)...max(tried + 1, attempts) {
            do {
                try await channel.send(alert)
                await record(alert.id, channel.name, nil)
                logger.info(
                    "alert sent",
                    metadata: ["alert": "\(alert.id)", "channel": "\(channel.name)", "attempt": "\(attempt)"])
                return
            } catch {
                if Task.isCancelled { return }
                let said = String(describing: error).prefix(500)
                await record(alert.id, channel.name, String(said))
                logger.warning(
                    "alert not sent",
                    metadata: [
                        "alert": "\(alert.id)", "channel": "\(channel.name)", "attempt": "\(attempt)",
                        "error": "\(said)",
                    ])
            }
            guard attempt < attempts else { break }
            do { try await Task.sleep(for: delay) } catch { return }
            delay = min(delay * 2, .seconds(60))
        }
        logger.error("alert given up on", metadata: ["alert": "\(alert.id)", "channel": "\(channel.name)"])
    }
}

/// Where alerts go, from the configuration (`webhook_url`, `email_from`, `email_to`) and the
/// environment (the channels that carry secrets: `GENGATE_ALERT_WEBHOOK_SECRET`,
/// `GENGATE_ALERT_SLACK_URL`, `GENGATE_ALERT_SMTP_URL`). A channel half set up is an error at
/// start, not an alert lost later.
public struct AlertChannelSettings: Sendable {
    public var webhookURL: String?
    public var webhookKey: [UInt8]?
    public var slackURL: String?
    public var smtp: SMTPSettings?
    public var emailFrom: String?
    public var emailTo: [String] = []

    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    public init(
        webhookURL: String?, emailFrom: String?, emailTo: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws {
        func value(_ name: String) -> String? {
            environment[name].map { $0.trimmingCharacters(in: .whitespaces) }.flatMap { $0.isEmpty ? nil : $0 }
        }
        self.webhookURL = webhookURL
        if let secret = value("GENGATE_ALERT_WEBHOOK_SECRET") {
            guard let key = StandardWebhooks.key(secret: secret) else {
                throw Invalid(
                    description: "GENGATE_ALERT_WEBHOOK_SECRET must be a whsec_… secret (base64 after whsec_)")
            }
            guard webhookURL != nil else {
                throw Invalid(
                    description:
                        "GENGATE_ALERT_WEBHOOK_SECRET is set, but no alerts.webhook_url (GENGATE_ALERT_WEBHOOK_URL)")
            }
            webhookKey = key
        }
        if let slack = value("GENGATE_ALERT_SLACK_URL") {
            guard let url = URL(string: slack), ["http", "https"].contains(url.scheme?.lowercased() ?? ""),
                url.host?.isEmpty == false
            else {
                // The URL is a secret: not repeated in the error.
                throw Invalid(description: "GENGATE_ALERT_SLACK_URL must be an http or https URL")
            }
            slackURL = slack
        }
        self.emailFrom = emailFrom.flatMap { $0.isEmpty ? nil : $0 }
        self.emailTo = (emailTo ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        if let text = value("GENGATE_ALERT_SMTP_URL") {
            do {
                smtp = try SMTPSettings(url: text)
            } catch {
                throw Invalid(description: "GENGATE_ALERT_SMTP_URL \(error)")
            }
            guard let from = self.emailFrom, !self.emailTo.isEmpty else {
                throw Invalid(
                    description:
                        "GENGATE_ALERT_SMTP_URL is set: alerts.email_from and alerts.email_to (GENGATE_ALERT_EMAIL_FROM, GENGATE_ALERT_EMAIL_TO) must be too"
                )
            }
            for address in [from] + self.emailTo where !SMTPClient.isPlainAddress(address) {
                throw Invalid(description: "not an email address: \(address)")
            }
        } else if self.emailFrom != nil || !self.emailTo.isEmpty {
            throw Invalid(description: "alerts.email_from or email_to is set, but GENGATE_ALERT_SMTP_URL is not")
        }
    }

    public func channels(client: HTTPClient, timeout: Duration) -> [any AlertChannel] {
        let seconds = TimeAmount.nanoseconds(
            timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)
        var channels: [any AlertChannel] = []
        if let webhookURL {
            channels.append(WebhookAlertChannel(url: webhookURL, key: webhookKey, client: client, timeout: seconds))
        }
        if let slackURL { channels.append(SlackAlertChannel(url: slackURL, client: client, timeout: seconds)) }
        if let smtp, let emailFrom {
            channels.append(EmailAlertChannel(settings: smtp, from: emailFrom, to: emailTo, timeout: timeout))
        }
        return channels
    }
}
