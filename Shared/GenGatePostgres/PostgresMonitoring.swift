import Foundation
import GenGateCore
import GenGateStore
import PostgresNIO

/// Alerts, the error log and the figures of alert rules in PostgreSQL (see `MonitoringStore`).
/// Writes hold the writer lock, so two monitors never raise one incident twice.
extension PostgresStore {
    public func raiseAlert(_ draft: AlertDraft, coolDown: TimeInterval, now: Date, id: String?) async throws
        -> Alert?
    {
        let details = try StoredJSON.text(draft.details)
        return try await write { db -> Alert? in
            if let newest = try await db.row(
                "SELECT id, resolved_at, level FROM alerts WHERE fingerprint = $1 ORDER BY id DESC LIMIT 1",
                [draft.fingerprint])
            {
                let resolvedAt = try newest.get("resolved_at", as: Double?.self)
                if resolvedAt.map({ $0 > now.timeIntervalSince1970 - coolDown }) ?? true {
                    let known = try newest.get("id", as: String.self)
                    let level = try newest.get("level", as: Int.self)
                    try await db.run(
                        """
                        UPDATE alerts SET last_seen_at = GREATEST(last_seen_at, $1), occurrences = occurrences + 1,
                            resolved_at = NULL,
                            message = $2, details = $3, severity = $4, level = GREATEST(level, $5)
                        WHERE id = $6
                        """,
                        [
                            now.timeIntervalSince1970, draft.message, details, draft.severity.rawValue, draft.level,
                            known,
                        ])
                    guard draft.level > level else { return nil }
                    return try await db.row("SELECT * FROM alerts WHERE id = $1", [known]).map(Self.decodeAlert)
                }
            }
            let alert = Alert(
                id: id ?? Identifier.make("alt", at: now), type: draft.type, severity: draft.severity,
                fingerprint: draft.fingerprint, message: draft.message, details: draft.details, createdAt: now,
                lastSeenAt: now, occurrences: 1, level: draft.level, resolvedAt: nil, acknowledgedAt: nil,
                acknowledgedBy: nil, deliveries: [:])
            try await db.run(
                """
                INSERT INTO alerts (id, type, severity, fingerprint, message, details, created_at, last_seen_at,
                    occurrences, level, deliveries)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 1, $8, '{}')
                """,
                [
                    alert.id, alert.type, alert.severity.rawValue, alert.fingerprint, alert.message, details,
                    now.timeIntervalSince1970, alert.level,
                ])
            return alert
        }
    }

    public func resolveAlerts(fingerprints: [String], at: Date) async throws -> Int {
        guard !fingerprints.isEmpty else { return 0 }
        return try await write { db in
            try await db.changes(
                "UPDATE alerts SET resolved_at = $1 WHERE fingerprint = ANY($2) AND resolved_at IS NULL",
                [at.timeIntervalSince1970, fingerprints])
        }
    }

    public func acknowledgeAlert(id: String, by keyID: String, at: Date) async throws -> Alert? {
        try await write { db in
            try await db.run(
                "UPDATE alerts SET acknowledged_at = $1, acknowledged_by = $2 WHERE id = $3 AND acknowledged_at IS NULL",
                [at.timeIntervalSince1970, keyID, id])
            return try await db.row("SELECT * FROM alerts WHERE id = $1", [id]).map(Self.decodeAlert)
        }
    }

    public func recordAlertDelivery(id: String, channel: String, error: String?, level: Int, at: Date) async throws {
        try await write { db in
            guard let row = try await db.row("SELECT deliveries FROM alerts WHERE id = $1 FOR UPDATE", [id]) else {
                return
            }
            var deliveries = StoredJSON.deliveries(try row.get("deliveries", as: String.self))
            deliveries[channel] = AlertDeliveryRecord.after(deliveries[channel], error: error, at: at, level: level)
            try await db.run(
                "UPDATE alerts SET deliveries = $1 WHERE id = $2", [try StoredJSON.text(deliveries), id])
        }
    }

    public func claimAlertDelivery(id: String, channel: String, owner: String, until: Date, now: Date) async throws
        -> Alert?
    {
        try await write { db -> Alert? in
            guard
                var alert = try await db.row("SELECT * FROM alerts WHERE id = $1 FOR UPDATE", [id]).map(
                    Self.decodeAlert)
            else { return nil }
            guard
                let claimed = AlertDeliveryRecord.claim(
                    alert.deliveries[channel], owner: owner, until: until, now: now, level: alert.level)
            else { return nil }
            alert.deliveries[channel] = claimed
            try await db.run(
                "UPDATE alerts SET deliveries = $1 WHERE id = $2", [try StoredJSON.text(alert.deliveries), id])
            return alert
        }
    }

    public func alert(id: String) async throws -> Alert? {
        try await read { db in try await db.row("SELECT * FROM alerts WHERE id = $1", [id]).map(Self.decodeAlert) }
    }

    public func alerts(_ filter: AlertFilter) async throws -> [Alert] {
        var conditions: [String] = []
        var values: [any SQLValue] = []
        if filter.states != Set(AlertState.allCases) {
            var either: [String] = []
            if filter.states.contains(.open) { either.append("(resolved_at IS NULL AND acknowledged_at IS NULL)") }
            if filter.states.contains(.acknowledged) {
                either.append("(resolved_at IS NULL AND acknowledged_at IS NOT NULL)")
            }
            if filter.states.contains(.resolved) { either.append("resolved_at IS NOT NULL") }
            conditions.append(either.isEmpty ? "FALSE" : "(" + either.joined(separator: " OR ") + ")")
        }
        values.append(AlertSeverity.allCases.filter { $0 >= filter.minimumSeverity }.map(\.rawValue))
        conditions.append("severity = ANY($\(values.count))")
        if let type = filter.type {
            values.append(type)
            conditions.append("type = $\(values.count)")
        }
        if let before = filter.before {
            values.append(before)
            conditions.append("id < $\(values.count)")
        }
        values.append(filter.limit)
        let sql =
            "SELECT * FROM alerts WHERE " + conditions.joined(separator: " AND ")
            + " ORDER BY id DESC LIMIT $\(values.count)"
        let bound = values
        return try await read { db in try await db.rows(sql, bound).map(Self.decodeAlert) }
    }

    public func openAlertCounts() async throws -> [String: Int] {
        try await read { db in
            var counts: [String: Int] = [:]
            for row in try await db.rows(
                "SELECT type, COUNT(*) AS count FROM alerts WHERE resolved_at IS NULL GROUP BY type")
            {
                counts[try row.get("type")] = try row.get("count")
            }
            return counts
        }
    }

    static func decodeAlert(_ row: PostgresRandomAccessRow) throws -> Alert {
        Alert(
            id: try row.get("id"), type: try row.get("type"),
            severity: AlertSeverity(rawValue: try row.get("severity")) ?? .high,
            fingerprint: try row.get("fingerprint"), message: try row.get("message"),
            details: StoredJSON.object(try row.get("details", as: String.self)),
            createdAt: Date(timeIntervalSince1970: try row.get("created_at")),
            lastSeenAt: Date(timeIntervalSince1970: try row.get("last_seen_at")),
            occurrences: try row.get("occurrences"), level: try row.get("level"),
            resolvedAt: try row.date("resolved_at"),
            acknowledgedAt: try row.date("acknowledged_at"), acknowledgedBy: try row.get("acknowledged_by"),
            deliveries: StoredJSON.deliveries(try row.get("deliveries", as: String.self)))
    }

    public func appendErrors(_ entries: [ErrorEntry]) async throws {
        guard !entries.isEmpty else { return }
        let contexts = try entries.map { try StoredJSON.text($0.context) }
        // One statement for the batch: the writer lock is held for one round trip, not one a row.
        let ids = entries.map(\.id)
        let levels = entries.map(\.level.rawValue)
        let sources = entries.map(\.source)
        let codes = entries.map { $0.code ?? "" }
        let messages = entries.map(\.message)
        let generations = entries.map { $0.generationID ?? "" }
        let times = entries.map { String($0.at.timeIntervalSince1970) }
        try await write { db in
            try await db.run(
                """
                INSERT INTO error_log (id, level, source, code, message, generation_id, context, at)
                SELECT id, level, source, NULLIF(code, ''), message, NULLIF(generation_id, ''), context, at::DOUBLE PRECISION
                FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[])
                    AS e(id, level, source, code, message, generation_id, context, at)
                ON CONFLICT DO NOTHING
                """, [ids, levels, sources, codes, messages, generations, contexts, times])
        }
    }

    public func errors(_ filter: ErrorFilter) async throws -> [ErrorEntry] {
        var conditions: [String] = []
        var values: [any SQLValue] = []
        values.append(ErrorEntry.Level.allCases.filter { $0 >= filter.minimumLevel }.map(\.rawValue))
        conditions.append("level = ANY($\(values.count))")
        for (column, value) in [
            ("source", filter.source), ("code", filter.code), ("generation_id", filter.generationID),
        ] {
            if let value {
                values.append(value)
                conditions.append("\(column) = $\(values.count)")
            }
        }
        if let since = filter.since {
            values.append(since.timeIntervalSince1970)
            conditions.append("at >= $\(values.count)")
        }
        if let before = filter.before {
            values.append(before)
            conditions.append("id < $\(values.count)")
        }
        values.append(filter.limit)
        let sql =
            "SELECT * FROM error_log WHERE " + conditions.joined(separator: " AND ")
            + " ORDER BY id DESC LIMIT $\(values.count)"
        let bound = values
        return try await read { db in
            try await db.rows(sql, bound).map { row in
                ErrorEntry(
                    id: try row.get("id"), level: ErrorEntry.Level(rawValue: try row.get("level")) ?? .error,
                    source: try row.get("source"), code: try row.get("code"), message: try row.get("message"),
                    generationID: try row.get("generation_id"),
                    context: StoredJSON.object(try row.get("context", as: String.self)),
                    at: Date(timeIntervalSince1970: try row.get("at")))
            }
        }
    }

    public func attemptOutcomes(since: Date) async throws -> [OutcomeCounts] {
        try await read { db in
            let rows = try await db.rows(
                """
                SELECT provider, COALESCE(model, 'unknown') AS model, state,
                    (error::json) ->> 'code' AS code, COUNT(*) AS count,
                    COUNT(*) FILTER (WHERE possible_double_charge) AS flagged
                FROM attempts
                WHERE finished_at IS NOT NULL AND finished_at >= $1
                GROUP BY 1, 2, 3, 4
                """, [since.timeIntervalSince1970])
            return OutcomeCounts.tally(
                try rows.map {
                    .init(
                        provider: try $0.get("provider"), model: try $0.get("model"), state: try $0.get("state"),
                        code: try $0.get("code", as: String?.self), count: try $0.get("count"),
                        flagged: try $0.get("flagged"))
                })
        }
    }

    public func jobOutcomes(since: Date) async throws -> [OutcomeCounts] {
        try await read { db in
            let rows = try await db.rows(
                """
                SELECT provider, model, CASE status WHEN 'completed' THEN 'succeeded' ELSE 'failed' END AS state,
                    (error::json) ->> 'code' AS code, COUNT(*) AS count
                FROM generations
                WHERE status IN ('completed', 'failed') AND updated_at >= $1
                GROUP BY 1, 2, 3, 4
                """, [since.timeIntervalSince1970])
            return OutcomeCounts.tally(
                try rows.map {
                    .init(
                        provider: try $0.get("provider"), model: try $0.get("model"), state: try $0.get("state"),
                        code: try $0.get("code", as: String?.self), count: try $0.get("count"), flagged: 0)
                })
        }
    }

    public func retriedJobs(moreThan attempts: Int, since: Date, limit: Int) async throws -> [RetriedJob] {
        try await read { db in
            try await db.rows(
                """
                SELECT * FROM (
                    SELECT DISTINCT ON (a.generation_id) a.generation_id, a.provider,
                        COALESCE(a.model, 'unknown') AS model, a.number AS attempts,
                        (SELECT (b.error::json) ->> 'code' FROM attempts b
                         WHERE b.generation_id = a.generation_id AND b.error IS NOT NULL
                         ORDER BY b.number DESC LIMIT 1) AS last_error
                    FROM attempts a
                    WHERE a.created_at >= $1 AND a.number > $2
                    ORDER BY a.generation_id, a.number DESC
                ) latest
                ORDER BY attempts DESC, generation_id LIMIT $3
                """, [since.timeIntervalSince1970, attempts, limit]
            ).map { row in
                RetriedJob(
                    generationID: try row.get("generation_id"), provider: try row.get("provider"),
                    model: try row.get("model"), attempts: try row.get("attempts"),
                    lastErrorCode: try row.get("last_error"))
            }
        }
    }
}
