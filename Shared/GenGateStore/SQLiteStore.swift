import Foundation
import GRDB
import GenGateCore

/// The embedded store: one SQLite file in WAL mode, shared by every service on the host.
///
/// Each process opens its own `DatabasePool` and sends every write through one `WriteBatcher`
/// (group commit: concurrent writes share a transaction and an fsync). While another process
/// holds the writer lock, a writer waits in short, frequent sleeps (see `busyWait`) rather than
/// SQLite's default of up to 100 ms a time. Reads (and decoding a generation's request) happen
/// outside the writer lock. Migrations run only through `migrate` (from `gengate up` or
/// `gengate migrate`), never concurrently from several services.
public final class SQLiteStore: GenerationStore {
    /// How hard a commit is on the disk: `full` survives power loss, `normal` a process crash.
    public enum Durability: String, Codable, Sendable {
        case full
        case normal
    }

    let pool: DatabasePool
    let batcher: WriteBatcher

    /// Opens the database at `path`. Unless `migrate` is true, the schema must already be
    /// current, or this throws `StoreError.schemaMismatch` saying what to run.
    public init(path: String, durability: Durability = .full, busyTimeout: TimeInterval = 10, migrate: Bool = false)
        throws
    {
        var configuration = Configuration()
        configuration.busyMode = .callback(Self.busyWait(timeout: busyTimeout))
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        pool = try DatabasePool(path: path, configuration: configuration)
        // Here, not in prepareDatabase: opening the pool switches the file to WAL, and GRDB sets
        // `synchronous = NORMAL` on the writer when it does, after prepareDatabase ran.
        try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = \(durability == .full ? "FULL" : "NORMAL")")
        }
        batcher = WriteBatcher(pool: pool)
        let migrator = SQLiteSchema.migrator
        if migrate {
            try migrator.migrate(pool)
        } else {
            try pool.read { db in
                if try migrator.hasBeenSuperseded(db) {
                    throw StoreError.schemaMismatch("\(path) was migrated by a newer GenGate; upgrade this one")
                }
                if try !migrator.hasCompletedMigrations(db) {
                    throw StoreError.schemaMismatch("\(path) is not migrated to this version; run `gengate migrate`")
                }
            }
        }
    }

    /// SQLite's busy handler, called while another connection holds the lock: sleeps 50 µs at
    /// first, then 250 µs, then 1 ms a try, and gives up after about `timeout` seconds. SQLite's
    /// own handler sleeps up to 100 ms a time, which is where multi-process commit tails came from.
    static func busyWait(timeout: TimeInterval) -> Database.BusyCallback {
        { tries in
            let waited: Double
            switch tries {
            case ..<20:
                usleep(50)
                waited = Double(tries) * 0.000_05
            case ..<200:
                usleep(250)
                waited = 0.001 + Double(tries - 20) * 0.000_25
            default:
                usleep(1_000)
                waited = 0.046 + Double(tries - 200) * 0.001
            }
            return waited < timeout
        }
    }

    /// `PRAGMA synchronous` as the writer connection has it (2 is FULL, 1 NORMAL).
    public func writerSynchronous() async throws -> Int {
        try await pool.writeWithoutTransaction { db in try Int.fetchOne(db, cached: "PRAGMA synchronous") ?? -1 }
    }

    // MARK: API keys

    public func createAPIKey(name: String, isAdmin: Bool, budgets: KeyBudgets) async throws
        -> (key: APIKey, secret: String)
    {
        let key = APIKey(id: Identifier.make("key"), name: name, isAdmin: isAdmin, createdAt: Date(), budgets: budgets)
        let secret = "gg_" + Identifier.randomToken(count: 40)
        let hash = Digest.sha256Hex(secret)
        try await batcher.write { db in
            try db.run(
                sql: """
                    INSERT INTO api_keys (id, name, secret_hash, is_admin, created_at, budget_daily, budget_monthly)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    key.id, key.name, hash, key.isAdmin, key.createdAt.timeIntervalSince1970, budgets.daily,
                    budgets.monthly,
                ])
        }
        return (key, secret)
    }

    public func apiKey(secret: String) async throws -> APIKey? {
        let hash = Digest.sha256Hex(secret)
        return try await pool.read { db in
            try Row.fetchOne(
                db, cached: "SELECT * FROM api_keys WHERE secret_hash = ? AND revoked_at IS NULL", arguments: [hash]
            )
            .map(Self.decodeKey)
        }
    }

    static func decodeKey(_ row: Row) -> APIKey {
        APIKey(
            id: row["id"], name: row["name"], isAdmin: row["is_admin"],
            createdAt: Date(timeIntervalSince1970: row["created_at"]),
            budgets: KeyBudgets(daily: row["budget_daily"], monthly: row["budget_monthly"]),
            revokedAt: (row["revoked_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
    }

    public func apiKeyCount() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, cached: "SELECT COUNT(*) FROM api_keys") ?? 0 }
    }

    // MARK: Generations

    public func revokeAPIKey(id: String, at: Date) async throws -> Bool {
        try await batcher.write { db in
            try db.run(
                sql: "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                arguments: [at.timeIntervalSince1970, id])
            return db.changesCount == 1
        }
    }

    public func insert(_ generation: Generation, event: Event, idempotency: IdempotencyKey?) async throws
        -> InsertOutcome
    {
        let request = String(decoding: try JSONCoding.encode(generation.request), as: UTF8.self)
        let route =
            generation.route.isEmpty
            ? nil : String(decoding: try JSONCoding.encode(generation.route), as: UTF8.self)
        let events = try EncodedEvent.encode([event])
        return try await batcher.write { db -> InsertOutcome in
            if let idempotency,
                let replay = try Self.idempotent(
                    idempotency, owner: generation.ownerKeyID, id: generation.id, at: generation.createdAt, db: db)
            {
                return replay
            }
            if try Bool.fetchOne(db, cached: "SELECT 1 FROM generations WHERE id = ?", arguments: [generation.id])
                != nil
            {
                throw StoreError.duplicateID(generation.id)
            }
            if generation.reservedCost != nil || generation.unpricedModel != nil {
                try Self.reserve(
                    generation.reservedCost ?? 0, unpriced: generation.unpricedModel, owner: generation.ownerKeyID,
                    at: generation.createdAt, db: db)
            }
            try db.run(
                sql: """
                    INSERT INTO generations (id, owner_key_id, model, provider, request, n, status, version, progress, attempts,
                        next_action_at, deadline_at, created_at, updated_at, cancel_at, route, route_index, waits_for,
                        reserved_cost, experiment_id, experiment_variant)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    generation.id, generation.ownerKeyID, generation.request.model, generation.provider, request,
                    generation.request.n, generation.status.rawValue, generation.version, generation.progress,
                    generation.attempts, generation.nextActionAt?.timeIntervalSince1970,
                    generation.deadlineAt.timeIntervalSince1970, generation.createdAt.timeIntervalSince1970,
                    generation.updatedAt.timeIntervalSince1970, generation.cancelAt?.timeIntervalSince1970, route,
                    generation.routeIndex, generation.waitsFor, generation.reservedCost,
                    generation.experiment?.experimentID, generation.experiment?.variant,
                ])
            try Self.append(events, db: db)
            return .inserted
        }
    }

    /// Within a write: what an earlier request under `idempotency`'s key (of API key `owner`) made,
    /// or nil after recording `id` under it (an expired entry is replaced).
    static func idempotent(_ idempotency: IdempotencyKey, owner: String, id: String, at: Date, db: Database) throws
        -> InsertOutcome?
    {
        let now = at.timeIntervalSince1970
        if let row = try Row.fetchOne(
            db,
            cached: """
                SELECT request_hash, generation_id, created_at FROM idempotency_keys WHERE key_id = ? AND key = ?
                """, arguments: [owner, idempotency.key])
        {
            if (row["created_at"] as Double) >= now - idempotency.window {
                let original: String = row["generation_id"]
                return (row["request_hash"] as String) == idempotency.requestHash
                    ? .replayed(generationID: original) : .keyReused(generationID: original)
            }
            try db.run(
                sql: "DELETE FROM idempotency_keys WHERE key_id = ? AND key = ?", arguments: [owner, idempotency.key])
        }
        try db.run(
            sql: """
                INSERT INTO idempotency_keys (key_id, key, request_hash, generation_id, created_at) VALUES (?, ?, ?, ?, ?)
                """,
            arguments: [owner, idempotency.key, idempotency.requestHash, id, now])
        return nil
    }

    public func generation(id: String) async throws -> Generation? {
        try await pool.read { db in try Self.fetchGeneration(id: id, db: db) }
    }

    public func list(ownerKeyID: String, status: GenerationStatus?, after cursor: String?, limit: Int) async throws
        -> [Generation]
    {
        try await pool.read { db in
            var sql = "SELECT * FROM generations WHERE owner_key_id = ?"
            var arguments: StatementArguments = [ownerKeyID]
            if let status {
                sql += " AND status = ?"
                arguments += [status.rawValue]
            }
            if let cursor {
                sql += " AND id < ?"
                arguments += [cursor]
            }
            sql += " ORDER BY id DESC LIMIT ?"
            arguments += [limit]
            let rows = try Row.fetchAll(db, cached: sql, arguments: arguments)
            return try rows.map { try Self.decodeGeneration($0, db: db) }
        }
    }

    public func claim(
        id: String, statuses: Set<GenerationStatus>, owner: String, leaseUntil: Date, now: Date, heldAt: Int?
    ) async throws -> Generation? {
        let statusList = statuses.map(\.rawValue)
        var arguments: StatementArguments = [owner, leaseUntil.timeIntervalSince1970, now.timeIntervalSince1970, id]
        arguments += StatementArguments(statusList)
        arguments += [now.timeIntervalSince1970, now.timeIntervalSince1970, heldAt ?? -1, heldAt ?? -1, heldAt != nil]
        let sql = """
            UPDATE generations SET lease_owner = ?, lease_expires_at = ?, version = version + 1, updated_at = ?
            WHERE id = ? AND status IN (\(databaseQuestionMarks(count: statusList.count)))
              AND (lease_owner IS NULL OR lease_expires_at < ?)
              AND held = 0
              AND (next_action_at IS NULL OR next_action_at <= ? OR lease_owner IS NOT NULL OR version = ?)
              AND (version = ? OR NOT ?)
            RETURNING version
            """
        let claimArguments = arguments
        let claimed = try await batcher.write { db in try Int.fetchOne(db, cached: sql, arguments: claimArguments) }
        guard let claimed else { return nil }
        // Decoded after the commit, outside the writer lock. A job that moved on meanwhile was
        // taken from us (cancelled): nothing to do.
        guard let generation = try await generation(id: id), generation.version == claimed else { return nil }
        return generation
    }

    public func claimDue(
        status: GenerationStatus, owner: String, leaseUntil: Date, now: Date, limit: Int,
        excludingProviders: Set<String>
    ) async throws -> [Generation] {
        guard limit > 0 else { return [] }
        var arguments: StatementArguments = [
            owner, leaseUntil.timeIntervalSince1970, now.timeIntervalSince1970,
            status.rawValue, now.timeIntervalSince1970,
        ]
        var excluded = ""
        if !excludingProviders.isEmpty {
            excluded = "AND provider NOT IN (\(databaseQuestionMarks(count: excludingProviders.count)))"
            arguments += StatementArguments(excludingProviders.sorted())
        }
        arguments += [limit]
        let sql = """
            UPDATE generations SET lease_owner = ?, lease_expires_at = ?, version = version + 1, updated_at = ?
            WHERE id IN (SELECT id FROM generations INDEXED BY generations_unleased_due
                         WHERE lease_owner IS NULL AND \(Self.active) AND status = ? AND next_action_at <= ? \(excluded)
                         ORDER BY next_action_at LIMIT ?)
            RETURNING id, version
            """
        let claimArguments = arguments
        let claimed = try await batcher.write { db in
            try Row.fetchAll(db, cached: sql, arguments: claimArguments).map {
                (id: $0["id"] as String, version: $0["version"] as Int)
            }
        }
        guard !claimed.isEmpty else { return [] }
        let versions = Dictionary(uniqueKeysWithValues: claimed.map { ($0.id, $0.version) })
        return try await pool.read { db in
            let rows = try Row.fetchAll(
                db, cached: "SELECT * FROM generations WHERE id IN (\(databaseQuestionMarks(count: claimed.count)))",
                arguments: StatementArguments(claimed.map(\.id)))
            return try rows.map { try Self.decodeGeneration($0, db: db) }.filter { versions[$0.id] == $0.version }
        }
    }

    public func nextDue(status: GenerationStatus) async throws -> Date? {
        try await pool.read { db in
            try Double.fetchOne(
                db,
                cached: """
                    SELECT MIN(next_action_at) FROM generations INDEXED BY generations_unleased_due
                    WHERE lease_owner IS NULL AND \(Self.active) AND status = ?
                    """, arguments: [status.rawValue]
            ).map(Date.init(timeIntervalSince1970:))
        }
    }

    public func renewLease(id: String, owner: String, version: Int, until: Date) async throws -> Bool {
        try await batcher.write { db in
            try db.run(
                sql: "UPDATE generations SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? AND version = ?",
                arguments: [until.timeIntervalSince1970, id, owner, version])
            return db.changesCount == 1
        }
    }

    public func releaseLease(id: String, owner: String, version: Int, nextActionAt: Date) async throws -> Bool {
        try await batcher.write { db in
            try db.run(
                sql: """
                    UPDATE generations SET lease_owner = NULL, lease_expires_at = NULL, next_action_at = ?
                    WHERE id = ? AND lease_owner = ? AND version = ?
                    """, arguments: [nextActionAt.timeIntervalSince1970, id, owner, version])
            return db.changesCount == 1
        }
    }

    public func releaseLeases(owners: [String], dueAt: Date) async throws -> Int {
        guard !owners.isEmpty else { return 0 }
        let arguments = [dueAt.timeIntervalSince1970] + StatementArguments(owners)
        let sql = """
            UPDATE generations SET lease_owner = NULL, lease_expires_at = NULL, next_action_at = ?, version = version + 1
            WHERE lease_owner IN (\(databaseQuestionMarks(count: owners.count)))
            """
        return try await batcher.write { db in
            try db.run(sql: sql, arguments: arguments)
            return db.changesCount
        }
    }

    public func releaseExpiredLeases(now: Date, limit: Int) async throws -> [DueWork] {
        try await batcher.write { db in
            try Row.fetchAll(
                db,
                cached: """
                    UPDATE generations SET lease_owner = NULL, lease_expires_at = NULL, next_action_at = :now, version = version + 1
                    WHERE id IN (SELECT id FROM generations INDEXED BY generations_leased
                                 WHERE lease_owner IS NOT NULL AND lease_expires_at < :now ORDER BY lease_expires_at LIMIT :limit)
                    RETURNING id, status
                    """, arguments: ["now": now.timeIntervalSince1970, "limit": limit]
            )
            .compactMap { row in
                GenerationStatus(rawValue: row["status"]).map { DueWork(id: row["id"], status: $0, leaseExpired: true) }
            }
        }
    }

    public func present(instance: String, at: Date, silentAfter: Double) async throws {
        try await batcher.write { db in
            try db.run(
                sql: """
                    INSERT INTO instances (name, seen_at, silent_after) VALUES (?, ?, ?)
                    ON CONFLICT(name) DO UPDATE SET seen_at = MAX(seen_at, excluded.seen_at),
                        silent_after = excluded.silent_after
                    """, arguments: [instance, at.timeIntervalSince1970, silentAfter])
        }
    }

    public func absent(instance: String) async throws {
        try await batcher.write { db in
            try db.run(sql: "DELETE FROM instances WHERE name = ?", arguments: [instance])
        }
    }

    public func releaseLeasesOfSilentInstances(now: Date, dueAt: Date) async throws -> (
        instances: [String], leases: Int
    ) {
        try await batcher.write { db in
            let silent = try String.fetchAll(
                db, cached: "DELETE FROM instances WHERE seen_at + silent_after < ? RETURNING name",
                arguments: [now.timeIntervalSince1970])
            guard !silent.isEmpty else { return ([], 0) }
            try db.execute(
                sql: """
                    UPDATE generations SET lease_owner = NULL, lease_expires_at = NULL, next_action_at = ?, version = version + 1
                    WHERE lease_owner IN (\(databaseQuestionMarks(count: silent.count)))
                      AND status NOT IN ('pending', 'dispatching')
                    """, arguments: [dueAt.timeIntervalSince1970] + StatementArguments(silent))
            return (silent, db.changesCount)
        }
    }

    public func leaseOwners() async throws -> [String] {
        try await pool.read { db in
            try String.fetchAll(
                db,
                cached:
                    "SELECT DISTINCT lease_owner FROM generations INDEXED BY generations_leased WHERE lease_owner IS NOT NULL"
            )
        }
    }

    public func transition(_ change: Transition) async throws -> Generation? {
        var assignments = ["status = ?", "version = version + 1", "updated_at = ?"]
        var arguments: StatementArguments = [change.to.rawValue, change.at.timeIntervalSince1970]
        if change.to != change.from && change.to != .pending {
            // The time each phase was entered; staying in a phase (progress) keeps it.
            assignments.append("\(change.to.rawValue)_at = ?")
            arguments += [change.at.timeIntervalSince1970]
        }
        if let progress = change.progress {
            assignments.append("progress = ?")
            arguments += [progress]
        }
        if let attempts = change.attempts {
            assignments.append("attempts = ?")
            arguments += [attempts]
        }
        if let error = change.error {
            assignments.append("error = ?")
            arguments += [try error.map { String(decoding: try JSONCoding.encode($0), as: UTF8.self) }]
        }
        if let taskID = change.providerTaskID {
            assignments.append("provider_task_id = ?")
            arguments += [taskID]
        }
        if let checks = change.checks {
            assignments.append("checks = ?")
            arguments += [checks]
        }
        if let failures = change.checkFailures {
            assignments.append("check_failures = ?")
            arguments += [failures]
        }
        if let move = change.routeMove {
            assignments.append("route_index = ?, provider = ?")
            arguments += [move.index, move.provider]
        }
        if let waitsFor = change.waitsFor {
            assignments.append("waits_for = ?")
            arguments += [waitsFor]
        }
        if let deadline = change.deadlineAt {
            assignments.append("deadline_at = ?")
            arguments += [deadline.timeIntervalSince1970]
        }
        // Held: no due time either (the change's `nextActionAt` says so; assigned once below).
        if change.holdInBatch != nil { assignments.append("held = 1") }
        if let inputs = change.inputs {
            assignments.append("inputs = ?")
            arguments += [inputs.isEmpty ? nil : try StoredJSON.text(inputs)]
        }
        switch change.lease {
        case .keep:
            break
        case .release:
            assignments.append("lease_owner = NULL, lease_expires_at = NULL")
        case .hold(let owner, let until):
            assignments.append("lease_owner = ?, lease_expires_at = ?")
            arguments += [owner, until.timeIntervalSince1970]
        }
        if change.to.isTerminal {
            assignments.append("lease_owner = NULL, lease_expires_at = NULL, next_action_at = NULL")
        } else if let next = change.nextActionAt {
            assignments.append("next_action_at = ?")
            arguments += [next?.timeIntervalSince1970]
        }
        arguments += [change.id, change.from.rawValue, change.version]
        let sql =
            "UPDATE generations SET \(assignments.joined(separator: ", ")) WHERE id = ? AND status = ? AND version = ?"
        let finalArguments = arguments
        let events = try EncodedEvent.encode(change.events)
        let newAttempt = try change.newAttempt.map(EncodedAttempt.init)
        let attemptUpdate = try change.attemptUpdate.map(EncodedAttemptUpdate.init)
        do {
            let applied = try await batcher.write { db -> Bool in
                try db.run(sql: sql, arguments: finalArguments)
                guard db.changesCount == 1 else { return false }
                if let batch = change.holdInBatch {
                    // A batch stopped meanwhile holds nothing more (its stop cancels what it held):
                    // refused, and the sweep finds the job again.
                    try db.run(
                        sql: "UPDATE batches SET held_count = held_count + 1 WHERE id = ? AND stopped_at IS NULL",
                        arguments: [batch])
                    guard db.changesCount == 1 else { throw RefusedChange() }
                }
                // Throwing `ProviderAtLimit` rolls the whole change back.
                if let admission = change.admission {
                    try ProviderLimitRows.admit(admission, generationID: change.id, db: db)
                }
                if let feedback = change.limitFeedback { try ProviderLimitRows.adapt(feedback, db: db) }
                if let newAttempt { try newAttempt.insert(db) }
                // Refusing rolls the whole change back: the job and its attempt move together.
                if let attemptUpdate, try !attemptUpdate.apply(db) { throw RefusedChange() }
                // Throwing `BudgetExceeded` rolls the whole change back.
                if newAttempt != nil { try Self.extendReservation(of: change.id, db: db) }
                for output in change.newOutputs {
                    // Outputs a synchronous provider made come already stored.
                    let storedAt = output.isStored ? (output.storedAt ?? Date()).timeIntervalSince1970 : nil
                    try db.run(
                        sql: """
                            INSERT OR IGNORE INTO outputs (generation_id, idx, source, content_type, object_key, bytes, sha256, stored_at)
                            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                            """,
                        arguments: [
                            change.id, output.index, output.source, output.contentType, output.objectKey,
                            output.bytes, output.sha256, storedAt,
                        ])
                    // A retried attempt may bring a fresh source for an output not stored yet.
                    try db.run(
                        sql: """
                            UPDATE outputs SET source = ?, content_type = ?, object_key = ?, bytes = ?, sha256 = ?, stored_at = ?
                            WHERE generation_id = ? AND idx = ? AND stored_at IS NULL
                            """,
                        arguments: [
                            output.source, output.contentType, output.objectKey, output.bytes, output.sha256,
                            storedAt, change.id, output.index,
                        ])
                }
                try Self.append(events, db: db)
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
        return try await batcher.write { db -> Int? in
            guard
                let count = try Int.fetchOne(
                    db,
                    cached: """
                        UPDATE generations SET handler_failures = handler_failures + 1, lease_owner = NULL, lease_expires_at = NULL,
                            next_action_at = ? + (1 << MIN(handler_failures, 10)), version = version + 1, updated_at = ?
                        WHERE id = ? AND lease_owner = ? AND \(Self.active)
                        RETURNING handler_failures
                        """, arguments: [at.timeIntervalSince1970, at.timeIntervalSince1970, id, owner])
            else { return nil }
            if count >= limit {
                try db.run(
                    sql: """
                        UPDATE generations SET status = 'failed', version = version + 1, updated_at = ?, failed_at = ?, error = ?,
                            next_action_at = NULL
                        WHERE id = ?
                        """, arguments: [at.timeIntervalSince1970, at.timeIntervalSince1970, error, id])
                try Self.append(events, db: db)
            }
            return count
        }
    }

    public func lead(_ name: String, owner: String, until: Date, now: Date) async throws -> Bool {
        try await batcher.write { db in
            try db.run(
                sql: """
                    INSERT INTO leader_leases (name, owner, expires_at) VALUES (?, ?, ?)
                    ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
                    WHERE leader_leases.owner = excluded.owner OR leader_leases.expires_at < ?
                    """, arguments: [name, owner, until.timeIntervalSince1970, now.timeIntervalSince1970])
            return db.changesCount == 1
        }
    }

    // MARK: Attempts and outputs

    public func recordAttempt(_ attempt: Attempt) async throws {
        let encoded = try EncodedAttempt(attempt)
        try await batcher.write { db in try encoded.insert(db) }
    }

    public func updateAttempt(_ update: AttemptUpdate) async throws -> Bool {
        let encoded = try EncodedAttemptUpdate(update)
        return try await batcher.write { db in try encoded.apply(db) }
    }

    public func attempts(generationID: String) async throws -> [Attempt] {
        try await pool.read { db in
            try Row.fetchAll(
                db, cached: "SELECT * FROM attempts WHERE generation_id = ? ORDER BY number", arguments: [generationID]
            )
            .map(Self.decodeAttempt)
        }
    }

    public func recordStoredOutput(generationID: String, output: Output, event: Event) async throws -> Bool {
        let events = try EncodedEvent.encode([event])
        return try await batcher.write { db in
            let status = try String.fetchOne(
                db, cached: "SELECT status FROM generations WHERE id = ?", arguments: [generationID])
            guard status == GenerationStatus.uploading.rawValue else { return false }
            try db.run(
                sql: """
                    UPDATE outputs SET object_key = ?, bytes = ?, sha256 = ?, content_type = ?, stored_at = ?
                    WHERE generation_id = ? AND idx = ?
                    """,
                arguments: [
                    output.objectKey, output.bytes, output.sha256, output.contentType,
                    (output.storedAt ?? Date()).timeIntervalSince1970, generationID, output.index,
                ])
            guard db.changesCount == 1 else { return false }
            try Self.append(events, db: db)
            return true
        }
    }

    public func nudgeCheck(generationID: String, attempt: Int, now: Date) async throws -> NudgeResult {
        try await batcher.write { db in
            guard
                let row = try Row.fetchOne(
                    db,
                    cached: "SELECT status, attempts, lease_owner, next_action_at FROM generations WHERE id = ?",
                    arguments: [generationID]),
                row["attempts"] as Int? == attempt
            else { return .notRunning }
            let status = row["status"] as String?
            // Called back before the submission's answer is on record: once it is, go on.
            if status == GenerationStatus.dispatching.rawValue { return .busy }
            guard status == GenerationStatus.running.rawValue else { return .notRunning }
            if (row["lease_owner"] as String?) != nil { return .busy }
            if let due = row["next_action_at"] as Double?, due <= now.timeIntervalSince1970 { return .alreadyDue }
            try db.run(
                sql: """
                    UPDATE generations SET next_action_at = ?, checks = 0
                    WHERE id = ? AND status = 'running' AND lease_owner IS NULL
                    """, arguments: [now.timeIntervalSince1970, generationID])
            return db.changesCount == 1 ? .nudged : .busy
        }
    }

    public func providerLimits() async throws -> [ProviderLimitState] {
        try await pool.read { db in try ProviderLimitRows.states(db: db) }
    }

    // MARK: Recovery

    public func dueWork(now: Date, staleBefore: Date, limit: Int) async throws -> [DueWork] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                cached: """
                    SELECT id, status, next_action_at FROM generations INDEXED BY generations_unleased_due
                    WHERE lease_owner IS NULL AND \(Self.active) AND status = 'retry_wait' AND next_action_at <= :now
                    UNION ALL
                    SELECT id, status, next_action_at FROM generations INDEXED BY generations_unleased_due
                    WHERE lease_owner IS NULL AND \(Self.active) AND status IN ('pending', 'dispatching', 'uploading')
                      AND next_action_at <= :stale
                    ORDER BY next_action_at LIMIT :limit
                    """,
                arguments: [
                    "now": now.timeIntervalSince1970, "stale": staleBefore.timeIntervalSince1970, "limit": limit,
                ]
            )
            .compactMap { row in
                GenerationStatus(rawValue: row["status"]).map {
                    DueWork(id: row["id"], status: $0, leaseExpired: false)
                }
            }
        }
    }

    public func activeCounts() async throws -> [GenerationStatus: Int] {
        try await pool.read { db in
            var counts: [GenerationStatus: Int] = [:]
            for status in GenerationStatus.active { counts[status] = 0 }
            for row in try Row.fetchAll(
                db,
                cached: """
                    SELECT status, COUNT(*) AS count FROM generations WHERE \(Self.active) GROUP BY status
                    """)
            {
                if let status = GenerationStatus(rawValue: row["status"]) { counts[status] = row["count"] }
            }
            return counts
        }
    }

    public func queuePosition(of generation: Generation) async throws -> Int? {
        guard generation.status == .pending, let due = generation.nextActionAt else { return nil }
        return try await pool.read { db in
            try Int.fetchOne(
                db,
                cached: """
                    SELECT COUNT(*) FROM generations INDEXED BY generations_active
                    WHERE \(Self.active) AND status = 'pending' AND next_action_at < ?
                    """, arguments: [due.timeIntervalSince1970]) ?? 0
        }
    }

    public func pastDeadline(now: Date, limit: Int) async throws -> [Generation] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                cached: """
                    SELECT * FROM generations INDEXED BY generations_deadline WHERE \(Self.active) AND deadline_at < ?
                    ORDER BY deadline_at LIMIT ?
                    """, arguments: [now.timeIntervalSince1970, limit]
            )
            .compactMap { try? Self.decodeGeneration($0, db: db) }  // one unreadable row must not hold up the rest
        }
    }

    public func openAttemptsOfEndedGenerations(submittingBefore: Date, limit: Int) async throws -> [Attempt] {
        try await pool.read { db in
            // In random order, so that a provider that cannot be reached does not hold up the rest.
            try Row.fetchAll(
                db,
                cached: """
                    SELECT a.* FROM attempts a INDEXED BY attempts_open JOIN generations g ON g.id = a.generation_id
                    WHERE a.state IN ('submitting', 'submitted') AND g.status IN ('failed', 'cancelled')
                      AND (a.state = 'submitted' OR a.created_at < ?)
                    ORDER BY RANDOM() LIMIT ?
                    """, arguments: [submittingBefore.timeIntervalSince1970, limit]
            )
            .map(Self.decodeAttempt)
        }
    }

    public func expire(eventsBefore: Date, keysBefore: Date, limit: Int) async throws -> Int {
        try await batcher.write { db in
            try db.run(
                sql: """
                    DELETE FROM events WHERE seq IN (SELECT seq FROM events INDEXED BY events_at WHERE at < ? ORDER BY at LIMIT ?)
                    """, arguments: [eventsBefore.timeIntervalSince1970, limit])
            var count = db.changesCount
            try db.run(
                sql: """
                    DELETE FROM idempotency_keys WHERE rowid IN
                        (SELECT rowid FROM idempotency_keys INDEXED BY idempotency_keys_created WHERE created_at < ? LIMIT ?)
                    """, arguments: [keysBefore.timeIntervalSince1970, limit])
            count += db.changesCount
            // Webhook deliveries that ended (delivered or given up) go with their events.
            let ended = """
                SELECT id FROM webhook_deliveries INDEXED BY webhook_deliveries_ended
                WHERE state != 'pending' AND created_at < ? ORDER BY created_at LIMIT ?
                """
            let deliveries = try String.fetchAll(
                db, cached: ended, arguments: [eventsBefore.timeIntervalSince1970, limit])
            for id in deliveries {
                try db.run(sql: "DELETE FROM webhook_attempts WHERE delivery_id = ?", arguments: [id])
                try db.run(sql: "DELETE FROM webhook_deliveries WHERE id = ?", arguments: [id])
            }
            count += deliveries.count
            // The error log and resolved alerts go with the events too.
            try db.run(
                sql: """
                    DELETE FROM error_log WHERE id IN
                        (SELECT id FROM error_log INDEXED BY error_log_at WHERE at < ? ORDER BY at LIMIT ?)
                    """, arguments: [eventsBefore.timeIntervalSince1970, limit])
            count += db.changesCount
            try db.run(
                sql: """
                    DELETE FROM alerts WHERE id IN
                        (SELECT id FROM alerts INDEXED BY alerts_resolved WHERE resolved_at < ? LIMIT ?)
                    """, arguments: [eventsBefore.timeIntervalSince1970, limit])
            count += db.changesCount
            return count
        }
    }

    public func possibleDoubleCharges() async throws -> [String: Int] {
        try await pool.read { db in
            var counts: [String: Int] = [:]
            for row in try Row.fetchAll(
                db,
                cached: """
                    SELECT provider, COUNT(*) AS count FROM attempts WHERE possible_double_charge = 1 GROUP BY provider
                    """)
            {
                counts[row["provider"]] = row["count"]
            }
            return counts
        }
    }

    // MARK: Events

    public func events(generationID: String, after seq: Int64, limit: Int) async throws -> [StoredEvent] {
        try await pool.read { db in
            try Row.fetchAll(
                db, cached: "SELECT * FROM events WHERE generation_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                arguments: [generationID, seq, limit]
            )
            .compactMap(Self.decodeEvent)
        }
    }

    public func events(ownerKeyID: String, after seq: Int64, limit: Int, scan: Int) async throws
        -> (events: [StoredEvent], through: Int64)
    {
        try await pool.read { db in
            let newest = try Int64.fetchOne(db, cached: "SELECT MAX(seq) FROM events") ?? 0
            let upTo = min(newest, seq + Int64(scan))
            let found = try Row.fetchAll(
                db,
                cached: """
                    SELECT e.* FROM events e JOIN generations g ON g.id = e.generation_id
                    WHERE e.seq > ? AND e.seq <= ? AND g.owner_key_id = ? ORDER BY e.seq LIMIT ?
                    """, arguments: [seq, upTo, ownerKeyID, limit]
            )
            .compactMap(Self.decodeEvent)
            return (found, found.count == limit ? found.last!.seq : max(seq, upTo))
        }
    }

    public func lastEventSeq() async throws -> Int64 {
        try await pool.read { db in try Int64.fetchOne(db, cached: "SELECT MAX(seq) FROM events") ?? 0 }
    }

    /// An event row; nil for a type this build does not know (written by a newer one).
    static func decodeEvent(_ row: Row) throws -> StoredEvent? {
        guard let type = EventType(rawValue: row["type"]) else { return nil }
        let payload: String = row["payload"]
        return StoredEvent(
            seq: row["seq"],
            event: Event(
                try EventPayload.decode(type, from: Data(payload.utf8)), generationID: row["generation_id"],
                at: Date(timeIntervalSince1970: row["at"])))
    }

    // MARK: Rows

    /// Every status but the terminal ones, word for word as in the partial indexes' WHERE
    /// clauses: SQLite uses a partial index only for queries that repeat its condition.
    static let active = SQLiteSchema.active

    static func append(_ events: [EncodedEvent], db: Database) throws {
        for event in events {
            try db.run(
                sql: "INSERT INTO events (generation_id, type, at, payload) VALUES (?, ?, ?, ?)",
                arguments: [event.generationID, event.type, event.at, event.payload])
            if let webhook = event.webhook {
                try makeWebhookDelivery(webhook, of: event, seq: db.lastInsertedRowID, db: db)
            }
        }
    }

    static func decodeAttempt(_ row: Row) throws -> Attempt {
        try EncodedAttempt.decode(
            generationID: row["generation_id"], number: row["number"], provider: row["provider"],
            clientReference: row["client_reference"], providerTaskID: row["provider_task_id"],
            indexes: row["output_indexes"], state: row["state"], error: row["error"], createdAt: row["created_at"],
            finishedAt: row["finished_at"], possibleDoubleCharge: (row["possible_double_charge"] as Bool?) ?? false,
            model: row["model"], cost: row["cost"], charge: row["charge"],
            chargesOnAcceptance: row["charges_on_acceptance"])
    }

    static func fetchGeneration(id: String, db: Database) throws -> Generation? {
        guard let row = try Row.fetchOne(db, cached: "SELECT * FROM generations WHERE id = ?", arguments: [id]) else {
            return nil
        }
        return try decodeGeneration(row, db: db)
    }

    static func decodeError(_ text: String?) throws -> GenGateError? {
        guard let text else { return nil }
        return try JSONCoding.decode(GenGateError.self, from: Data(text.utf8))
    }

    static func decodeGeneration(_ row: Row, db: Database) throws -> Generation {
        let id: String = row["id"]
        let requestText: String = row["request"]
        let request = try JSONCoding.decode(GenerationRequest.self, from: Data(requestText.utf8))
        func date(_ column: String) -> Date? {
            (row[column] as Double?).map(Date.init(timeIntervalSince1970:))
        }
        var phases: [GenerationStatus: Date] = [:]
        for status in GenerationStatus.allCases where status != .pending && status != .waiting {
            if let at = date("\(status.rawValue)_at") { phases[status] = at }
        }
        phases[.pending] = date("created_at")
        let outputs = try Row.fetchAll(
            db, cached: "SELECT * FROM outputs WHERE generation_id = ? ORDER BY idx", arguments: [id]
        )
        .map { output in
            Output(
                index: output["idx"], source: output["source"], contentType: output["content_type"],
                objectKey: output["object_key"], bytes: output["bytes"], sha256: output["sha256"],
                storedAt: (output["stored_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
        }
        let statusText: String = row["status"]
        guard let status = GenerationStatus(rawValue: statusText) else {
            throw StoreError.schemaMismatch("generation \(id) has unknown status \(statusText)")
        }
        return Generation(
            id: id, ownerKeyID: row["owner_key_id"], request: request, provider: row["provider"], status: status,
            version: row["version"], progress: row["progress"], attempts: row["attempts"],
            error: try decodeError(row["error"]), providerTaskID: row["provider_task_id"],
            leaseOwner: row["lease_owner"], leaseExpiresAt: date("lease_expires_at"),
            nextActionAt: date("next_action_at"),
            deadlineAt: date("deadline_at") ?? Date.distantFuture, createdAt: date("created_at") ?? Date(),
            updatedAt: date("updated_at") ?? Date(), phaseTimes: phases, outputs: outputs, checks: row["checks"],
            checkFailures: row["check_failures"], cancelAt: date("cancel_at"),
            route: try (row["route"] as String?).map { try JSONCoding.decode([String].self, from: Data($0.utf8)) }
                ?? [],
            routeIndex: row["route_index"], batchID: row["batch_id"], priority: row["priority"],
            inputs: try (row["inputs"] as String?).map { try StoredJSON.decode([PreparedInput].self, $0) } ?? [],
            waitsFor: row["waits_for"], reservedCost: row["reserved_cost"],
            experiment: (row["experiment_id"] as String?).map {
                ExperimentAssignment(experimentID: $0, variant: row["experiment_variant"] ?? "")
            })
    }
}

/// A change the store refused part-way (an attempt no longer in an expected state); thrown to
/// roll the change back, never seen by callers.
struct RefusedChange: Error {}

/// The `provider_limits` table: admissions and adaptive limits inside a transition's transaction
/// (the writer lock makes the count and the token exact across processes).
enum ProviderLimitRows {
    static func row(_ provider: String, db: Database) throws -> AdaptiveLimit.Row? {
        try Row.fetchOne(db, cached: "SELECT * FROM provider_limits WHERE provider = ?", arguments: [provider]).map {
            AdaptiveLimit.Row(
                concurrency: $0["concurrency"], rate: $0["rate"], tokens: $0["tokens"], refilledAt: $0["refilled_at"],
                decreasedAt: $0["decreased_at"])
        }
    }

    static func save(_ row: AdaptiveLimit.Row, provider: String, db: Database) throws {
        try db.run(
            sql: """
                INSERT INTO provider_limits (provider, concurrency, rate, tokens, refilled_at, decreased_at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (provider) DO UPDATE SET concurrency = excluded.concurrency, rate = excluded.rate,
                    tokens = excluded.tokens, refilled_at = excluded.refilled_at, decreased_at = excluded.decreased_at
                """,
            arguments: [provider, row.concurrency, row.rate, row.tokens, row.refilledAt, row.decreasedAt])
    }

    /// Provider tasks open now, but for `excluding`'s own.
    static func open(_ provider: String, excluding: String?, db: Database) throws -> Int {
        try Int.fetchOne(
            db,
            cached: """
                SELECT COUNT(*) FROM generations INDEXED BY generations_provider_open
                WHERE status IN ('dispatching', 'running') AND provider = ? AND id != ?
                """, arguments: [provider, excluding ?? ""]) ?? 0
    }

    static func admit(_ admission: ProviderAdmission, generationID: String, db: Database) throws {
        let stored = try row(admission.provider, db: db)
        let limits = admission.limits
        // Nothing configured and nothing learned: no limit, nothing to count.
        if stored == nil && limits.maxConcurrency == nil && limits.maxRequestsPerSecond == nil { return }
        let now = Date().timeIntervalSince1970
        let current = stored ?? .initial(limits, now: now)
        let inFlight =
            admission.replacing || current.clamped(to: limits).concurrency == nil
            ? 0 : try open(admission.provider, excluding: generationID, db: db)
        switch AdaptiveLimit.admit(current, inFlight: inFlight, limits: limits, provider: admission.provider, now: now)
        {
        case .success(let next):
            if next != stored { try save(next, provider: admission.provider, db: db) }
        case .failure(let refusal):
            throw refusal
        }
    }

    static func adapt(_ feedback: LimitFeedback, db: Database) throws {
        let stored = try row(feedback.provider, db: db)
        if stored == nil && !feedback.throttled { return }
        let inFlight = try open(feedback.provider, excluding: nil, db: db)
        let now = Date().timeIntervalSince1970
        if let next = AdaptiveLimit.adapt(stored, feedback: feedback, inFlight: inFlight, now: now) {
            try save(next, provider: feedback.provider, db: db)
        }
    }

    static func states(db: Database) throws -> [ProviderLimitState] {
        var open: [String: Int] = [:]
        for row in try Row.fetchAll(
            db,
            cached: """
                SELECT provider, COUNT(*) AS open FROM generations INDEXED BY generations_provider_open
                WHERE status IN ('dispatching', 'running') GROUP BY provider
                """)
        {
            open[row["provider"]] = row["open"]
        }
        var rows: [String: AdaptiveLimit.Row] = [:]
        for row in try Row.fetchAll(db, cached: "SELECT * FROM provider_limits") {
            rows[row["provider"]] = AdaptiveLimit.Row(
                concurrency: row["concurrency"], rate: row["rate"], tokens: row["tokens"],
                refilledAt: row["refilled_at"], decreasedAt: row["decreased_at"])
        }
        return AdaptiveLimit.states(open: open, rows: rows, now: Date().timeIntervalSince1970)
    }
}

extension EncodedAttempt {
    func insert(_ db: Database) throws {
        try db.run(
            sql: """
                INSERT INTO attempts (generation_id, number, provider, client_reference, provider_task_id, output_indexes,
                    state, error, created_at, finished_at, model, cost, charge, charges_on_acceptance)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                attempt.generationID, attempt.number, attempt.provider, attempt.clientReference, attempt.providerTaskID,
                indexes, attempt.state.rawValue, error, attempt.createdAt.timeIntervalSince1970,
                attempt.finishedAt?.timeIntervalSince1970, attempt.model, attempt.cost, charge,
                attempt.chargesOnAcceptance,
            ])
    }
}

extension EncodedAttemptUpdate {
    /// False if the attempt is not in one of the expected states (nothing written).
    func apply(_ db: Database) throws -> Bool {
        var arguments: StatementArguments = [
            update.to.rawValue, update.providerTaskID, error, finishedAt, update.possibleDoubleCharge, charge,
            update.cost, update.generationID, update.number,
        ]
        arguments += StatementArguments(expected)
        try db.run(
            sql: """
                UPDATE attempts SET state = ?, provider_task_id = COALESCE(?, provider_task_id), error = COALESCE(?, error),
                    finished_at = COALESCE(?, finished_at), possible_double_charge = MAX(possible_double_charge, ?),
                    charge = COALESCE(?, charge), cost = COALESCE(?, cost)
                WHERE generation_id = ? AND number = ? AND state IN (\(databaseQuestionMarks(count: expected.count)))
                """, arguments: arguments)
        return db.changesCount == 1
    }
}

/// Hot statements go through GRDB's statement cache: compiled (and authorized) once per
/// connection instead of on every call, which profiling showed as a tenth of a poller's CPU.
extension Database {
    func run(sql: String, arguments: StatementArguments = StatementArguments()) throws {
        try cachedStatement(sql: sql).execute(arguments: arguments)
    }
}

extension Row {
    static func fetchAll(_ db: Database, cached sql: String, arguments: StatementArguments = StatementArguments())
        throws -> [Row]
    {
        try fetchAll(db.cachedStatement(sql: sql), arguments: arguments)
    }

    static func fetchOne(_ db: Database, cached sql: String, arguments: StatementArguments = StatementArguments())
        throws -> Row?
    {
        try fetchOne(db.cachedStatement(sql: sql), arguments: arguments)
    }
}

extension DatabaseValueConvertible where Self: StatementColumnConvertible {
    static func fetchAll(_ db: Database, cached sql: String, arguments: StatementArguments = StatementArguments())
        throws -> [Self]
    {
        try fetchAll(db.cachedStatement(sql: sql), arguments: arguments)
    }

    static func fetchOne(_ db: Database, cached sql: String, arguments: StatementArguments = StatementArguments())
        throws -> Self?
    {
        try fetchOne(db.cachedStatement(sql: sql), arguments: arguments)
    }
}

extension StoreError {
    /// Whether `error` says the store is busy or out of reach right now (SQLite's writer lock
    /// held past the busy timeout by others; a PostgreSQL server, connection or lock not had in
    /// time): the write did not happen, and trying again shortly is right. Other failures (a
    /// full disk, an I/O error during a commit, whose outcome is unknown) are not this: they do
    /// not pass in a second, and a blind retry could make a second generation.
    public static func isUnavailable(_ error: any Error) -> Bool {
        if case .unavailable = error as? StoreError { return true }
        guard let error = error as? DatabaseError else { return false }
        return error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED
    }
}
