import Foundation
import GenGateCore

/// How urgent an alert is, lowest first.
public enum AlertSeverity: String, Codable, Sendable, CaseIterable, Comparable {
    case low, medium, high, critical

    public static func < (lhs: AlertSeverity, rhs: AlertSeverity) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// The monitor's alert rules; an alert's `type` is its rule's name.
public enum AlertRule: String, Codable, Sendable, CaseIterable {
    /// A provider's (and model's) share of failed attempts in the window is over the threshold.
    case providerFailureRate = "provider_failure_rate"
    /// The share of attempts that ran past their task deadline is over the threshold.
    case taskTimeoutRate = "task_timeout_rate"
    /// A job was retried more times than allowed.
    case jobRetries = "job_retries"
    /// An expected service has no fresh heartbeat.
    case serviceDown = "service_down"
    /// The monitor cannot reach the store.
    case storeUnreachable = "store_unreachable"
    /// A submission may have been paid twice.
    case possibleDoubleCharge = "possible_double_charge"
}

/// An alert as the monitor raises it, before the store decides whether it is a new incident.
public struct AlertDraft: Sendable, Equatable {
    /// The rule that raised it, e.g. `provider_failure_rate`.
    public var type: String
    public var severity: AlertSeverity
    /// What makes two alerts the same incident, e.g. `provider_failure_rate:kling`.
    public var fingerprint: String
    public var message: String
    /// The figures behind it (a JSON object).
    public var details: [String: JSONValue]
    /// How bad it is, for incidents that can grow while open (possible double charges: how many
    /// there are): a draft of an open incident with a higher level is sent again.
    public var level: Int

    public init(
        type: String, severity: AlertSeverity, fingerprint: String, message: String, details: [String: JSONValue],
        level: Int = 0
    ) {
        self.type = type
        self.severity = severity
        self.fingerprint = fingerprint
        self.message = message
        self.details = details
        self.level = level
    }
}

/// One incident: raised once, seen again while it lasts, resolved when its condition clears,
/// acknowledged by an operator.
public struct Alert: Sendable, Equatable {
    public var id: String
    public var type: String
    public var severity: AlertSeverity
    public var fingerprint: String
    public var message: String
    public var details: [String: JSONValue]
    public var createdAt: Date
    /// The last time its rule found the condition (raised, or seen again).
    public var lastSeenAt: Date
    /// How many evaluations found it.
    public var occurrences: Int
    /// Its draft's level when last sent (see `AlertDraft.level`).
    public var level: Int
    public var resolvedAt: Date?
    public var acknowledgedAt: Date?
    /// The API key that acknowledged it.
    public var acknowledgedBy: String?
    /// Each channel it went to: `sent` or the last error, and when.
    public var deliveries: [String: AlertDeliveryRecord]

    public init(
        id: String, type: String, severity: AlertSeverity, fingerprint: String, message: String,
        details: [String: JSONValue], createdAt: Date, lastSeenAt: Date, occurrences: Int, level: Int = 0,
        resolvedAt: Date?, acknowledgedAt: Date?, acknowledgedBy: String?, deliveries: [String: AlertDeliveryRecord]
    ) {
        self.level = level
        self.id = id
        self.type = type
        self.severity = severity
        self.fingerprint = fingerprint
        self.message = message
        self.details = details
        self.createdAt = createdAt
        self.lastSeenAt = lastSeenAt
        self.occurrences = occurrences
        self.resolvedAt = resolvedAt
        self.acknowledgedAt = acknowledgedAt
        self.acknowledgedBy = acknowledgedBy
        self.deliveries = deliveries
    }

    /// `open`, `acknowledged` (and not resolved) or `resolved`.
    public var state: AlertState {
        if resolvedAt != nil { return .resolved }
        return acknowledgedAt == nil ? .open : .acknowledged
    }
}

public enum AlertState: String, Codable, Sendable, CaseIterable {
    case open, acknowledged, resolved
}

/// How delivering an alert to one channel went.
public struct AlertDeliveryRecord: Codable, Sendable, Equatable {
    public var attempts: Int
    public var sentAt: Date?
    public var lastError: String?
    /// The monitor sending it now, and until when its claim holds (`claimAlertDelivery`).
    public var claimedBy: String?
    public var claimedUntil: Date?
    /// The alert's level when it was last sent here.
    public var sentLevel: Int?

    public init(
        attempts: Int, sentAt: Date?, lastError: String?, claimedBy: String? = nil, claimedUntil: Date? = nil,
        sentLevel: Int? = nil
    ) {
        self.attempts = attempts
        self.sentAt = sentAt
        self.lastError = lastError
        self.claimedBy = claimedBy
        self.claimedUntil = claimedUntil
        self.sentLevel = sentLevel
    }

    enum CodingKeys: String, CodingKey {
        case attempts
        case sentAt = "sent_at"
        case lastError = "last_error"
        case claimedBy = "claimed_by"
        case claimedUntil = "claimed_until"
        case sentLevel = "sent_level"
    }

    /// Whether the alert at `level` still has to go to this channel.
    public func due(level: Int) -> Bool { sentAt == nil || (sentLevel ?? 0) < level }
}

/// Which alerts to list, newest first.
public struct AlertFilter: Sendable, Equatable {
    public var states: Set<AlertState>
    public var minimumSeverity: AlertSeverity
    public var type: String?
    /// Only alerts older than this id (the previous page's last).
    public var before: String?
    public var limit: Int

    public init(
        states: Set<AlertState> = Set(AlertState.allCases), minimumSeverity: AlertSeverity = .low,
        type: String? = nil, before: String? = nil, limit: Int = 50
    ) {
        self.states = states
        self.minimumSeverity = minimumSeverity
        self.type = type
        self.before = before
        self.limit = limit
    }
}

/// One entry of the error log: something that went wrong, where, and for which job.
public struct ErrorEntry: Sendable, Equatable {
    public enum Level: String, Codable, Sendable, CaseIterable, Comparable {
        case warning, error, critical

        public static func < (lhs: Level, rhs: Level) -> Bool {
            allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
        }
    }

    /// The longest message kept.
    public static let maxMessage = 2_000

    public var id: String
    public var level: Level
    /// Where it happened: a provider's name, or a part of GenGate (`store`, `bus`, `poller`).
    public var source: String
    /// An error code of docs/ERRORS.md, when there is one.
    public var code: String?
    public var message: String
    public var generationID: String?
    /// What else is known (a JSON object), e.g. the model and operation of a provider call.
    public var context: [String: JSONValue]
    public var at: Date

    public init(
        id: String? = nil, level: Level, source: String, code: String?, message: String, generationID: String?,
        context: [String: JSONValue] = [:], at: Date
    ) {
        // Text as a store can keep it (PostgreSQL refuses NUL) and bounded: a provider's or a
        // bus's text can be long, and the log keeps many.
        func clean(_ text: String, _ limit: Int) -> String {
            let text = text.replacingOccurrences(of: "\u{0}", with: "")
            return text.count > limit ? String(text.prefix(limit - 1)) + "…" : text
        }
        self.id = id ?? Identifier.make("err", at: at)
        self.level = level
        self.source = clean(source, 200)
        self.code = code.map { clean($0, 200) }
        self.message = clean(message, Self.maxMessage)
        self.generationID = generationID.map { clean($0, 200) }
        self.context = context
        self.at = at
    }
}

/// Which error log entries to list, newest first.
public struct ErrorFilter: Sendable, Equatable {
    public var minimumLevel: ErrorEntry.Level
    public var source: String?
    public var code: String?
    public var generationID: String?
    public var since: Date?
    /// Only entries older than this id (the previous page's last).
    public var before: String?
    public var limit: Int

    public init(
        minimumLevel: ErrorEntry.Level = .warning, source: String? = nil, code: String? = nil,
        generationID: String? = nil, since: Date? = nil, before: String? = nil, limit: Int = 50
    ) {
        self.minimumLevel = minimumLevel
        self.source = source
        self.code = code
        self.generationID = generationID
        self.since = since
        self.before = before
        self.limit = limit
    }
}

/// How the attempts (or jobs) at one provider and model that ended in a window went (from the
/// store, so nothing is missed the way events can be).
public struct OutcomeCounts: Sendable, Equatable {
    public var provider: String
    /// The model asked; "unknown" for attempts recorded before models were.
    public var model: String
    public var succeeded: Int
    public var failed: Int
    /// Failed attempts by error code.
    public var failures: [String: Int]
    /// Attempts (succeeded, failed or abandoned) that may have been paid twice.
    public var possibleDoubleCharges: Int

    public init(
        provider: String, model: String, succeeded: Int, failed: Int, failures: [String: Int],
        possibleDoubleCharges: Int = 0
    ) {
        self.provider = provider
        self.model = model
        self.succeeded = succeeded
        self.failed = failed
        self.failures = failures
        self.possibleDoubleCharges = possibleDoubleCharges
    }

    public var ended: Int { succeeded + failed }
}

/// A job submitted more times than a rule allows.
public struct RetriedJob: Sendable, Equatable {
    public var generationID: String
    public var provider: String
    public var model: String
    /// Its submissions so far (retries are one fewer).
    public var attempts: Int
    /// The error code of its latest failed attempt.
    public var lastErrorCode: String?

    public init(generationID: String, provider: String, model: String, attempts: Int, lastErrorCode: String?) {
        self.generationID = generationID
        self.provider = provider
        self.model = model
        self.attempts = attempts
        self.lastErrorCode = lastErrorCode
    }
}

/// The store's side of monitoring: alerts, the error log, and the figures alert rules check.
public protocol MonitoringStore: Sendable {
    /// Raises an alert unless its incident is known: if the newest alert with the same
    /// fingerprint is unresolved, or was resolved less than `coolDown` ago, that one is seen again
    /// (and reopened) and nil is returned; otherwise a new alert is made and returned, for the
    /// caller to deliver. One transaction, so two monitors never raise the same incident twice.
    /// A known incident whose draft has a higher `level` than the alert had is updated and
    /// returned too, to be sent again. `id` names a new alert (one already sent, without the
    /// store); nil makes one.
    func raiseAlert(_ draft: AlertDraft, coolDown: TimeInterval, now: Date, id: String?) async throws -> Alert?
    /// Marks the unresolved alerts with these fingerprints resolved; returns how many were.
    func resolveAlerts(fingerprints: [String], at: Date) async throws -> Int
    /// Records the acknowledgement; nil if there is no such alert. An acknowledged alert keeps
    /// its first acknowledgement.
    func acknowledgeAlert(id: String, by keyID: String, at: Date) async throws -> Alert?
    /// Records how delivering an alert to a channel went (`error` nil: sent, the alert as it was
    /// at `level`), and ends the sender's claim.
    func recordAlertDelivery(id: String, channel: String, error: String?, level: Int, at: Date) async throws
    /// Claims the delivery of an alert to a channel for `owner` until `until`, and returns the
    /// alert as it is now (to send that, not an older copy); nil if it was sent already at its
    /// level, or another owner's claim holds. So two monitors never send one alert to one
    /// channel at once.
    func claimAlertDelivery(id: String, channel: String, owner: String, until: Date, now: Date) async throws
        -> Alert?
    func alert(id: String) async throws -> Alert?
    func alerts(_ filter: AlertFilter) async throws -> [Alert]
    /// Unresolved alerts by type.
    func openAlertCounts() async throws -> [String: Int]

    /// Appends entries to the error log.
    func appendErrors(_ entries: [ErrorEntry]) async throws
    func errors(_ filter: ErrorFilter) async throws -> [ErrorEntry]

    /// Attempts that ended at or after `since`, by provider and model (abandoned ones count only
    /// as possible double charges).
    func attemptOutcomes(since: Date) async throws -> [OutcomeCounts]
    /// Jobs that ended (completed or failed) at or after `since`, by provider and model (of the
    /// route they ended on).
    func jobOutcomes(since: Date) async throws -> [OutcomeCounts]
    /// Jobs with an attempt numbered above `attempts` made at or after `since`, most attempts
    /// first, each with the provider and model of its latest attempt.
    func retriedJobs(moreThan attempts: Int, since: Date, limit: Int) async throws -> [RetriedJob]
    /// Attempts that may have been paid twice, ever, by provider.
    func possibleDoubleCharges() async throws -> [String: Int]
}

extension MonitoringStore {
    public func raiseAlert(_ draft: AlertDraft, coolDown: TimeInterval, now: Date) async throws -> Alert? {
        try await raiseAlert(draft, coolDown: coolDown, now: now, id: nil)
    }
}

/// JSON objects as the store keeps them in a text column.
public enum StoredJSON {
    public static func text(_ value: some Encodable) throws -> String {
        String(decoding: try JSONCoding.encode(value), as: UTF8.self)
    }

    public static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try JSONCoding.decode(type, from: Data(text.utf8))
    }

    /// The object in `text`; an empty one if there is none or it does not read.
    public static func object(_ text: String?) -> [String: JSONValue] {
        guard let text, case .object(let object)? = try? JSONCoding.decode(JSONValue.self, from: Data(text.utf8))
        else { return [:] }
        return object
    }

    public static func deliveries(_ text: String?) -> [String: AlertDeliveryRecord] {
        guard let text else { return [:] }
        return (try? JSONCoding.decode([String: AlertDeliveryRecord].self, from: Data(text.utf8))) ?? [:]
    }
}

extension Alert {
    /// The alert as the API lists it and alert webhooks carry it.
    public var json: [String: JSONValue] {
        func time(_ date: Date?) -> JSONValue { date.map { .string(Timestamp.format($0)) } ?? .null }
        return [
            "id": .string(id), "type": .string(type), "severity": .string(severity.rawValue),
            "state": .string(state.rawValue), "fingerprint": .string(fingerprint), "message": .string(message),
            "details": .object(details), "created_at": time(createdAt), "last_seen_at": time(lastSeenAt),
            "occurrences": .number(Double(occurrences)), "level": .number(Double(level)),
            "resolved_at": time(resolvedAt),
            "acknowledged_at": time(acknowledgedAt),
            "acknowledged_by": acknowledgedBy.map(JSONValue.string) ?? .null,
            "deliveries": .object(
                deliveries.mapValues { record in
                    .object([
                        "attempts": .number(Double(record.attempts)), "sent_at": time(record.sentAt),
                        "last_error": record.lastError.map(JSONValue.string) ?? .null,
                    ])
                }),
        ]
    }
}

extension ErrorEntry {
    /// The entry as the API lists it.
    public var json: [String: JSONValue] {
        [
            "id": .string(id), "level": .string(level.rawValue), "source": .string(source),
            "code": code.map(JSONValue.string) ?? .null, "message": .string(message),
            "generation_id": generationID.map(JSONValue.string) ?? .null, "context": .object(context),
            "at": .string(Timestamp.format(at)),
        ]
    }
}
