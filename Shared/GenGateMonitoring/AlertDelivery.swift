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
/// failure (1 s, 2 s, 4 s … at most a minute apart) for up to `giveUpAfter`, each attempt
/// recorded on the alert. Before each attempt it claims the delivery in the store, so two
/// monitors (or one that looks again) never send one alert to one channel at once, and one that
/// was sent is not sent again. `deliver` never waits: a slow or dead channel never holds up the
/// monitor.
public final class AlertNotifier: Sendable {
    /// What the notifier needs of the store (the monitor passes its store's methods).
    public struct Ledger: Sendable {
        /// Claims a delivery until a time, and gives the alert as it is now; nil: sent already
        /// (at its level), or another monitor has it.
        public var claim: @Sendable (_ alertID: String, _ channel: String, _ until: Date) async throws -> Alert?
        /// Records an attempt at the alert at a level (`error` nil: sent).
        public var record:
            @Sendable (_ alertID: String, _ channel: String, _ error: String?, _ level: Int) async throws -> Void

        public init(
            claim: @escaping @Sendable (String, String, Date) async throws -> Alert?,
            record: @escaping @Sendable (String, String, String?, Int) async throws -> Void
        ) {
            self.claim = claim
            self.record = record
        }
    }

    public let channels: [any AlertChannel]
    let ledger: Ledger
    let giveUpAfter: Duration
    let firstDelay: Duration
    let channelTimeout: Duration
    let logger: Logger
    /// Told of each attempt: the channel, and whether it was sent.
    let onAttempt: @Sendable (String, Bool) -> Void
    let stream: AsyncStream<(Alert, Bool)>
    let continuation: AsyncStream<(Alert, Bool)>.Continuation
    /// Deliveries under way here, by alert and channel (a task sends the alert as it is when
    /// it claims, so a grown alert is picked up by the one already under way).
    let underWay = Locked<Set<String>>([])
    /// What this notifier sent, by alert and channel: the level. Consulted as well as the store,
    /// so that an alert is not sent again when the store did not take the record of it (writes
    /// failing), or could not be asked (`claim` failing).
    let sent = Locked<[String: Int]>([:])

    public init(
        channels: [any AlertChannel], ledger: Ledger, giveUpAfter: Duration = .seconds(3_600),
        firstDelay: Duration = .seconds(1), channelTimeout: Duration = .seconds(30), logger: Logger,
        onAttempt: @escaping @Sendable (String, Bool) -> Void = { _, _ in }
    ) {
        self.channels = channels
        self.ledger = ledger
        self.giveUpAfter = giveUpAfter
        self.firstDelay = firstDelay
        self.channelTimeout = channelTimeout
        self.logger = logger
        self.onAttempt = onAttempt
        (stream, continuation) = AsyncStream.makeStream(
            of: (Alert, Bool).self, bufferingPolicy: .bufferingOldest(1_000))
    }

    /// Queues `alert` for every channel it has not reached at its level. `stored`: the alert is
    /// in the store (false for the one that says the store cannot be reached: sent unclaimed).
    public func deliver(_ alert: Alert, stored: Bool = true) {
        guard channels.contains(where: { alert.deliveries[$0.name]?.due(level: alert.level) ?? true }) else { return }
        if case .dropped = continuation.yield((alert, stored)) {
            logger.error("alert not sent: over 1000 alerts waiting to be sent", metadata: ["alert": "\(alert.id)"])
        }
    }

    /// Delivers until cancelled; deliveries in progress are cancelled with it (the next look at
    /// unsent alerts, here or in another monitor, takes them up once their claims run out).
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await (alert, stored) in stream {
                for channel in channels where alert.deliveries[channel.name]?.due(level: alert.level) ?? true {
                    let key = "\(alert.id) \(channel.name)"
                    if let level = sent.withLock({ $0[key] }), level >= alert.level { continue }
                    let fresh = underWay.withLock { $0.insert(key).inserted }
                    guard fresh else { continue }
                    group.addTask {
                        await self.send(alert, to: channel, stored: stored)
                        _ = self.underWay.withLock { $0.remove(key) }
                    }
                }
            }
        }
    }

    public func finish() { continuation.finish() }

    func send(_ snapshot: Alert, to channel: any AlertChannel, stored: Bool) async {
        let key = "\(snapshot.id) \(channel.name)"
        let giveUp = ContinuousClock.now + giveUpAfter
        var delay = firstDelay
        var attempt = 0
        var alert = snapshot
        while true {
            attempt += 1
            if stored {
                // Held for one attempt and its pause; renewed before the next.
                let until = Date().addingTimeInterval((channelTimeout + .seconds(60)).inSeconds)
                do {
                    guard let current = try await ledger.claim(alert.id, channel.name, until) else { return }
                    // Sent by this notifier already, the store not told (its write failed): told now.
                    if let level = sent.withLock({ $0[key] }), level >= current.level {
                        try? await ledger.record(alert.id, channel.name, nil, level)
                        return
                    }
                    alert = current
                } catch {
                    // The store is out of reach: sending twice beats not sending, unless this
                    // notifier knows it sent it already.
                    if let level = sent.withLock({ $0[key] }), level >= alert.level { return }
                    logger.warning(
                        "cannot claim an alert's delivery; sending it anyway",
                        metadata: ["alert": "\(alert.id)", "channel": "\(channel.name)", "error": "\(error)"])
                }
            }
            let sending = alert
            let outcome = await withDeadline(channelTimeout) { try await channel.send(sending) }
            switch outcome {
            case .success:
                onAttempt(channel.name, true)
                sent.withLock { sent in
                    if sent.count > 10_000 { sent.removeAll() }
                    sent[key] = max(sent[key] ?? 0, alert.level)
                }
                if stored { try? await ledger.record(alert.id, channel.name, nil, alert.level) }
                logger.info(
                    "alert sent",
                    metadata: ["alert": "\(alert.id)", "channel": "\(channel.name)", "attempt": "\(attempt)"])
                // It may have grown while it was being sent: the next claim says (nil: nothing new).
                guard stored else { return }
                attempt = 0
                delay = firstDelay
                continue
            case .failure(let error):
                if Task.isCancelled { return }
                onAttempt(channel.name, false)
                let said = String(String(describing: error).prefix(500))
                if stored { try? await ledger.record(alert.id, channel.name, said, alert.level) }
                logger.warning(
                    "alert not sent",
                    metadata: [
                        "alert": "\(alert.id)", "channel": "\(channel.name)", "attempt": "\(attempt)",
                        "error": "\(said)",
                    ])
            }
            guard ContinuousClock.now + delay < giveUp else { break }
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
            // The operator's own channel: any address. The URL is a secret: not repeated in the error.
            if let problem = OutboundURLPolicy(allowPrivate: true).problem(with: slack) {
                throw Invalid(description: "GENGATE_ALERT_SLACK_URL \(problem)")
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
        let seconds = TimeAmount(timeout)
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
