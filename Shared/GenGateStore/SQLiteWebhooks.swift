import Foundation
import GRDB
import GenGateCore

/// Webhook secrets and deliveries in SQLite (see `GenerationStore`).
extension SQLiteStore {
    /// In the transaction that appends the event: a delivery of it, if its job has a webhook
    /// that wants this kind of event.
    static func makeWebhookDelivery(
        _ webhook: (event: WebhookEvent, deliveryID: String), of event: EncodedEvent, seq: Int64, db: Database
    ) throws {
        try db.run(
            sql: """
                INSERT INTO webhook_deliveries
                    (id, generation_id, owner_key_id, event_seq, event_type, url, state, attempts, next_attempt_at, created_at)
                SELECT ?, id, owner_key_id, ?, ?, json_extract(request, '$.webhook'), 'pending', 0, ?, ?
                FROM generations
                WHERE id = ? AND json_extract(request, '$.webhook') IS NOT NULL
                  AND EXISTS (SELECT 1 FROM json_each(generations.request, '$.webhook_events') WHERE value = ?)
                """,
            arguments: [
                webhook.deliveryID, seq, event.type, event.at, event.at, event.generationID,
                webhook.event.rawValue,
            ])
    }

    public func webhookSecrets(keyID: String) async throws -> WebhookSecrets? {
        try await pool.read { db in try Self.fetchSecrets(keyID: keyID, db: db) }
    }

    public func createWebhookSecret(keyID: String, sealed: Data, at: Date) async throws -> WebhookSecrets {
        try await batcher.write { db in
            try db.run(
                sql: "INSERT OR IGNORE INTO webhook_secrets (key_id, sealed, created_at) VALUES (?, ?, ?)",
                arguments: [keyID, sealed, at.timeIntervalSince1970])
            guard let secrets = try Self.fetchSecrets(keyID: keyID, db: db) else {
                throw StoreError.schemaMismatch("webhook_secrets lost a row it just wrote")
            }
            return secrets
        }
    }

    public func rotateWebhookSecret(keyID: String, sealed: Data, previousUntil: Date, at: Date) async throws
        -> WebhookSecrets
    {
        try await batcher.write { db in
            try db.run(
                sql: """
                    INSERT INTO webhook_secrets (key_id, sealed, created_at) VALUES (?, ?, ?)
                    ON CONFLICT (key_id) DO UPDATE SET previous = sealed, previous_until = ?,
                        sealed = excluded.sealed, created_at = excluded.created_at
                    """,
                arguments: [keyID, sealed, at.timeIntervalSince1970, previousUntil.timeIntervalSince1970])
            guard let secrets = try Self.fetchSecrets(keyID: keyID, db: db) else {
                throw StoreError.schemaMismatch("webhook_secrets lost a row it just wrote")
            }
            return secrets
        }
    }

    static func fetchSecrets(keyID: String, db: Database) throws -> WebhookSecrets? {
        try Row.fetchOne(db, cached: "SELECT * FROM webhook_secrets WHERE key_id = ?", arguments: [keyID]).map {
            WebhookSecrets(
                sealed: $0["sealed"], previous: $0["previous"],
                previousUntil: ($0["previous_until"] as Double?).map(Date.init(timeIntervalSince1970:)),
                createdAt: Date(timeIntervalSince1970: $0["created_at"]))
        }
    }

    public func claimWebhookDeliveries(owner: String, leaseUntil: Date, now: Date, limit: Int) async throws
        -> [WebhookDelivery]
    {
        // Looked for first with a read, asking what the claim asks (a delivery waiting behind its
        // job's earlier one is not due): most looks find nothing, and a write queues for the lock.
        let claimable = """
            SELECT d.id FROM webhook_deliveries d INDEXED BY webhook_deliveries_due
            WHERE d.state = 'pending' AND d.next_attempt_at <= ?
              AND (d.lease_owner IS NULL OR d.lease_expires_at < ?)
              AND NOT EXISTS (
                  SELECT 1 FROM webhook_deliveries e INDEXED BY webhook_deliveries_generation
                  WHERE e.generation_id = d.generation_id AND e.event_seq < d.event_seq AND e.state = 'pending')
            ORDER BY d.next_attempt_at LIMIT ?
            """
        let at = now.timeIntervalSince1970
        let due = try await pool.read { db in
            try String.fetchOne(db, cached: claimable, arguments: [at, at, 1]) != nil
        }
        guard due else { return [] }
        return try await batcher.write { db in
            let ids = try String.fetchAll(db, cached: claimable, arguments: [at, at, limit])
            guard !ids.isEmpty else { return [] }
            let marks = databaseQuestionMarks(count: ids.count)
            try db.run(
                sql: "UPDATE webhook_deliveries SET lease_owner = ?, lease_expires_at = ? WHERE id IN (\(marks))",
                arguments: StatementArguments([owner, leaseUntil.timeIntervalSince1970] as [DatabaseValueConvertible])
                    + StatementArguments(ids))
            return try Row.fetchAll(
                db, sql: "SELECT * FROM webhook_deliveries WHERE id IN (\(marks)) ORDER BY next_attempt_at",
                arguments: StatementArguments(ids)
            ).map(Self.decodeDelivery)
        }
    }

    public func recordWebhookAttempt(_ outcome: WebhookOutcome) async throws -> Bool {
        try await batcher.write { db in
            let attempt = outcome.attempt
            try db.run(
                sql: """
                    UPDATE webhook_deliveries SET attempts = attempts + 1, state = ?, next_attempt_at = ?,
                        lease_owner = NULL, lease_expires_at = NULL, body = COALESCE(body, ?),
                        delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END
                    WHERE id = ? AND lease_owner = ?
                    """,
                arguments: [
                    outcome.state.rawValue, outcome.nextAttemptAt?.timeIntervalSince1970, outcome.body,
                    outcome.state.rawValue, attempt.at.timeIntervalSince1970, outcome.deliveryID, outcome.owner,
                ])
            guard db.changesCount == 1 else { return false }
            try db.run(
                sql: """
                    INSERT INTO webhook_attempts (delivery_id, number, at, status_code, error, duration_ms)
                    VALUES (?, (SELECT COALESCE(MAX(number), 0) + 1 FROM webhook_attempts WHERE delivery_id = ?), ?, ?, ?, ?)
                    """,
                arguments: [
                    outcome.deliveryID, outcome.deliveryID, attempt.at.timeIntervalSince1970, attempt.statusCode,
                    attempt.error, attempt.durationMs,
                ])
            return true
        }
    }

    public func webhookDeliveries(generationID: String) async throws -> [WebhookDelivery] {
        try await pool.read { db in
            var deliveries = try Row.fetchAll(
                db, cached: "SELECT * FROM webhook_deliveries WHERE generation_id = ? ORDER BY event_seq",
                arguments: [generationID]
            ).map(Self.decodeDelivery)
            for index in deliveries.indices {
                deliveries[index].history = try Row.fetchAll(
                    db, cached: "SELECT * FROM webhook_attempts WHERE delivery_id = ? ORDER BY number",
                    arguments: [deliveries[index].id]
                ).map { row in
                    WebhookAttempt(
                        number: row["number"], at: Date(timeIntervalSince1970: row["at"]),
                        statusCode: row["status_code"], error: row["error"], durationMs: row["duration_ms"])
                }
            }
            return deliveries
        }
    }

    public func redeliverWebhook(id: String, generationID: String, now: Date) async throws -> Bool {
        try await batcher.write { db in
            try db.run(
                sql: """
                    UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = ?, attempts = 0,
                        lease_owner = CASE WHEN state = 'pending' THEN lease_owner END,
                        lease_expires_at = CASE WHEN state = 'pending' THEN lease_expires_at END
                    WHERE id = ? AND generation_id = ?
                    """, arguments: [now.timeIntervalSince1970, id, generationID])
            return db.changesCount == 1
        }
    }

    static func decodeDelivery(_ row: Row) throws -> WebhookDelivery {
        let type: String = row["event_type"]
        let state: String = row["state"]
        guard let eventType = EventType(rawValue: type), let deliveryState = WebhookDelivery.State(rawValue: state)
        else {
            throw StoreError.schemaMismatch("webhook delivery \(row["id"] as String) has type \(type), state \(state)")
        }
        return WebhookDelivery(
            id: row["id"], generationID: row["generation_id"], ownerKeyID: row["owner_key_id"],
            eventSeq: row["event_seq"], eventType: eventType, url: row["url"], state: deliveryState,
            attempts: row["attempts"],
            nextAttemptAt: (row["next_attempt_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
            body: row["body"], createdAt: Date(timeIntervalSince1970: row["created_at"]),
            deliveredAt: (row["delivered_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
    }
}
