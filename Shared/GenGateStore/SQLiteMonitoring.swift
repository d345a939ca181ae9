import Foundation
import GRDB
import GenGateCore

/// Alerts, the error log and the figures of alert rules in SQLite (see `MonitoringStore`).
extension SQLiteStore {
    public func raiseAlert(_ draft: AlertDraft, coolDown: TimeInterval, now: Date, id: String?) async throws
        -> Alert?
    {
        let details = try StoredJSON.text(draft.details)
        return try await batcher.write { db -> Alert? in
            let newest = try Row.fetchOne(
                db, cached: "SELECT id, resolved_at, level FROM alerts WHERE fingerprint = ? ORDER BY id DESC LIMIT 1",
                arguments: [draft.fingerprint])
            if let newest {
                let resolvedAt: Double? = newest["resolved_at"]
                if resolvedAt.map({ $0 > now.timeIntervalSince1970 - coolDown }) ?? true {
                    let known: String = newest["id"]
                    let level: Int = newest["level"]
                    try db.run(
                        sql: """
                            UPDATE alerts SET last_seen_at = MAX(last_seen_at, ?), occurrences = occurrences + 1,
                                resolved_at = NULL,
                                message = ?, details = ?, severity = ?, level = MAX(level, ?)
                            WHERE id = ?
                            """,
                        arguments: [
                            now.timeIntervalSince1970, draft.message, details, draft.severity.rawValue, draft.level,
                            known,
                        ])
                    guard draft.level > level else { return nil }
                    return try Row.fetchOne(db, cached: "SELECT * FROM alerts WHERE id = ?", arguments: [known])
                        .map(Self.decodeAlert)
                }
            }
            let alert = Alert(
                id: id ?? Identifier.make("alt", at: now), type: draft.type, severity: draft.severity,
                fingerprint: draft.fingerprint, message: draft.message, details: draft.details, createdAt: now,
                lastSeenAt: now, occurrences: 1, level: draft.level, resolvedAt: nil, acknowledgedAt: nil,
                acknowledgedBy: nil, deliveries: [:])
            try db.run(
                sql: """
                    INSERT INTO alerts (id, type, severity, fingerprint, message, details, created_at, last_seen_at,
                        occurrences, level, deliveries)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, '{}')
                    """,
                arguments: [
                    alert.id, alert.type, alert.severity.rawValue, alert.fingerprint, alert.message, details,
                    now.timeIntervalSince1970, now.timeIntervalSince1970, alert.level,
                ])
            return alert
        }
    }

    public func resolveAlerts(fingerprints: [String], at: Date) async throws -> Int {
        guard !fingerprints.isEmpty else { return 0 }
        return try await batcher.write { db in
            var count = 0
            for fingerprint in fingerprints {
                try db.run(
                    sql: "UPDATE alerts SET resolved_at = ? WHERE fingerprint = ? AND resolved_at IS NULL",
                    arguments: [at.timeIntervalSince1970, fingerprint])
                count += db.changesCount
            }
            return count
        }
    }

    public func acknowledgeAlert(id: String, by keyID: String, at: Date) async throws -> Alert? {
        try await batcher.write { db in
            try db.run(
                sql: """
                    UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ?
                    WHERE id = ? AND acknowledged_at IS NULL
                    """,
                arguments: [at.timeIntervalSince1970, keyID, id])
            return try Row.fetchOne(db, cached: "SELECT * FROM alerts WHERE id = ?", arguments: [id])
                .map(Self.decodeAlert)
        }
    }

    public func recordAlertDelivery(id: String, channel: String, error: String?, level: Int, at: Date) async throws {
        try await batcher.write { db in
            guard
                let text = try String.fetchOne(
                    db, cached: "SELECT deliveries FROM alerts WHERE id = ?", arguments: [id])
            else { return }
            var deliveries = StoredJSON.deliveries(text)
            deliveries[channel] = AlertDeliveryRecord.after(deliveries[channel], error: error, at: at, level: level)
            try db.run(
                sql: "UPDATE alerts SET deliveries = ? WHERE id = ?",
                arguments: [try StoredJSON.text(deliveries), id])
        }
    }

    public func claimAlertDelivery(id: String, channel: String, owner: String, until: Date, now: Date) async throws
        -> Alert?
    {
        try await batcher.write { db -> Alert? in
            guard
                var alert = try Row.fetchOne(db, cached: "SELECT * FROM alerts WHERE id = ?", arguments: [id])
                    .map(Self.decodeAlert)
            else { return nil }
            guard
                let claimed = AlertDeliveryRecord.claim(
                    alert.deliveries[channel], owner: owner, until: until, now: now, level: alert.level)
            else { return nil }
            alert.deliveries[channel] = claimed
            try db.run(
                sql: "UPDATE alerts SET deliveries = ? WHERE id = ?",
                arguments: [try StoredJSON.text(alert.deliveries), id])
            return alert
        }
    }

    public func alert(id: String) async throws -> Alert? {
        try await pool.read { db in
            try Row.fetchOne(db, cached: "SELECT * FROM alerts WHERE id = ?", arguments: [id]).map(Self.decodeAlert)
        }
    }

    public func alerts(_ filter: AlertFilter) async throws -> [Alert] {
        var conditions: [String] = []
        var arguments: [any DatabaseValueConvertible] = []
        let states = Set(filter.states)
        if states != Set(AlertState.allCases) {
            var either: [String] = []
            if states.contains(.open) { either.append("(resolved_at IS NULL AND acknowledged_at IS NULL)") }
            if states.contains(.acknowledged) {
                either.append("(resolved_at IS NULL AND acknowledged_at IS NOT NULL)")
            }
            if states.contains(.resolved) { either.append("resolved_at IS NOT NULL") }
            conditions.append(either.isEmpty ? "0" : "(" + either.joined(separator: " OR ") + ")")
        }
        let severities = AlertSeverity.allCases.filter { $0 >= filter.minimumSeverity }
        if severities.count < AlertSeverity.allCases.count {
            conditions.append("severity IN (" + severities.map { _ in "?" }.joined(separator: ", ") + ")")
            arguments += severities.map(\.rawValue)
        }
        if let type = filter.type {
            conditions.append("type = ?")
            arguments.append(type)
        }
        if let before = filter.before {
            conditions.append("id < ?")
            arguments.append(before)
        }
        arguments.append(filter.limit)
        let sql =
            "SELECT * FROM alerts" + (conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND "))
            + " ORDER BY id DESC LIMIT ?"
        let bound = StatementArguments(arguments.map(\.databaseValue))
        return try await pool.read { db in try Row.fetchAll(db, sql: sql, arguments: bound).map(Self.decodeAlert) }
    }

    public func openAlertCounts() async throws -> [String: Int] {
        try await pool.read { db in
            var counts: [String: Int] = [:]
            for row in try Row.fetchAll(
                db, cached: "SELECT type, COUNT(*) AS count FROM alerts WHERE resolved_at IS NULL GROUP BY type")
            {
                counts[row["type"]] = row["count"]
            }
            return counts
        }
    }

    static func decodeAlert(_ row: Row) -> Alert {
        Alert(
            id: row["id"], type: row["type"], severity: AlertSeverity(rawValue: row["severity"]) ?? .high,
            fingerprint: row["fingerprint"], message: row["message"], details: StoredJSON.object(row["details"]),
            createdAt: Date(timeIntervalSince1970: row["created_at"]),
            lastSeenAt: Date(timeIntervalSince1970: row["last_seen_at"]), occurrences: row["occurrences"],
            level: row["level"], resolvedAt: (row["resolved_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
            acknowledgedAt: (row["acknowledged_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
            acknowledgedBy: row["acknowledged_by"], deliveries: StoredJSON.deliveries(row["deliveries"]))
    }

    public func appendErrors(_ entries: [ErrorEntry]) async throws {
        guard !entries.isEmpty else { return }
        let rows = try entries.map { ($0, try StoredJSON.text($0.context)) }
        try await batcher.write { db in
            for (entry, context) in rows {
                try db.run(
                    sql: """
                        INSERT OR IGNORE INTO error_log (id, level, source, code, message, generation_id, context, at)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        entry.id, entry.level.rawValue, entry.source, entry.code, entry.message, entry.generationID,
                        context, entry.at.timeIntervalSince1970,
                    ])
            }
        }
    }

    public func errors(_ filter: ErrorFilter) async throws -> [ErrorEntry] {
        var conditions: [String] = []
        var arguments: [any DatabaseValueConvertible] = []
        let levels = ErrorEntry.Level.allCases.filter { $0 >= filter.minimumLevel }
        if levels.count < ErrorEntry.Level.allCases.count {
            conditions.append("level IN (" + levels.map { _ in "?" }.joined(separator: ", ") + ")")
            arguments += levels.map(\.rawValue)
        }
        for (column, value) in [
            ("source", filter.source), ("code", filter.code), ("generation_id", filter.generationID),
        ] {
            if let value {
                conditions.append("\(column) = ?")
                arguments.append(value)
            }
        }
        if let since = filter.since {
            conditions.append("at >= ?")
            arguments.append(since.timeIntervalSince1970)
        }
        if let before = filter.before {
            conditions.append("id < ?")
            arguments.append(before)
        }
        arguments.append(filter.limit)
        let sql =
            "SELECT * FROM error_log" + (conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND "))
            + " ORDER BY id DESC LIMIT ?"
        let bound = StatementArguments(arguments.map(\.databaseValue))
        return try await pool.read { db in
            try Row.fetchAll(db, sql: sql, arguments: bound).map { row in
                ErrorEntry(
                    id: row["id"], level: ErrorEntry.Level(rawValue: row["level"]) ?? .error, source: row["source"],
                    code: row["code"], message: row["message"], generationID: row["generation_id"],
                    context: StoredJSON.object(row["context"]), at: Date(timeIntervalSince1970: row["at"]))
            }
        }
    }

    public func attemptOutcomes(since: Date) async throws -> [OutcomeCounts] {
        try await pool.read { db in
            let rows = try Row.fetchAll(
                db,
                cached: """
                    SELECT provider, COALESCE(model, 'unknown') AS model, state,
                        json_extract(error, '$.code') AS code, COUNT(*) AS count,
                        SUM(possible_double_charge) AS flagged
                    FROM attempts INDEXED BY attempts_finished
                    WHERE finished_at IS NOT NULL AND finished_at >= ?
                    GROUP BY 1, 2, 3, 4
                    """, arguments: [since.timeIntervalSince1970])
            return OutcomeCounts.tally(
                rows.map {
                    .init(
                        provider: $0["provider"], model: $0["model"], state: $0["state"], code: $0["code"],
                        count: $0["count"], flagged: $0["flagged"])
                })
        }
    }

    public func jobOutcomes(since: Date) async throws -> [OutcomeCounts] {
        try await pool.read { db in
            let rows = try Row.fetchAll(
                db,
                cached: """
                    SELECT provider, model, CASE status WHEN 'completed' THEN 'succeeded' ELSE 'failed' END AS state,
                        json_extract(error, '$.code') AS code, COUNT(*) AS count
                    FROM generations INDEXED BY generations_ended
                    WHERE status IN ('completed', 'failed') AND updated_at >= ?
                    GROUP BY 1, 2, 3, 4
                    """, arguments: [since.timeIntervalSince1970])
            return OutcomeCounts.tally(
                rows.map {
                    .init(
                        provider: $0["provider"], model: $0["model"], state: $0["state"], code: $0["code"],
                        count: $0["count"], flagged: 0)
                })
        }
    }

    public func retriedJobs(moreThan attempts: Int, since: Date, limit: Int) async throws -> [RetriedJob] {
        try await pool.read { db in
            // SQLite gives the bare columns of the row holding MAX(number): the latest attempt's.
            try Row.fetchAll(
                db,
                cached: """
                    SELECT a.generation_id, a.provider, COALESCE(a.model, 'unknown') AS model, MAX(a.number) AS attempts,
                        (SELECT json_extract(b.error, '$.code') FROM attempts b
                         WHERE b.generation_id = a.generation_id AND b.error IS NOT NULL
                         ORDER BY b.number DESC LIMIT 1) AS last_error
                    FROM attempts a INDEXED BY attempts_created
                    WHERE a.created_at >= ? AND a.number > ?
                    GROUP BY a.generation_id ORDER BY attempts DESC, a.generation_id LIMIT ?
                    """, arguments: [since.timeIntervalSince1970, attempts, limit]
            ).map { row in
                RetriedJob(
                    generationID: row["generation_id"], provider: row["provider"], model: row["model"],
                    attempts: row["attempts"], lastErrorCode: row["last_error"])
            }
        }
    }
}

extension OutcomeCounts {
    /// One group of attempts as both stores count them.
    public struct Row: Sendable {
        var provider: String
        var model: String
        var state: String
        var code: String?
        var count: Int
        var flagged: Int

        public init(provider: String, model: String, state: String, code: String?, count: Int, flagged: Int) {
            self.provider = provider
            self.model = model
            self.state = state
            self.code = code
            self.count = count
            self.flagged = flagged
        }
    }

    /// Outcomes from groups of attempts by provider, model, state and error code.
    public static func tally(_ rows: [Row]) -> [OutcomeCounts] {
        var byKey: [String: OutcomeCounts] = [:]
        for row in rows {
            let key = row.provider + "\u{0}" + row.model
            var outcome =
                byKey[key]
                ?? OutcomeCounts(provider: row.provider, model: row.model, succeeded: 0, failed: 0, failures: [:])
            switch row.state {
            case Attempt.State.succeeded.rawValue:
                outcome.succeeded += row.count
            case Attempt.State.failed.rawValue:
                outcome.failed += row.count
                outcome.failures[row.code ?? "unknown", default: 0] += row.count
            default:
                break
            }
            outcome.possibleDoubleCharges += row.flagged
            byKey[key] = outcome
        }
        return byKey.values.sorted { ($0.provider, $0.model) < ($1.provider, $1.model) }
    }
}

extension AlertDeliveryRecord {
    /// The record after one more attempt (`error` nil: it was sent, the alert being at `level`).
    public static func after(_ record: AlertDeliveryRecord?, error: String?, at: Date, level: Int)
        -> AlertDeliveryRecord
    {
        var record = record ?? AlertDeliveryRecord(attempts: 0, sentAt: nil, lastError: nil)
        record.attempts += 1
        if let error {
            record.lastError = error
        } else {
            record.sentAt = at
            record.sentLevel = max(record.sentLevel ?? 0, level)
            record.lastError = nil
            record.claimedBy = nil
            record.claimedUntil = nil
        }
        return record
    }

    /// The record claimed by `owner` until `until`, or nil if there is nothing to send (sent at
    /// `level` already) or another owner's claim still holds.
    public static func claim(_ record: AlertDeliveryRecord?, owner: String, until: Date, now: Date, level: Int)
        -> AlertDeliveryRecord?
    {
        var record = record ?? AlertDeliveryRecord(attempts: 0, sentAt: nil, lastError: nil)
        guard record.due(level: level) else { return nil }
        if let holder = record.claimedBy, holder != owner, let until = record.claimedUntil, until > now { return nil }
        record.claimedBy = owner
        record.claimedUntil = until
        return record
    }
}
