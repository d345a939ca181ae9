import Foundation
import GenGateCore
import GenGateStore
import PostgresNIO

/// API keys, generations, leases and transitions on PostgreSQL (see `GenerationStore`; each
/// statement mirrors `SQLiteStore`'s).
extension PostgresStore {
    static let active = PostgresSchema.active

    // MARK: API keys

    public func createAPIKey(name: String, isAdmin: Bool, budgets: KeyBudgets) async throws
        -> (key: APIKey, secret: String)
    {
        let key = APIKey(id: Identifier.make("key"), name: name, isAdmin: isAdmin, createdAt: Date(), budgets: budgets)
        let secret = "gg_" + Identifier.randomToken(count: 40)
        let hash = Digest.sha256Hex(secret)
        try await write { db in
            try await db.run(
                """
                INSERT INTO api_keys (id, name, secret_hash, is_admin, created_at, budget_daily, budget_monthly)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                """,
                [
                    key.id, key.name, hash, key.isAdmin, key.createdAt.timeIntervalSince1970, budgets.daily,
                    budgets.monthly,
                ])
        }
        return (key, secret)
    }

    public func apiKey(secret: String) async throws -> APIKey? {
        let hash = Digest.sha256Hex(secret)
        return try await read { db -> APIKey? in
            try await db.row("SELECT * FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL", [hash]).map(
                Self.decodeKey)
        }
    }

    static func decodeKey(_ row: PostgresRandomAccessRow) throws -> APIKey {
        APIKey(
            id: try row.get("id"), name: try row.get("name"), isAdmin: try row.get("is_admin"),
            createdAt: Date(timeIntervalSince1970: try row.get("created_at")),
            budgets: KeyBudgets(daily: try row.get("budget_daily"), monthly: try row.get("budget_monthly")),
            revokedAt: try row.date("revoked_at"))
    }

    public func apiKeyCount() async throws -> Int {
        try await read { db in try await db.row("SELECT COUNT(*) AS count FROM api_keys")?.get("count") ?? 0 }
    }

    public func revokeAPIKey(id: String, at: Date) async throws -> Bool {
        try await write { db in
            try await db.changes(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                [at.timeIntervalSince1970, id]) == 1
        }
    }

    // MARK: Generations

    /// A generation's columns, in `insertSQL`'s order.
    static func columns(_ generation: Generation, held: Bool = false, batch: (id: String, index: Int)? = nil)
        throws -> [any SQLValue]
    {
        let request = String(decoding: try JSONCoding.encode(generation.request), as: UTF8.self)
        let route =
            generation.route.isEmpty ? nil : String(decoding: try JSONCoding.encode(generation.route), as: UTF8.self)
        let webhook = generation.request.webhook
        return [
            generation.id, generation.ownerKeyID, generation.request.model, generation.provider, request,
            generation.request.n, generation.status.rawValue, generation.version, generation.progress,
            generation.attempts, held ? nil : generation.nextActionAt?.timeIntervalSince1970,
            generation.deadlineAt.timeIntervalSince1970, generation.createdAt.timeIntervalSince1970,
            generation.updatedAt.timeIntervalSince1970, generation.cancelAt?.timeIntervalSince1970, route,
            generation.routeIndex, batch?.id, batch?.index, held, generation.priority, webhook,
            webhook == nil ? [] : (generation.request.webhookEvents ?? []).map(\.rawValue),
            generation.request.deadlineSeconds.map(Double.init), generation.waitsFor, generation.reservedCost,
            generation.experiment?.experimentID, generation.experiment?.variant,
        ]
    }

    static let insertColumnsSQL = """
        INSERT INTO generations (id, owner_key_id, model, provider, request, n, status, version, progress, attempts,
            next_action_at, deadline_at, created_at, updated_at, cancel_at, route, route_index, batch_id, batch_index,
            held, priority, webhook_url, webhook_events, deadline_seconds, waits_for, reserved_cost, experiment_id,
            experiment_variant)
        VALUES
        """
    static let insertSQL =
        insertColumnsSQL
        + " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,"
        + " $21, $22, $23, $24, $25, $26, $27, $28)"

    public func insert(_ generation: Generation, event: Event, idempotency: IdempotencyKey?) async throws
        -> InsertOutcome
    {
        let columns = try Self.columns(generation)
        let events = try EncodedEvent.encode([event])
        return try await write { db -> InsertOutcome in
            if let idempotency,
                let replay = try await Self.idempotent(
                    idempotency, owner: generation.ownerKeyID, id: generation.id, at: generation.createdAt, db: db)
            {
                return replay
            }
            if generation.reservedCost != nil || generation.unpricedModel != nil {
                try await Self.reserve(
                    generation.reservedCost ?? 0, unpriced: generation.unpricedModel, owner: generation.ownerKeyID,
                    at: generation.createdAt, db: db)
            }
            // One round trip: an id taken already inserts nothing, and says so.
            guard try await db.row(Self.insertSQL + " ON CONFLICT (id) DO NOTHING RETURNING id", columns) != nil else {
                throw StoreError.duplicateID(generation.id)
            }
            try await Self.append(events, db: db)
            return .inserted
        }
    }

    /// Within a write: what an earlier request under `idempotency`'s key made, or nil after
    /// recording `id` under it (an expired entry is replaced).
    static func idempotent(
        _ idempotency: IdempotencyKey, owner: String, id: String, at: Date, db: PostgresConnection
    ) async throws -> InsertOutcome? {
        let now = at.timeIntervalSince1970
        if let row = try await db.row(
            "SELECT request_hash, generation_id, created_at FROM idempotency_keys WHERE key_id = $1 AND key = $2",
            [owner, idempotency.key])
        {
            if try row.get("created_at", as: Double.self) >= now - idempotency.window {
                let original: String = try row.get("generation_id")
                return try row.get("request_hash", as: String.self) == idempotency.requestHash
                    ? .replayed(generationID: original) : .keyReused(generationID: original)
            }
            try await db.run("DELETE FROM idempotency_keys WHERE key_id = $1 AND key = $2", [owner, idempotency.key])
        }
        try await db.run(
            """
            INSERT INTO idempotency_keys (key_id, key, request_hash, generation_id, created_at)
            VALUES ($1, $2, $3, $4, $5)
            """, [owner, idempotency.key, idempotency.requestHash, id, now])
        return nil
    }

    public func generation(id: String) async throws -> Generation? {
        try await read { db in try await Self.generations(where: "id = $1", [id], db: db).first }
    }

    public func list(ownerKeyID: String, status: GenerationStatus?, after cursor: String?, limit: Int) async throws
        -> [Generation]
    {
        var condition = "owner_key_id = $1"
        var values: [any SQLValue] = [ownerKeyID]
        if let status {
            values.append(status.rawValue)
            condition += " AND status = $\(values.count)"
        }
        if let cursor {
            values.append(cursor)
            condition += " AND id < $\(values.count)"
        }
        values.append(limit)
        let query = "\(condition) ORDER BY id DESC LIMIT $\(values.count)"
        let arguments = values
        return try await read { db in try await Self.generations(where: query, arguments, db: db) }
    }

    public func claim(
        id: String, statuses: Set<GenerationStatus>, owner: String, leaseUntil: Date, now: Date, heldAt: Int?
    ) async throws -> Generation? {
        let values: [any SQLValue] = [
            owner, leaseUntil.timeIntervalSince1970, now.timeIntervalSince1970, id, statuses.map(\.rawValue).sorted(),
            heldAt ?? -1, heldAt != nil,
        ]
        let claimed = try await write { db -> Int? in
            try await db.row(
                """
                UPDATE generations SET lease_owner = $1, lease_expires_at = $2, version = version + 1, updated_at = $3
                WHERE id = $4 AND status = ANY($5)
                  AND (lease_owner IS NULL OR lease_expires_at < $3)
                  AND NOT held
                  AND (next_action_at IS NULL OR next_action_at <= $3 OR lease_owner IS NOT NULL OR version = $6)
                  AND (version = $6 OR NOT $7)
                RETURNING version
                """, values)?.get("version")
        }
        guard let claimed else { return nil }
        // Read after the commit; a job that moved on meanwhile was taken from us (cancelled).
        guard let generation = try await generation(id: id), generation.version == claimed else { return nil }
        return generation
    }

    public func claimDue(
        status: GenerationStatus, owner: String, leaseUntil: Date, now: Date, limit: Int,
        excludingProviders: Set<String>
    ) async throws -> [Generation] {
        guard limit > 0 else { return [] }
        let values: [any SQLValue] = [
            owner, leaseUntil.timeIntervalSince1970, now.timeIntervalSince1970, status.rawValue,
            excludingProviders.sorted(), limit,
        ]
        let claimed = try await write { db -> [(String, Int)] in
            try await db.rows(
                """
                UPDATE generations SET lease_owner = $1, lease_expires_at = $2, version = version + 1, updated_at = $3
                WHERE id IN (SELECT id FROM generations
                             WHERE lease_owner IS NULL AND \(Self.active) AND status = $4 AND next_action_at <= $3
                               AND NOT (provider = ANY($5))
                             ORDER BY next_action_at LIMIT $6 FOR UPDATE SKIP LOCKED)
                RETURNING id, version
                """, values
            ).map { (try $0.get("id"), try $0.get("version")) }
        }
        guard !claimed.isEmpty else { return [] }
        let versions = Dictionary(uniqueKeysWithValues: claimed)
        let ids = claimed.map(\.0)
        return try await read { db in
            try await Self.generations(where: "id = ANY($1)", [ids], db: db).filter { versions[$0.id] == $0.version }
        }
    }

    public func nextDue(status: GenerationStatus) async throws -> Date? {
        try await read { db -> Date? in
            try await db.row(
                """
                SELECT MIN(next_action_at) AS due FROM generations
                WHERE lease_owner IS NULL AND \(Self.active) AND status = $1
                """, [status.rawValue])?.date("due")
        }
    }

    public func renewLease(id: String, owner: String, version: Int, until: Date) async throws -> Bool {
        try await write { db in
            try await db.changes(
                "UPDATE generations SET lease_expires_at = $1 WHERE id = $2 AND lease_owner = $3 AND version = $4",
                [until.timeIntervalSince1970, id, owner, version]) == 1
        }
    }

    public func releaseLease(id: String, owner: String, version: Int, nextActionAt: Date) async throws -> Bool {
        try await write { db in
            try await db.changes(
                """
                UPDATE generations SET lease_owner = NULL, lease_expires_at = NULL, next_action_at = $1
                WHERE id = $2 AND lease_owner = $3 AND version = $4
                """, [nextActionAt.timeIntervalSince1970, id, owner, version]) == 1
        }
    }

    public func releaseLeases(owners: [String], dueAt: Date) async throws -> Int {
        guard !owners.isEmpty else { return 0 }
        return try await write { db in
            try await db.changes(
                """
                UPDATE generations SET lease_owner = NULL, lease_expires_at = NULL, next_action_at = $1,
                    version = version + 1
                WHERE lease_owner = ANY($2)
                """, [dueAt.timeIntervalSince1970, owners])
        }
    }

    public func releaseExpiredLeases(now: Date, limit: Int) async throws -> [DueWork] {
        try await write { db in
            try await db.rows(
                """
                UPDATE generations SET lease_owner = NULL, lease_expires_at = NULL, next_action_at = $1,
                    version = version + 1
                WHERE id IN (SELECT id FROM generations WHERE lease_owner IS NOT NULL AND lease_expires_at < $1
                             ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
                RETURNING id, status
                """, [now.timeIntervalSince1970, limit]
            ).compactMap { row in
                try GenerationStatus(rawValue: try row.get("status")).map {
                    DueWork(id: try row.get("id"), status: $0, leaseExpired: true)
                }
            }
        }
    }

    public func present(instance: String, at: Date, silentAfter: Double) async throws {
        try await write { db in
            try await db.run(
                """
                INSERT INTO instances (name, seen_at, silent_after) VALUES ($1, $2, $3)
                ON CONFLICT (name) DO UPDATE SET seen_at = GREATEST(instances.seen_at, excluded.seen_at),
                    silent_after = excluded.silent_after
                """, [instance, at.timeIntervalSince1970, silentAfter])
        }
    }

    public func absent(instance: String) async throws {
        try await write { db in try await db.run("DELETE FROM instances WHERE name = $1", [instance]) }
    }

    public func releaseLeasesOfSilentInstances(now: Date, dueAt: Date) async throws -> (
        instances: [String], leases: Int
    ) {
        try await write { db -> ([String], Int) in
            let silent: [String] = try await db.rows(
                "DELETE FROM instances WHERE seen_at + silent_after < $1 RETURNING name", [now.timeIntervalSince1970]
            ).map { try $0.get("name") }
            guard !silent.isEmpty else { return ([], 0) }
            let count = try await db.changes(
                """
                UPDATE generations SET lease_owner = NULL, lease_expires_at = NULL, next_action_at = $1,
                    version = version + 1
                WHERE lease_owner = ANY($2) AND status NOT IN ('pending', 'dispatching')
                """, [dueAt.timeIntervalSince1970, silent])
            return (silent, count)
        }
    }

    public func leaseOwners() async throws -> [String] {
        try await read { db in
            try await db.rows("SELECT DISTINCT lease_owner FROM generations WHERE lease_owner IS NOT NULL").map {
                try $0.get("lease_owner")
            }
        }
    }

    public func transition(_ change: Transition) async throws -> Generation? {
        var values: [any SQLValue] = [change.to.rawValue, change.at.timeIntervalSince1970]
        var assignments = ["status = $1", "version = version + 1", "updated_at = $2"]
        func set(_ column: String, _ value: any SQLValue) {
            values.append(value)
            assignments.append("\(column) = $\(values.count)")
        }
        if change.to != change.from && change.to != .pending {
            // The time each phase was entered; staying in a phase (progress) keeps it.
            assignments.append("\(change.to.rawValue)_at = $2")
        }
        if let progress = change.progress { set("progress", progress) }
        if let attempts = change.attempts { set("attempts", attempts) }
        if let error = change.error {
            set("error", try error.map { String(decoding: try JSONCoding.encode($0), as: UTF8.self) })
        }
        if let taskID = change.providerTaskID { set("provider_task_id", taskID) }
        if let checks = change.checks { set("checks", checks) }
        if let failures = change.checkFailures { set("check_failures", failures) }
        if let move = change.routeMove {
            set("route_index", move.index)
            set("provider", move.provider)
        }
        if let inputs = change.inputs { set("inputs", inputs.isEmpty ? nil : try StoredJSON.text(inputs)) }
        if let waitsFor = change.waitsFor { set("waits_for", waitsFor) }
        if let deadline = change.deadlineAt { set("deadline_at", deadline.timeIntervalSince1970) }
        // Held: no due time either (the change's `nextActionAt` says so; assigned once below).
        if change.holdInBatch != nil { assignments.append("held = TRUE") }
        switch change.lease {
        case .keep:
            break
        case .release:
            assignments.append("lease_owner = NULL, lease_expires_at = NULL")
        case .hold(let owner, let until):
            set("lease_owner", owner)
            set("lease_expires_at", until.timeIntervalSince1970)
        }
        if change.to.isTerminal {
            assignments.append("lease_owner = NULL, lease_expires_at = NULL, next_action_at = NULL")
        } else if let next = change.nextActionAt {
            set("next_action_at", next?.timeIntervalSince1970)
        }
        values += [change.id, change.from.rawValue, change.version] as [any SQLValue]
        let count = values.count
        let sql = """
            UPDATE generations SET \(assignments.joined(separator: ", "))
            WHERE id = $\(count - 2) AND status = $\(count - 1) AND version = $\(count)
            """
        let arguments = values
        let events = try EncodedEvent.encode(change.events)
        let newAttempt = try change.newAttempt.map(EncodedAttempt.init)
        let attemptUpdate = try change.attemptUpdate.map(EncodedAttemptUpdate.init)
        do {
            let applied = try await write { db -> Bool in
                guard try await db.changes(sql, arguments) == 1 else { return false }
                if let batch = change.holdInBatch {
                    // A batch stopped meanwhile holds nothing more (its stop cancels what it held):
                    // refused, and the sweep finds the job again.
                    guard
                        try await db.changes(
                            "UPDATE batches SET held_count = held_count + 1 WHERE id = $1 AND stopped_at IS NULL",
                            [batch])
                            == 1
                    else { throw RefusedChange() }
                }
                // Throwing `ProviderAtLimit` rolls the whole change back.
                if let admission = change.admission {
                    try await ProviderLimitRows.admit(admission, generationID: change.id, db: db)
                }
                if let feedback = change.limitFeedback { try await ProviderLimitRows.adapt(feedback, db: db) }
                if let newAttempt { try await newAttempt.insert(db) }
                // Refusing rolls the whole change back: the job and its attempt move together.
                if let attemptUpdate, try await !attemptUpdate.apply(db) { throw RefusedChange() }
                // Throwing `BudgetExceeded` rolls the whole change back.
                if newAttempt != nil { try await Self.extendReservation(of: change.id, db: db) }
                for output in change.newOutputs {
                    // Outputs a synchronous provider made come already stored.
                    let storedAt = output.isStored ? (output.storedAt ?? Date()).timeIntervalSince1970 : nil
                    // A retried attempt may bring a fresh source for an output not stored yet.
                    try await db.run(
                        """
                        INSERT INTO outputs (generation_id, idx, source, content_type, object_key, bytes, sha256,
                            stored_at)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                        ON CONFLICT (generation_id, idx) DO UPDATE SET source = excluded.source,
                            content_type = excluded.content_type, object_key = excluded.object_key,
                            bytes = excluded.bytes, sha256 = excluded.sha256, stored_at = excluded.stored_at
                        WHERE outputs.stored_at IS NULL
                        """,
                        [
                            change.id, output.index, output.source, output.contentType, output.objectKey,
                            output.bytes, output.sha256, storedAt,
                        ])
                }
                try await Self.append(events, db: db)
                return true
            }
            guard applied else { return nil }
        } catch is RefusedChange {
            return nil
        }
        if let base = change.base { return base.applying(change) }
        return try await generation(id: change.id)
    }

    public func recordHandlerFailure(id: String, owner: String, message: String, limit: Int, event: Event, at: Date)
        async throws -> Int?
    {
        let events = try EncodedEvent.encode([event])
        let error = String(
            decoding: try JSONCoding.encode(GenGateError(.internalError, message, retryable: false)), as: UTF8.self)
        return try await write { db -> Int? in
            guard
                let count: Int = try await db.row(
                    """
                    UPDATE generations SET handler_failures = handler_failures + 1, lease_owner = NULL,
                        lease_expires_at = NULL, next_action_at = $1 + (1::bigint << LEAST(handler_failures, 10)::int),
                        version = version + 1, updated_at = $1
                    WHERE id = $2 AND lease_owner = $3 AND \(Self.active)
                    RETURNING handler_failures
                    """, [at.timeIntervalSince1970, id, owner])?.get("handler_failures")
            else { return nil }
            if count >= limit {
                try await db.run(
                    """
                    UPDATE generations SET status = 'failed', version = version + 1, updated_at = $1, failed_at = $1,
                        error = $2, next_action_at = NULL
                    WHERE id = $3
                    """, [at.timeIntervalSince1970, error, id])
                try await Self.append(events, db: db)
            }
            return count
        }
    }

    public func lead(_ name: String, owner: String, until: Date, now: Date) async throws -> Bool {
        try await write { db in
            try await db.changes(
                """
                INSERT INTO leader_leases (name, owner, expires_at) VALUES ($1, $2, $3)
                ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
                WHERE leader_leases.owner = excluded.owner OR leader_leases.expires_at < $4
                """, [name, owner, until.timeIntervalSince1970, now.timeIntervalSince1970]) == 1
        }
    }

    // MARK: Rows

    /// Generations matching `condition` (over `generations`), with their outputs.
    static func generations(where condition: String, _ values: [any SQLValue], db: PostgresConnection) async throws
        -> [Generation]
    {
        let rows = try await db.rows("SELECT * FROM generations WHERE \(condition)", values)
        guard !rows.isEmpty else { return [] }
        let ids: [String] = try rows.map { try $0.get("id") }
        var outputs: [String: [Output]] = [:]
        for output in try await db.rows(
            "SELECT * FROM outputs WHERE generation_id = ANY($1) ORDER BY generation_id, idx", [ids])
        {
            outputs[try output.get("generation_id"), default: []].append(
                Output(
                    index: try output.get("idx"), source: try output.get("source"),
                    contentType: try output.get("content_type"), objectKey: try output.get("object_key"),
                    bytes: try output.get("bytes"), sha256: try output.get("sha256"),
                    storedAt: try output.date("stored_at")))
        }
        return try rows.map { try decodeGeneration($0, outputs: outputs[try $0.get("id")] ?? []) }
    }

    static func decodeError(_ text: String?) throws -> GenGateError? {
        guard let text else { return nil }
        return try JSONCoding.decode(GenGateError.self, from: Data(text.utf8))
    }

    static func decodeGeneration(_ row: PostgresRandomAccessRow, outputs: [Output]) throws -> Generation {
        let id: String = try row.get("id")
        let request = try JSONCoding.decode(
            GenerationRequest.self, from: Data(try row.get("request", as: String.self).utf8))
        var phases: [GenerationStatus: Date] = [:]
        for status in GenerationStatus.allCases where status != .pending && status != .waiting {
            if let at = try row.date("\(status.rawValue)_at") { phases[status] = at }
        }
        phases[.pending] = try row.date("created_at")
        let statusText: String = try row.get("status")
        guard let status = GenerationStatus(rawValue: statusText) else {
            throw StoreError.schemaMismatch("generation \(id) has unknown status \(statusText)")
        }
        return Generation(
            id: id, ownerKeyID: try row.get("owner_key_id"), request: request, provider: try row.get("provider"),
            status: status, version: try row.get("version"), progress: try row.get("progress"),
            attempts: try row.get("attempts"), error: try decodeError(try row.get("error")),
            providerTaskID: try row.get("provider_task_id"), leaseOwner: try row.get("lease_owner"),
            leaseExpiresAt: try row.date("lease_expires_at"), nextActionAt: try row.date("next_action_at"),
            deadlineAt: try row.date("deadline_at") ?? Date.distantFuture,
            createdAt: try row.date("created_at") ?? Date(), updatedAt: try row.date("updated_at") ?? Date(),
            phaseTimes: phases, outputs: outputs, checks: try row.get("checks"),
            checkFailures: try row.get("check_failures"), cancelAt: try row.date("cancel_at"),
            route: try (try row.get("route", as: String?.self)).map {
                try JSONCoding.decode([String].self, from: Data($0.utf8))
            } ?? [],
            routeIndex: try row.get("route_index"), batchID: try row.get("batch_id"),
            priority: try row.get("priority"),
            inputs: try (try row.get("inputs", as: String?.self)).map {
                try StoredJSON.decode([PreparedInput].self, $0)
            } ?? [], waitsFor: try row.get("waits_for"), reservedCost: try row.get("reserved_cost"),
            experiment: try (try row.get("experiment_id", as: String?.self)).map {
                ExperimentAssignment(
                    experimentID: $0, variant: try row.get("experiment_variant", as: String?.self) ?? "")
            })
    }
}

/// A change refused part-way (an attempt no longer in an expected state); thrown to roll the
/// change back, never seen by callers.
struct RefusedChange: Error {}
