import Foundation
import GRDB
import GenGateCore

/// Batches in SQLite (see `GenerationStore`).
extension SQLiteStore {
    static let terminalList = SQLiteSchema.terminalList
    /// Jobs that take room in their batch: not ended, nor waiting for another's output (the
    /// terms as `generations_batch_open` has them, so SQLite sees that the index applies).
    static let takingRoom = "status NOT IN \(SQLiteSchema.terminalList) AND status != 'waiting'"

    public func insertBatch(
        _ batch: Batch, generations: [Generation], events: [Event], idempotency: IdempotencyKey?
    ) async throws -> InsertOutcome {
        let rows = try generations.map { generation in
            (
                generation,
                String(decoding: try JSONCoding.encode(generation.request), as: UTF8.self),
                generation.route.isEmpty
                    ? nil : String(decoding: try JSONCoding.encode(generation.route), as: UTF8.self)
            )
        }
        let encoded = try EncodedEvent.encode(events)
        let metadata = String(decoding: try JSONCoding.encode(batch.metadata), as: UTF8.self)
        // Jobs waiting for another's output take no room; of the rest, those past the batch's
        // concurrency are held.
        let held = BatchRoom.held(generations, maxConcurrency: batch.maxConcurrency)
        let heldCount = held.filter { $0 }.count
        // Held jobs have no due time, and no deadline until released (then their own, from then).
        let heldDeadline = batch.createdAt.addingTimeInterval(400 * 86_400).timeIntervalSince1970
        return try await batcher.write { db -> InsertOutcome in
            if let idempotency,
                let replay = try Self.idempotent(
                    idempotency, owner: batch.ownerKeyID, id: batch.id, at: batch.createdAt, db: db)
            {
                return replay
            }
            // One reservation for the whole batch: all its jobs fit its key's budgets, or none is made.
            let reserved = generations.compactMap(\.reservedCost)
            let unpriced = generations.lazy.compactMap(\.unpricedModel).first
            if !reserved.isEmpty || unpriced != nil {
                try Self.reserve(
                    reserved.reduce(0, +), unpriced: unpriced, owner: batch.ownerKeyID, at: batch.createdAt, db: db)
            }
            try db.run(
                sql: """
                    INSERT INTO batches (id, owner_key_id, total, max_concurrency, stop_on_error, priority, metadata,
                        created_at, held_count)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    batch.id, batch.ownerKeyID, batch.total, batch.maxConcurrency, batch.stopOnError, batch.priority,
                    metadata, batch.createdAt.timeIntervalSince1970, heldCount,
                ])
            for (index, row) in rows.enumerated() {
                let (generation, request, route) = row
                let held = held[index]
                let waiting = generation.status == .waiting
                try db.run(
                    sql: """
                        INSERT INTO generations (id, owner_key_id, model, provider, request, n, status, version, progress,
                            attempts, next_action_at, deadline_at, created_at, updated_at, route, route_index, batch_id,
                            batch_index, held, priority, waits_for, reserved_cost, experiment_id, experiment_variant)
                        VALUES (?, ?, ?, ?, ?, ?, ?, 1, 0, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        generation.id, generation.ownerKeyID, generation.request.model, generation.provider, request,
                        generation.request.n, waiting ? "waiting" : "pending",
                        held || waiting ? nil : generation.nextActionAt?.timeIntervalSince1970,
                        held ? heldDeadline : generation.deadlineAt.timeIntervalSince1970,
                        generation.createdAt.timeIntervalSince1970, generation.updatedAt.timeIntervalSince1970, route,
                        generation.routeIndex, batch.id, index, held, batch.priority,
                        waiting ? generation.waitsFor : nil, generation.reservedCost,
                        generation.experiment?.experimentID, generation.experiment?.variant,
                    ])
            }
            try Self.append(encoded, db: db)
            return .inserted
        }
    }

    public func batch(id: String) async throws -> Batch? {
        try await pool.read { db in
            try Row.fetchOne(db, cached: "SELECT * FROM batches WHERE id = ?", arguments: [id]).map(Self.decodeBatch)
        }
    }

    public func batchJobs(id: String, after index: Int, limit: Int) async throws -> [BatchJob] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                cached: """
                    SELECT id, batch_index, status, held, error FROM generations INDEXED BY generations_batch
                    WHERE batch_id = ? AND batch_index > ? ORDER BY batch_index LIMIT ?
                    """, arguments: [id, index, limit]
            ).map { row in
                let status: String = row["status"]
                let error = try Self.decodeError(row["error"])
                return BatchJob(
                    index: row["batch_index"], generationID: row["id"],
                    status: GenerationStatus(rawValue: status) ?? .pending, held: row["held"],
                    errorCode: error?.code.rawValue)
            }
        }
    }

    public func batchCounts(id: String) async throws -> (byStatus: [GenerationStatus: Int], held: Int) {
        try await pool.read { db in
            var counts: [GenerationStatus: Int] = [:]
            var held = 0
            for row in try Row.fetchAll(
                db,
                cached: """
                    SELECT status, held, COUNT(*) AS count FROM generations INDEXED BY generations_batch
                    WHERE batch_id = ? GROUP BY status, held
                    """, arguments: [id])
            {
                let status = GenerationStatus(rawValue: row["status"]) ?? .pending
                let count: Int = row["count"]
                if row["held"] == true && status == .pending {
                    held += count
                } else {
                    counts[status, default: 0] += count
                }
            }
            return (counts, held)
        }
    }

    public func releaseBatchJobs(batchID: String?, now: Date) async throws -> [String] {
        try await batcher.write { db in
            let batches: [Row]
            if let batchID {
                batches = try Row.fetchAll(
                    db,
                    cached:
                        "SELECT id, max_concurrency FROM batches WHERE id = ? AND held_count > 0 AND stopped_at IS NULL",
                    arguments: [batchID])
            } else {
                // Only batches with room: full ones would take the places of those that have some.
                batches = try Row.fetchAll(
                    db,
                    cached: """
                        SELECT b.id, b.max_concurrency FROM batches b INDEXED BY batches_holding
                        WHERE b.held_count > 0 AND b.stopped_at IS NULL
                          AND (SELECT COUNT(*) FROM generations g INDEXED BY generations_batch_open
                               WHERE g.batch_id = b.id AND g.held = 0 AND g.status NOT IN \(Self.terminalList)
                                 AND g.status != 'waiting')
                              < b.max_concurrency
                        LIMIT 100
                        """)
            }
            var released: [String] = []
            for batch in batches {
                let id: String = batch["id"]
                let window: Int = batch["max_concurrency"]
                let open =
                    try Int.fetchOne(
                        db,
                        cached: """
                            SELECT COUNT(*) FROM generations INDEXED BY generations_batch_open
                            WHERE batch_id = ? AND held = 0 AND \(Self.takingRoom)
                            """, arguments: [id]) ?? 0
                guard open < window else { continue }
                let ids = try String.fetchAll(
                    db,
                    cached: """
                        SELECT id FROM generations INDEXED BY generations_batch_held
                        WHERE batch_id = ? AND held = 1 AND status = 'pending' ORDER BY batch_index LIMIT ?
                        """, arguments: [id, window - open])
                for job in ids {
                    try db.run(
                        sql: """
                            UPDATE generations SET held = 0, next_action_at = ?, version = version + 1, updated_at = ?,
                                deadline_at = ? + COALESCE(json_extract(request, '$.deadline_seconds'), 1800)
                            WHERE id = ? AND held = 1 AND status = 'pending'
                            """,
                        arguments: [
                            now.timeIntervalSince1970, now.timeIntervalSince1970, now.timeIntervalSince1970, job,
                        ])
                }
                released += ids
                if ids.count < window - open {
                    // Nothing left to hold back (the rows say so, whatever the count said).
                    try db.run(sql: "UPDATE batches SET held_count = 0 WHERE id = ?", arguments: [id])
                } else {
                    try db.run(
                        sql: "UPDATE batches SET held_count = MAX(0, held_count - ?) WHERE id = ?",
                        arguments: [ids.count, id])
                }
            }
            return released
        }
    }

    public func stopBatch(id: String, reason: String, at now: Date) async throws -> Int {
        let (why, cancellation) = Batch.stopCancellation(reason: reason)
        let error = String(decoding: try JSONCoding.encode(cancellation), as: UTF8.self)
        return try await batcher.write { db in
            try db.run(
                sql:
                    "UPDATE batches SET stopped_at = COALESCE(stopped_at, ?), stop_reason = COALESCE(stop_reason, ?), held_count = 0 WHERE id = ?",
                arguments: [now.timeIntervalSince1970, reason, id])
            // Held jobs never started: they end here, each with its event.
            let held = try String.fetchAll(
                db,
                cached: """
                    SELECT id FROM generations INDEXED BY generations_batch_held
                    WHERE batch_id = ? AND held = 1 AND status = 'pending'
                    """, arguments: [id])
            for job in held {
                try db.run(
                    sql: """
                        UPDATE generations SET status = 'cancelled', version = version + 1, updated_at = ?, cancelled_at = ?,
                            error = ?, next_action_at = NULL
                        WHERE id = ? AND held = 1 AND status = 'pending'
                        """, arguments: [now.timeIntervalSince1970, now.timeIntervalSince1970, error, job])
                let cancelled = Event(
                    .generationCancelled(.init(previousStatus: "pending", reason: why)), generationID: job, at: now)
                try Self.append(try EncodedEvent.encode([cancelled]), db: db)
            }
            return held.count
        }
    }

    public func batchesToStop(limit: Int) async throws -> [String] {
        // Looked for from the failures of the last day (the job's own process stops its batch at
        // once; this is for when it died first), so the look costs nothing as batches pile up.
        let since = Date().addingTimeInterval(-86_400).timeIntervalSince1970
        return try await pool.read { db in
            try String.fetchAll(
                db,
                cached: """
                    SELECT DISTINCT b.id FROM generations g INDEXED BY generations_batch_failed
                    JOIN batches b ON b.id = g.batch_id
                    WHERE g.batch_id IS NOT NULL AND g.status = 'failed' AND g.updated_at > ?
                      AND b.stop_on_error = 1 AND b.stopped_at IS NULL
                    LIMIT ?
                    """, arguments: [since, limit])
        }
    }

    public func unfinishedJobsOfStoppedBatches(limit: Int) async throws -> [String] {
        try await pool.read { db in
            try String.fetchAll(
                db,
                cached: """
                    SELECT g.id FROM batches b INDEXED BY batches_stopped
                    JOIN generations g INDEXED BY generations_batch_open
                      ON g.batch_id = b.id AND g.held = 0 AND g.status NOT IN \(Self.terminalList)
                    WHERE b.stopped_at IS NOT NULL AND b.stopped_at > ?
                    LIMIT ?
                    """, arguments: [Date().addingTimeInterval(-7 * 86_400).timeIntervalSince1970, limit])
        }
    }

    public func batches(ownerKeyID: String, after cursor: String?, limit: Int) async throws -> [Batch] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                cached: """
                    SELECT * FROM batches INDEXED BY batches_owner WHERE owner_key_id = ? AND id < ?
                    ORDER BY id DESC LIMIT ?
                    """, arguments: [ownerKeyID, cursor ?? "~", limit]
            ).map(Self.decodeBatch)
        }
    }

    static func decodeBatch(_ row: Row) throws -> Batch {
        let metadata: String = row["metadata"]
        return Batch(
            id: row["id"], ownerKeyID: row["owner_key_id"], total: row["total"], maxConcurrency: row["max_concurrency"],
            stopOnError: row["stop_on_error"], priority: row["priority"],
            metadata: try JSONCoding.decode([String: JSONValue].self, from: Data(metadata.utf8)),
            createdAt: Date(timeIntervalSince1970: row["created_at"]),
            stoppedAt: (row["stopped_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
            stopReason: row["stop_reason"])
    }
}
