import Foundation
import GenGateCore
import GenGateStore
import PostgresNIO

/// Batches and webhook deliveries on PostgreSQL (see `GenerationStore`; each statement mirrors
/// `SQLiteStore`'s).
extension PostgresStore {
    static let terminalList = "('completed', 'failed', 'cancelled')"
    /// The statuses of jobs that take no room in their batch: ended, or waiting for another's output.
    static let roomless = "('completed', 'failed', 'cancelled', 'waiting')"

    // MARK: Batches

    public func insertBatch(
        _ batch: Batch, generations: [Generation], events: [Event], idempotency: IdempotencyKey?
    ) async throws -> InsertOutcome {
        // Held jobs have no due time, and no deadline until released (then their own, from then).
        let heldDeadline = batch.createdAt.addingTimeInterval(400 * 86_400)
        // Jobs waiting for another's output take no room; of the rest, those past the batch's
        // concurrency are held.
        let heldJobs = BatchRoom.held(generations, maxConcurrency: batch.maxConcurrency)
        let rows = try generations.enumerated().map { index, generation in
            var generation = generation
            let held = heldJobs[index]
            if generation.status != .waiting {
                generation.status = .pending
                generation.waitsFor = nil
            }
            generation.version = 1
            generation.progress = 0
            generation.attempts = 0
            generation.priority = batch.priority
            if held { generation.deadlineAt = heldDeadline }
            return try Self.columns(generation, held: held, batch: (batch.id, index))
        }
        let encoded = try EncodedEvent.encode(events)
        let metadata = String(decoding: try JSONCoding.encode(batch.metadata), as: UTF8.self)
        let heldCount = heldJobs.filter { $0 }.count
        return try await write { db -> InsertOutcome in
            if let idempotency,
                let replay = try await Self.idempotent(
                    idempotency, owner: batch.ownerKeyID, id: batch.id, at: batch.createdAt, db: db)
            {
                return replay
            }
            // One reservation for the whole batch: all its jobs fit its key's budgets, or none is made.
            let reserved = generations.compactMap(\.reservedCost)
            let unpriced = generations.lazy.compactMap(\.unpricedModel).first
            if !reserved.isEmpty || unpriced != nil {
                try await Self.reserve(
                    reserved.reduce(0, +), unpriced: unpriced, owner: batch.ownerKeyID, at: batch.createdAt, db: db)
            }
            try await db.run(
                """
                INSERT INTO batches (id, owner_key_id, total, max_concurrency, stop_on_error, priority, metadata,
                    created_at, held_count)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                """,
                [
                    batch.id, batch.ownerKeyID, batch.total, batch.maxConcurrency, batch.stopOnError, batch.priority,
                    metadata, batch.createdAt.timeIntervalSince1970, heldCount,
                ])
            // Many rows a statement (28 parameters each, under PostgreSQL's 65,535).
            for chunk in rows.chunked(500) {
                var values: [any SQLValue] = []
                var tuples: [String] = []
                for columns in chunk {
                    let first = values.count
                    tuples.append("(" + (1...columns.count).map { "$\(first + $0)" }.joined(separator: ", ") + ")")
                    values += columns
                }
                try await db.run(Self.insertColumnsSQL + tuples.joined(separator: ", "), values)
            }
            try await Self.append(encoded, db: db)
            return .inserted
        }
    }

    public func batch(id: String) async throws -> Batch? {
        try await read { db in try await db.row("SELECT * FROM batches WHERE id = $1", [id]).map(Self.decodeBatch) }
    }

    public func batchJobs(id: String, after index: Int, limit: Int) async throws -> [BatchJob] {
        try await read { db in
            try await db.rows(
                """
                SELECT id, batch_index, status, held, error FROM generations
                WHERE batch_id = $1 AND batch_index > $2 ORDER BY batch_index LIMIT $3
                """, [id, index, limit]
            ).map { row in
                BatchJob(
                    index: try row.get("batch_index"), generationID: try row.get("id"),
                    status: GenerationStatus(rawValue: try row.get("status")) ?? .pending, held: try row.get("held"),
                    errorCode: try Self.decodeError(try row.get("error"))?.code.rawValue)
            }
        }
    }

    public func batchCounts(id: String) async throws -> (byStatus: [GenerationStatus: Int], held: Int) {
        try await read { db -> ([GenerationStatus: Int], Int) in
            var counts: [GenerationStatus: Int] = [:]
            var held = 0
            for row in try await db.rows(
                "SELECT status, held, COUNT(*) AS count FROM generations WHERE batch_id = $1 GROUP BY status, held",
                [id])
            {
                let status = GenerationStatus(rawValue: try row.get("status")) ?? .pending
                let count: Int = try row.get("count")
                if try row.get("held", as: Bool.self) && status == .pending {
                    held += count
                } else {
                    counts[status, default: 0] += count
                }
            }
            return (counts, held)
        }
    }

    public func releaseBatchJobs(batchID: String?, now: Date) async throws -> [String] {
        try await write { db -> [String] in
            let batches: [PostgresRandomAccessRow]
            if let batchID {
                batches = try await db.rows(
                    "SELECT id, max_concurrency FROM batches WHERE id = $1 AND held_count > 0 AND stopped_at IS NULL",
                    [batchID])
            } else {
                // Only batches with room: full ones would take the places of those that have some.
                batches = try await db.rows(
                    """
                    SELECT b.id, b.max_concurrency FROM batches b
                    WHERE b.held_count > 0 AND b.stopped_at IS NULL
                      AND (SELECT COUNT(*) FROM generations g
                           WHERE g.batch_id = b.id AND NOT g.held AND g.status NOT IN \(Self.roomless))
                          < b.max_concurrency
                    LIMIT 100
                    """)
            }
            var released: [String] = []
            for batch in batches {
                let id: String = try batch.get("id")
                let window: Int = try batch.get("max_concurrency")
                let open: Int =
                    try await db.row(
                        """
                        SELECT COUNT(*) AS count FROM generations
                        WHERE batch_id = $1 AND NOT held AND status NOT IN \(Self.roomless)
                        """, [id])?.get("count") ?? 0
                guard open < window else { continue }
                let ids: [String] = try await db.rows(
                    """
                    UPDATE generations SET held = FALSE, next_action_at = $1, version = version + 1, updated_at = $1,
                        deadline_at = $1 + COALESCE(deadline_seconds, 1800)
                    WHERE id IN (SELECT id FROM generations WHERE batch_id = $2 AND held AND status = 'pending'
                                 ORDER BY batch_index LIMIT $3)
                    RETURNING id, batch_index
                    """, [now.timeIntervalSince1970, id, window - open]
                ).map { (try $0.get("batch_index", as: Int.self), try $0.get("id", as: String.self)) }
                    .sorted { $0.0 < $1.0 }.map(\.1)
                released += ids
                if ids.count < window - open {
                    // Nothing left to hold back (the rows say so, whatever the count said).
                    try await db.run("UPDATE batches SET held_count = 0 WHERE id = $1", [id])
                } else {
                    try await db.run(
                        "UPDATE batches SET held_count = GREATEST(0, held_count - $1) WHERE id = $2", [ids.count, id])
                }
            }
            return released
        }
    }

    public func stopBatch(id: String, reason: String, at now: Date) async throws -> Int {
        let (why, cancellation) = Batch.stopCancellation(reason: reason)
        let error = String(decoding: try JSONCoding.encode(cancellation), as: UTF8.self)
        return try await write { db -> Int in
            try await db.run(
                """
                UPDATE batches SET stopped_at = COALESCE(stopped_at, $1), stop_reason = COALESCE(stop_reason, $2),
                    held_count = 0
                WHERE id = $3
                """, [now.timeIntervalSince1970, reason, id])
            // Held jobs never started: they end here, each with its event.
            let held: [String] = try await db.rows(
                """
                UPDATE generations SET status = 'cancelled', version = version + 1, updated_at = $1, cancelled_at = $1,
                    error = $2, next_action_at = NULL
                WHERE batch_id = $3 AND held AND status = 'pending'
                RETURNING id, batch_index
                """, [now.timeIntervalSince1970, error, id]
            ).map { (try $0.get("batch_index", as: Int.self), try $0.get("id", as: String.self)) }
                .sorted { $0.0 < $1.0 }.map(\.1)  // their events in the batch's order, as SQLite writes them
            let events = held.map { job in
                Event(.generationCancelled(.init(previousStatus: "pending", reason: why)), generationID: job, at: now)
            }
            try await Self.append(try EncodedEvent.encode(events), db: db)
            return held.count
        }
    }

    public func batchesToStop(limit: Int) async throws -> [String] {
        // Looked for from the failures of the last day (the job's own process stops its batch at
        // once; this is for when it died first), so the look costs nothing as batches pile up.
        let since = Date().addingTimeInterval(-86_400).timeIntervalSince1970
        return try await read { db in
            try await db.rows(
                """
                SELECT DISTINCT b.id FROM generations g JOIN batches b ON b.id = g.batch_id
                WHERE g.batch_id IS NOT NULL AND g.status = 'failed' AND g.updated_at > $1
                  AND b.stop_on_error AND b.stopped_at IS NULL
                LIMIT $2
                """, [since, limit]
            ).map { try $0.get("id") }
        }
    }

    public func unfinishedJobsOfStoppedBatches(limit: Int) async throws -> [String] {
        let since = Date().addingTimeInterval(-7 * 86_400).timeIntervalSince1970
        return try await read { db in
            try await db.rows(
                """
                SELECT g.id FROM batches b
                JOIN generations g ON g.batch_id = b.id AND NOT g.held AND g.status NOT IN \(Self.terminalList)
                WHERE b.stopped_at IS NOT NULL AND b.stopped_at > $1
                LIMIT $2
                """, [since, limit]
            ).map { try $0.get("id") }
        }
    }

    public func batches(ownerKeyID: String, after cursor: String?, limit: Int) async throws -> [Batch] {
        try await read { db in
            try await db.rows(
                """
                SELECT * FROM batches WHERE owner_key_id = $1 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC
                LIMIT $3
                """,
                [ownerKeyID, cursor, limit]
            ).map(Self.decodeBatch)
        }
    }

    static func decodeBatch(_ row: PostgresRandomAccessRow) throws -> Batch {
        Batch(
            id: try row.get("id"), ownerKeyID: try row.get("owner_key_id"), total: try row.get("total"),
            maxConcurrency: try row.get("max_concurrency"), stopOnError: try row.get("stop_on_error"),
            priority: try row.get("priority"),
            metadata: try JSONCoding.decode(
                [String: JSONValue].self, from: Data(try row.get("metadata", as: String.self).utf8)),
            createdAt: Date(timeIntervalSince1970: try row.get("created_at")), stoppedAt: try row.date("stopped_at"),
            stopReason: try row.get("stop_reason"))
    }

    // MARK: Webhooks

    public func webhookSecrets(keyID: String) async throws -> WebhookSecrets? {
        try await read { db in try await Self.fetchSecrets(keyID: keyID, db: db) }
    }

    public func createWebhookSecret(keyID: String, sealed: Data, at: Date) async throws -> WebhookSecrets {
        try await write { db in
            try await db.run(
                "INSERT INTO webhook_secrets (key_id, sealed, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                [keyID, sealed, at.timeIntervalSince1970])
            guard let secrets = try await Self.fetchSecrets(keyID: keyID, db: db) else {
                throw StoreError.schemaMismatch("webhook_secrets lost a row it just wrote")
            }
            return secrets
        }
    }

    public func rotateWebhookSecret(keyID: String, sealed: Data, previousUntil: Date, at: Date) async throws
        -> WebhookSecrets
    {
        try await write { db in
            try await db.run(
                """
                INSERT INTO webhook_secrets (key_id, sealed, created_at) VALUES ($1, $2, $3)
                ON CONFLICT (key_id) DO UPDATE SET previous = webhook_secrets.sealed, previous_until = $4,
                    sealed = excluded.sealed, created_at = excluded.created_at
                """, [keyID, sealed, at.timeIntervalSince1970, previousUntil.timeIntervalSince1970])
            guard let secrets = try await Self.fetchSecrets(keyID: keyID, db: db) else {
                throw StoreError.schemaMismatch("webhook_secrets lost a row it just wrote")
            }
            return secrets
        }
    }

    static func fetchSecrets(keyID: String, db: PostgresConnection) async throws -> WebhookSecrets? {
        guard let row = try await db.row("SELECT * FROM webhook_secrets WHERE key_id = $1", [keyID]) else {
            return nil
        }
        return WebhookSecrets(
            sealed: try row.get("sealed"), previous: try row.get("previous"),
            previousUntil: try row.date("previous_until"),
            createdAt: Date(timeIntervalSince1970: try row.get("created_at")))
    }

    public func claimWebhookDeliveries(owner: String, leaseUntil: Date, now: Date, limit: Int) async throws
        -> [WebhookDelivery]
    {
        // Looked for first with a read, asking what the claim asks (a delivery waiting behind its
        // job's earlier one is not due): most looks find nothing, and a write queues for the lock.
        let claimable = """
            SELECT d.id FROM webhook_deliveries d
            WHERE d.state = 'pending' AND d.next_attempt_at <= $1
              AND (d.lease_owner IS NULL OR d.lease_expires_at < $1)
              AND NOT EXISTS (
                  SELECT 1 FROM webhook_deliveries e
                  WHERE e.generation_id = d.generation_id AND e.event_seq < d.event_seq AND e.state = 'pending')
            ORDER BY d.next_attempt_at LIMIT $2
            """
        let at = now.timeIntervalSince1970
        let due = try await read { db in try await db.row(claimable, [at, 1]) != nil }
        guard due else { return [] }
        return try await write { db -> [WebhookDelivery] in
            try await db.rows(
                """
                UPDATE webhook_deliveries SET lease_owner = $3, lease_expires_at = $4
                WHERE id IN (\(claimable) FOR UPDATE SKIP LOCKED)
                RETURNING *
                """, [at, limit, owner, leaseUntil.timeIntervalSince1970]
            ).map(Self.decodeDelivery).sorted {
                ($0.nextAttemptAt ?? .distantPast, $0.eventSeq) < ($1.nextAttemptAt ?? .distantPast, $1.eventSeq)
            }
        }
    }

    public func recordWebhookAttempt(_ outcome: WebhookOutcome) async throws -> Bool {
        try await write { db -> Bool in
            let attempt = outcome.attempt
            let changed = try await db.changes(
                """
                UPDATE webhook_deliveries SET attempts = attempts + 1, state = $1, next_attempt_at = $2,
                    lease_owner = NULL, lease_expires_at = NULL, body = COALESCE(body, $3),
                    delivered_at = CASE WHEN $1 = 'delivered' THEN $4 ELSE delivered_at END
                WHERE id = $5 AND lease_owner = $6
                """,
                [
                    outcome.state.rawValue, outcome.nextAttemptAt?.timeIntervalSince1970, outcome.body,
                    attempt.at.timeIntervalSince1970, outcome.deliveryID, outcome.owner,
                ])
            guard changed == 1 else { return false }
            try await db.run(
                """
                INSERT INTO webhook_attempts (delivery_id, number, at, status_code, error, duration_ms)
                VALUES ($1, (SELECT COALESCE(MAX(number), 0) + 1 FROM webhook_attempts WHERE delivery_id = $1), $2, $3,
                    $4, $5)
                """,
                [
                    outcome.deliveryID, attempt.at.timeIntervalSince1970, attempt.statusCode, attempt.error,
                    attempt.durationMs,
                ])
            return true
        }
    }

    public func webhookDeliveries(generationID: String) async throws -> [WebhookDelivery] {
        try await read { db in
            var deliveries = try await db.rows(
                "SELECT * FROM webhook_deliveries WHERE generation_id = $1 ORDER BY event_seq", [generationID]
            ).map(Self.decodeDelivery)
            for index in deliveries.indices {
                deliveries[index].history = try await db.rows(
                    "SELECT * FROM webhook_attempts WHERE delivery_id = $1 ORDER BY number", [deliveries[index].id]
                ).map { row in
                    WebhookAttempt(
                        number: try row.get("number"), at: Date(timeIntervalSince1970: try row.get("at")),
                        statusCode: try row.get("status_code"), error: try row.get("error"),
                        durationMs: try row.get("duration_ms"))
                }
            }
            return deliveries
        }
    }

    public func redeliverWebhook(id: String, generationID: String, now: Date) async throws -> Bool {
        try await write { db in
            try await db.changes(
                """
                UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $1, attempts = 0,
                    lease_owner = CASE WHEN state = 'pending' THEN lease_owner END,
                    lease_expires_at = CASE WHEN state = 'pending' THEN lease_expires_at END
                WHERE id = $2 AND generation_id = $3
                """, [now.timeIntervalSince1970, id, generationID]) == 1
        }
    }

    static func decodeDelivery(_ row: PostgresRandomAccessRow) throws -> WebhookDelivery {
        let type: String = try row.get("event_type")
        let state: String = try row.get("state")
        guard let eventType = EventType(rawValue: type), let deliveryState = WebhookDelivery.State(rawValue: state)
        else {
            throw StoreError.schemaMismatch(
                "webhook delivery \(try row.get("id", as: String.self)) has type \(type), state \(state)")
        }
        return WebhookDelivery(
            id: try row.get("id"), generationID: try row.get("generation_id"), ownerKeyID: try row.get("owner_key_id"),
            eventSeq: try row.get("event_seq"), eventType: eventType, url: try row.get("url"), state: deliveryState,
            attempts: try row.get("attempts"), nextAttemptAt: try row.date("next_attempt_at"),
            body: try row.get("body"), createdAt: Date(timeIntervalSince1970: try row.get("created_at")),
            deliveredAt: try row.date("delivered_at"))
    }
}
