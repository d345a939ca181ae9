import Foundation
import GRDB
import GenGateCore

/// The embedded store: one SQLite file in WAL mode, shared by every service on the host.
///
/// Each process opens its own `DatabasePool`; writers queue on SQLite's lock for up to
/// `busyTimeout` instead of failing (GRDB opens write transactions IMMEDIATE). Transactions are
/// short and never span a network call. Migrations run only through `migrate()` (from
/// `gengate up` or `gengate migrate`), never concurrently from several services.
public final class SQLiteStore: GenerationStore {
    /// How hard a commit is on the disk: `full` survives power loss, `normal` a process crash.
    public enum Durability: String, Codable, Sendable {
        case full
        case normal
    }

    let pool: DatabasePool

    /// Opens the database at `path`. Unless `migrate` is true, the schema must already be
    /// current, or this throws `StoreError.schemaMismatch` saying what to run.
    public init(path: String, durability: Durability = .full, busyTimeout: TimeInterval = 10, migrate: Bool = false) throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(busyTimeout)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(durability == .full ? "FULL" : "NORMAL")")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        pool = try DatabasePool(path: path, configuration: configuration)
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

    // MARK: API keys

    public func createAPIKey(name: String, isAdmin: Bool) async throws -> (key: APIKey, secret: String) {
        let key = APIKey(id: Identifier.make("key"), name: name, isAdmin: isAdmin, createdAt: Date())
        let secret = "gg_" + Identifier.randomToken(count: 40)
        let hash = Digest.sha256Hex(secret)
        try await pool.write { db in
            try db.execute(
                sql: "INSERT INTO api_keys (id, name, secret_hash, is_admin, created_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [key.id, key.name, hash, key.isAdmin, key.createdAt.timeIntervalSince1970])
        }
        return (key, secret)
    }

    public func apiKey(secret: String) async throws -> APIKey? {
        let hash = Digest.sha256Hex(secret)
        return try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM api_keys WHERE secret_hash = ? AND revoked_at IS NULL", arguments: [hash])
                .map { row in
                    APIKey(id: row["id"], name: row["name"], isAdmin: row["is_admin"],
                           createdAt: Date(timeIntervalSince1970: row["created_at"]))
                }
        }
    }

    public func apiKeyCount() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM api_keys") ?? 0 }
    }

    // MARK: Generations

    public func insert(_ generation: Generation, event: Event) async throws {
        let request = try JSONCoding.encode(generation.request)
        try await pool.write { db in
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM generations WHERE id = ?", arguments: [generation.id]) != nil {
                throw StoreError.duplicateID(generation.id)
            }
            try db.execute(sql: """
                INSERT INTO generations (id, owner_key_id, model, provider, request, status, version, progress, attempts,
                    next_action_at, deadline_at, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [
                    generation.id, generation.ownerKeyID, generation.request.model, generation.provider,
                    String(decoding: request, as: UTF8.self), generation.status.rawValue, generation.version,
                    generation.progress, generation.attempts, generation.nextActionAt?.timeIntervalSince1970,
                    generation.deadlineAt.timeIntervalSince1970, generation.createdAt.timeIntervalSince1970,
                    generation.updatedAt.timeIntervalSince1970,
                ])
            try Self.append([event], db: db)
        }
    }

    public func generation(id: String) async throws -> Generation? {
        try await pool.read { db in try Self.fetchGeneration(id: id, db: db) }
    }

    public func list(ownerKeyID: String, status: GenerationStatus?, after cursor: String?, limit: Int) async throws -> [Generation] {
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
            let rows = try Row.fetchAll(db, sql: sql, arguments: arguments)
            return try rows.map { try Self.decodeGeneration($0, db: db) }
        }
    }

    public func claim(id: String, statuses: Set<GenerationStatus>, owner: String, leaseUntil: Date, now: Date) async throws -> Generation? {
        let statusList = statuses.map(\.rawValue)
        return try await pool.write { db in
            let placeholders = databaseQuestionMarks(count: statusList.count)
            var arguments: StatementArguments = [owner, leaseUntil.timeIntervalSince1970, now.timeIntervalSince1970, id]
            arguments += StatementArguments(statusList)
            arguments += [now.timeIntervalSince1970, now.timeIntervalSince1970]
            try db.execute(sql: """
                UPDATE generations SET lease_owner = ?, lease_expires_at = ?, version = version + 1, updated_at = ?
                WHERE id = ? AND status IN (\(placeholders))
                  AND (lease_owner IS NULL OR lease_expires_at < ?)
                  AND (next_action_at IS NULL OR next_action_at <= ? OR lease_owner IS NOT NULL)
                """, arguments: arguments)
            guard db.changesCount == 1 else { return nil }
            return try Self.fetchGeneration(id: id, db: db)
        }
    }

    public func renewLease(id: String, owner: String, version: Int, until: Date) async throws -> Bool {
        try await pool.write { db in
            try db.execute(
                sql: "UPDATE generations SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? AND version = ?",
                arguments: [until.timeIntervalSince1970, id, owner, version])
            return db.changesCount == 1
        }
    }

    public func releaseLease(id: String, owner: String, version: Int, nextActionAt: Date) async throws -> Bool {
        try await pool.write { db in
            try db.execute(sql: """
                UPDATE generations SET lease_owner = NULL, lease_expires_at = NULL, next_action_at = ?
                WHERE id = ? AND lease_owner = ? AND version = ?
                """, arguments: [nextActionAt.timeIntervalSince1970, id, owner, version])
            return db.changesCount == 1
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
        let sql = "UPDATE generations SET \(assignments.joined(separator: ", ")) WHERE id = ? AND status = ? AND version = ?"
        let finalArguments = arguments
        return try await pool.write { db in
            try db.execute(sql: sql, arguments: finalArguments)
            guard db.changesCount == 1 else { return nil }
            for output in change.newOutputs {
                try db.execute(sql: """
                    INSERT OR IGNORE INTO outputs (generation_id, idx, source, content_type) VALUES (?, ?, ?, ?)
                    """, arguments: [change.id, output.index, output.source, output.contentType])
                // A retried attempt may bring a fresh source for an output not stored yet.
                try db.execute(sql: """
                    UPDATE outputs SET source = ?, content_type = ? WHERE generation_id = ? AND idx = ? AND stored_at IS NULL
                    """, arguments: [output.source, output.contentType, change.id, output.index])
            }
            try Self.append(change.events, db: db)
            return try Self.fetchGeneration(id: change.id, db: db)
        }
    }

    // MARK: Attempts and outputs

    public func recordAttempt(_ attempt: Attempt) async throws {
        let indexes = String(decoding: try JSONCoding.encode(attempt.outputIndexes), as: UTF8.self)
        let error = try attempt.error.map { String(decoding: try JSONCoding.encode($0), as: UTF8.self) }
        try await pool.write { db in
            try db.execute(sql: """
                INSERT INTO attempts (generation_id, number, provider, client_reference, provider_task_id, output_indexes,
                    state, error, created_at, finished_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [
                    attempt.generationID, attempt.number, attempt.provider, attempt.clientReference, attempt.providerTaskID,
                    indexes, attempt.state.rawValue, error, attempt.createdAt.timeIntervalSince1970,
                    attempt.finishedAt?.timeIntervalSince1970,
                ])
        }
    }

    public func updateAttempt(generationID: String, number: Int, state: Attempt.State, providerTaskID: String?,
                              error: GenGateError?, at: Date) async throws {
        let errorText = try error.map { String(decoding: try JSONCoding.encode($0), as: UTF8.self) }
        let finished: Double? = (state == .submitting || state == .submitted) ? nil : at.timeIntervalSince1970
        try await pool.write { db in
            try db.execute(sql: """
                UPDATE attempts SET state = ?, provider_task_id = COALESCE(?, provider_task_id), error = COALESCE(?, error),
                    finished_at = COALESCE(?, finished_at)
                WHERE generation_id = ? AND number = ?
                """, arguments: [state.rawValue, providerTaskID, errorText, finished, generationID, number])
        }
    }

    public func attempts(generationID: String) async throws -> [Attempt] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM attempts WHERE generation_id = ? ORDER BY number", arguments: [generationID])
                .map { row in
                    let indexes: String = row["output_indexes"]
                    return Attempt(
                        generationID: row["generation_id"], number: row["number"], provider: row["provider"],
                        clientReference: row["client_reference"], providerTaskID: row["provider_task_id"],
                        outputIndexes: try JSONCoding.decoder().decode([Int].self, from: Data(indexes.utf8)),
                        state: Attempt.State(rawValue: row["state"]) ?? .abandoned,
                        error: try Self.decodeError(row["error"]),
                        createdAt: Date(timeIntervalSince1970: row["created_at"]),
                        finishedAt: (row["finished_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
                }
        }
    }

    public func recordStoredOutput(generationID: String, output: Output, event: Event) async throws -> Bool {
        try await pool.write { db in
            let status = try String.fetchOne(db, sql: "SELECT status FROM generations WHERE id = ?", arguments: [generationID])
            guard status == GenerationStatus.uploading.rawValue else { return false }
            try db.execute(sql: """
                UPDATE outputs SET object_key = ?, bytes = ?, sha256 = ?, content_type = ?, stored_at = ?
                WHERE generation_id = ? AND idx = ?
                """, arguments: [output.objectKey, output.bytes, output.sha256, output.contentType,
                                 (output.storedAt ?? Date()).timeIntervalSince1970, generationID, output.index])
            guard db.changesCount == 1 else { return false }
            try Self.append([event], db: db)
            return true
        }
    }

    // MARK: Recovery

    public func dueWork(now: Date, staleBefore: Date, limit: Int) async throws -> [DueWork] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT id, status, lease_owner IS NOT NULL AS leased FROM generations
                WHERE status NOT IN ('completed', 'failed', 'cancelled')
                  AND ((lease_owner IS NOT NULL AND lease_expires_at < :now)
                    OR (lease_owner IS NULL AND status = 'retry_wait' AND next_action_at <= :now)
                    OR (lease_owner IS NULL AND status != 'retry_wait' AND next_action_at <= :stale))
                ORDER BY next_action_at LIMIT :limit
                """, arguments: ["now": now.timeIntervalSince1970, "stale": staleBefore.timeIntervalSince1970, "limit": limit])
                .compactMap { row in
                    guard let status = GenerationStatus(rawValue: row["status"]) else { return nil }
                    return DueWork(id: row["id"], status: status, leaseExpired: row["leased"])
                }
        }
    }

    public func activeCounts() async throws -> [GenerationStatus: Int] {
        try await pool.read { db in
            var counts: [GenerationStatus: Int] = [:]
            for status in GenerationStatus.active { counts[status] = 0 }
            for row in try Row.fetchAll(db, sql: """
                SELECT status, COUNT(*) AS count FROM generations
                WHERE status NOT IN ('completed', 'failed', 'cancelled') GROUP BY status
                """) {
                if let status = GenerationStatus(rawValue: row["status"]) { counts[status] = row["count"] }
            }
            return counts
        }
    }

    public func pastDeadline(now: Date, limit: Int) async throws -> [Generation] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM generations WHERE status NOT IN ('completed', 'failed', 'cancelled') AND deadline_at < ?
                ORDER BY deadline_at LIMIT ?
                """, arguments: [now.timeIntervalSince1970, limit])
                .map { try Self.decodeGeneration($0, db: db) }
        }
    }

    // MARK: Events

    public func events(generationID: String) async throws -> [Event] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM events WHERE generation_id = ? ORDER BY seq", arguments: [generationID])
                .compactMap { row in
                    guard let type = EventType(rawValue: row["type"]) else { return nil }
                    let payload: String = row["payload"]
                    return Event(type, generationID: row["generation_id"], at: Date(timeIntervalSince1970: row["at"]),
                                 payload: try JSONCoding.decoder().decode([String: JSONValue].self, from: Data(payload.utf8)))
                }
        }
    }

    // MARK: Rows

    static func append(_ events: [Event], db: Database) throws {
        for event in events {
            let payload = String(decoding: try JSONCoding.encode(event.payload), as: UTF8.self)
            try db.execute(sql: "INSERT INTO events (generation_id, type, at, payload) VALUES (?, ?, ?, ?)",
                           arguments: [event.generationID, event.type.rawValue, event.at.timeIntervalSince1970, payload])
        }
    }

    static func fetchGeneration(id: String, db: Database) throws -> Generation? {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM generations WHERE id = ?", arguments: [id]) else { return nil }
        return try decodeGeneration(row, db: db)
    }

    static func decodeError(_ text: String?) throws -> GenGateError? {
        guard let text else { return nil }
        return try JSONCoding.decoder().decode(GenGateError.self, from: Data(text.utf8))
    }

    static func decodeGeneration(_ row: Row, db: Database) throws -> Generation {
        let id: String = row["id"]
        let requestText: String = row["request"]
        let request = try JSONCoding.decoder().decode(GenerationRequest.self, from: Data(requestText.utf8))
        func date(_ column: String) -> Date? {
            (row[column] as Double?).map(Date.init(timeIntervalSince1970:))
        }
        var phases: [GenerationStatus: Date] = [:]
        for status in GenerationStatus.allCases where status != .pending {
            if let at = date("\(status.rawValue)_at") { phases[status] = at }
        }
        phases[.pending] = date("created_at")
        let outputs = try Row.fetchAll(db, sql: "SELECT * FROM outputs WHERE generation_id = ? ORDER BY idx", arguments: [id])
            .map { output in
                Output(index: output["idx"], source: output["source"], contentType: output["content_type"],
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
            leaseOwner: row["lease_owner"], leaseExpiresAt: date("lease_expires_at"), nextActionAt: date("next_action_at"),
            deadlineAt: date("deadline_at") ?? Date.distantFuture, createdAt: date("created_at") ?? Date(),
            updatedAt: date("updated_at") ?? Date(), phaseTimes: phases, outputs: outputs)
    }
}
