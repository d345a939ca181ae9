import Foundation
import GenGateCore
import GenGateStore
import PostgresNIO

/// Attempts, outputs, recovery, the event log and provider limits on PostgreSQL (see
/// `GenerationStore`; each statement mirrors `SQLiteStore`'s).
extension PostgresStore {
    // MARK: Attempts and outputs

    public func recordAttempt(_ attempt: Attempt) async throws {
        let encoded = try EncodedAttempt(attempt)
        try await write { db in try await encoded.insert(db) }
    }

    public func updateAttempt(_ update: AttemptUpdate) async throws -> Bool {
        let encoded = try EncodedAttemptUpdate(update)
        return try await write { db in try await encoded.apply(db) }
    }

    public func attempts(generationID: String) async throws -> [Attempt] {
        try await read { db in
            try await db.rows("SELECT * FROM attempts WHERE generation_id = $1 ORDER BY number", [generationID]).map(
                Self.decodeAttempt)
        }
    }

    public func recordStoredOutput(generationID: String, output: Output, event: Event) async throws -> Bool {
        let events = try EncodedEvent.encode([event])
        return try await write { db -> Bool in
            let status: String? = try await db.row(
                "SELECT status FROM generations WHERE id = $1", [generationID])?.get("status")
            guard status == GenerationStatus.uploading.rawValue else { return false }
            let changed = try await db.changes(
                """
                UPDATE outputs SET object_key = $1, bytes = $2, sha256 = $3, content_type = $4, stored_at = $5
                WHERE generation_id = $6 AND idx = $7
                """,
                [
                    output.objectKey, output.bytes, output.sha256, output.contentType,
                    (output.storedAt ?? Date()).timeIntervalSince1970, generationID, output.index,
                ])
            guard changed == 1 else { return false }
            try await Self.append(events, db: db)
            return true
        }
    }

    public func nudgeCheck(generationID: String, attempt: Int, now: Date) async throws -> NudgeResult {
        try await write { db -> NudgeResult in
            guard
                let row = try await db.row(
                    "SELECT status, attempts, lease_owner, next_action_at FROM generations WHERE id = $1",
                    [generationID]),
                try row.get("attempts", as: Int.self) == attempt
            else { return .notRunning }
            let status: String = try row.get("status")
            // Called back before the submission's answer is on record: once it is, go on.
            if status == GenerationStatus.dispatching.rawValue { return .busy }
            guard status == GenerationStatus.running.rawValue else { return .notRunning }
            if try row.get("lease_owner", as: String?.self) != nil { return .busy }
            if let due = try row.get("next_action_at", as: Double?.self), due <= now.timeIntervalSince1970 {
                return .alreadyDue
            }
            let changed = try await db.changes(
                """
                UPDATE generations SET next_action_at = $1, checks = 0
                WHERE id = $2 AND status = 'running' AND lease_owner IS NULL
                """, [now.timeIntervalSince1970, generationID])
            return changed == 1 ? .nudged : .busy
        }
    }

    public func providerLimits() async throws -> [ProviderLimitState] {
        try await read { db in try await ProviderLimitRows.states(db: db) }
    }

    // MARK: Recovery

    public func dueWork(now: Date, staleBefore: Date, limit: Int) async throws -> [DueWork] {
        try await read { db in
            try await db.rows(
                """
                SELECT id, status, next_action_at FROM generations
                WHERE lease_owner IS NULL AND \(Self.active) AND status = 'retry_wait' AND next_action_at <= $1
                UNION ALL
                SELECT id, status, next_action_at FROM generations
                WHERE lease_owner IS NULL AND \(Self.active) AND status IN ('pending', 'dispatching', 'uploading')
                  AND next_action_at <= $2
                ORDER BY next_action_at LIMIT $3
                """, [now.timeIntervalSince1970, staleBefore.timeIntervalSince1970, limit]
            ).compactMap { row in
                try GenerationStatus(rawValue: try row.get("status")).map {
                    DueWork(id: try row.get("id"), status: $0, leaseExpired: false)
                }
            }
        }
    }

    public func activeCounts() async throws -> [GenerationStatus: Int] {
        try await read { db in
            var counts: [GenerationStatus: Int] = [:]
            for status in GenerationStatus.active { counts[status] = 0 }
            for row in try await db.rows(
                "SELECT status, COUNT(*) AS count FROM generations WHERE \(Self.active) GROUP BY status")
            {
                if let status = GenerationStatus(rawValue: try row.get("status")) {
                    counts[status] = try row.get("count")
                }
            }
            return counts
        }
    }

    public func queuePosition(of generation: Generation) async throws -> Int? {
        guard generation.status == .pending, let due = generation.nextActionAt else { return nil }
        return try await read { db -> Int in
            try await db.row(
                """
                SELECT COUNT(*) AS count FROM generations WHERE \(Self.active) AND status = 'pending' AND next_action_at < $1
                """, [due.timeIntervalSince1970])?.get("count") ?? 0
        }
    }

    public func pastDeadline(now: Date, limit: Int) async throws -> [Generation] {
        try await read { db in
            let ids: [String] = try await db.rows(
                "SELECT id FROM generations WHERE \(Self.active) AND deadline_at < $1 ORDER BY deadline_at LIMIT $2",
                [now.timeIntervalSince1970, limit]
            ).map { try $0.get("id") }
            // One at a time: one unreadable row must not hold up the rest.
            var found: [Generation] = []
            for id in ids {
                do {
                    if let generation = try await Self.generations(where: "id = $1", [id], db: db).first {
                        found.append(generation)
                    }
                } catch let error as PSQLError {
                    throw PostgresStore.classify(error, committing: false)  // the server, not the row
                } catch {
                    continue
                }
            }
            return found
        }
    }

    public func openAttemptsOfEndedGenerations(submittingBefore: Date, limit: Int) async throws -> [Attempt] {
        try await read { db in
            // In random order, so that a provider that cannot be reached does not hold up the rest.
            try await db.rows(
                """
                SELECT a.* FROM attempts a JOIN generations g ON g.id = a.generation_id
                WHERE a.state IN ('submitting', 'submitted') AND g.status IN ('failed', 'cancelled')
                  AND (a.state = 'submitted' OR a.created_at < $1)
                ORDER BY random() LIMIT $2
                """, [submittingBefore.timeIntervalSince1970, limit]
            ).map(Self.decodeAttempt)
        }
    }

    public func expire(eventsBefore: Date, keysBefore: Date, limit: Int) async throws -> Int {
        try await write { db -> Int in
            var count = try await db.changes(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE at < $1 ORDER BY at LIMIT $2)",
                [eventsBefore.timeIntervalSince1970, limit])
            count += try await db.changes(
                """
                DELETE FROM idempotency_keys WHERE (key_id, key) IN
                    (SELECT key_id, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)
                """, [keysBefore.timeIntervalSince1970, limit])
            // Webhook deliveries that ended (delivered or given up) go with their events.
            let deliveries: [String] = try await db.rows(
                """
                SELECT id FROM webhook_deliveries WHERE state != 'pending' AND created_at < $1
                ORDER BY created_at LIMIT $2
                """, [eventsBefore.timeIntervalSince1970, limit]
            ).map { try $0.get("id") }
            if !deliveries.isEmpty {
                try await db.run("DELETE FROM webhook_attempts WHERE delivery_id = ANY($1)", [deliveries])
                try await db.run("DELETE FROM webhook_deliveries WHERE id = ANY($1)", [deliveries])
            }
            // The error log and resolved alerts go with the events too.
            count += try await db.changes(
                "DELETE FROM error_log WHERE id IN (SELECT id FROM error_log WHERE at < $1 ORDER BY at LIMIT $2)",
                [eventsBefore.timeIntervalSince1970, limit])
            count += try await db.changes(
                "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE resolved_at < $1 LIMIT $2)",
                [eventsBefore.timeIntervalSince1970, limit])
            return count + deliveries.count
        }
    }

    public func possibleDoubleCharges() async throws -> [String: Int] {
        try await read { db in
            var counts: [String: Int] = [:]
            for row in try await db.rows(
                "SELECT provider, COUNT(*) AS count FROM attempts WHERE possible_double_charge GROUP BY provider")
            {
                counts[try row.get("provider")] = try row.get("count")
            }
            return counts
        }
    }

    // MARK: Events

    public func events(generationID: String, after seq: Int64, limit: Int) async throws -> [StoredEvent] {
        try await read { db in
            try await db.rows(
                "SELECT * FROM events WHERE generation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                [generationID, seq, limit]
            ).compactMap(Self.decodeEvent)
        }
    }

    public func events(ownerKeyID: String, after seq: Int64, limit: Int, scan: Int) async throws
        -> (events: [StoredEvent], through: Int64)
    {
        try await read { db in
            // Numbers follow commit order (see PostgresWriteBatcher): every number up to the
            // newest seen here is committed, so the next call may start after it.
            let newest: Int64 = try await db.row("SELECT COALESCE(MAX(seq), 0) AS seq FROM events")?.get("seq") ?? 0
            let upTo = min(newest, seq + Int64(scan))
            let found = try await db.rows(
                """
                SELECT e.* FROM events e JOIN generations g ON g.id = e.generation_id
                WHERE e.seq > $1 AND e.seq <= $2 AND g.owner_key_id = $3 ORDER BY e.seq LIMIT $4
                """, [seq, upTo, ownerKeyID, limit]
            ).compactMap(Self.decodeEvent)
            return (found, found.count == limit ? found.last!.seq : max(seq, upTo))
        }
    }

    public func lastEventSeq() async throws -> Int64 {
        try await read { db in try await db.row("SELECT COALESCE(MAX(seq), 0) AS seq FROM events")?.get("seq") ?? 0 }
    }

    /// Appends events in the current write, each with its webhook delivery if its job wants one:
    /// two statements for any number of events (a batch's thousands hold the writer lock for
    /// milliseconds, not one round trip each).
    static func append(_ events: [EncodedEvent], db: PostgresConnection) async throws {
        for chunk in events.chunked(1_000) {
            var values: [any SQLValue] = []
            var rows: [String] = []
            for event in chunk {
                let n = values.count
                rows.append("($\(n + 1), $\(n + 2), $\(n + 3)::double precision, $\(n + 4))")
                values += [event.generationID, event.type, event.at, event.payload] as [any SQLValue]
            }
            let inserted = try await db.rows(
                """
                INSERT INTO events (generation_id, type, at, payload) VALUES \(rows.joined(separator: ", "))
                RETURNING seq, generation_id, type, at
                """, values)
            // Delivery ids were made with the events; any unique one does for any delivery.
            var ids = chunk.compactMap { $0.webhook?.deliveryID }
            var deliveries: [String] = []
            var arguments: [any SQLValue] = []
            for row in inserted {
                guard let generationID: String = try row.get("generation_id"),
                    let type = EventType(rawValue: try row.get("type")), let wanted = WebhookEvent.of(type)
                else { continue }
                let at: Double = try row.get("at")
                let id = ids.popLast() ?? Identifier.make("msg", at: Date(timeIntervalSince1970: at))
                let n = arguments.count
                deliveries.append(
                    "($\(n + 1), $\(n + 2)::bigint, $\(n + 3), $\(n + 4)::double precision, $\(n + 5), $\(n + 6))")
                arguments +=
                    [id, try row.get("seq", as: Int64.self), type.rawValue, at, generationID, wanted.rawValue]
                    as [any SQLValue]
            }
            guard !deliveries.isEmpty else { continue }
            try await db.run(
                """
                INSERT INTO webhook_deliveries
                    (id, generation_id, owner_key_id, event_seq, event_type, url, state, attempts, next_attempt_at,
                     created_at)
                SELECT v.id, g.id, g.owner_key_id, v.seq, v.type, g.webhook_url, 'pending', 0, v.at, v.at
                FROM (VALUES \(deliveries.joined(separator: ", "))) AS v(id, seq, type, at, generation_id, wanted)
                JOIN generations g ON g.id = v.generation_id
                WHERE g.webhook_url IS NOT NULL AND v.wanted = ANY(g.webhook_events)
                """, arguments)
        }
    }

    /// An event row; nil for a type this build does not know (written by a newer one).
    static func decodeEvent(_ row: PostgresRandomAccessRow) throws -> StoredEvent? {
        guard let type = EventType(rawValue: try row.get("type")) else { return nil }
        let payload: String = try row.get("payload")
        return StoredEvent(
            seq: try row.get("seq"),
            event: Event(
                try EventPayload.decode(type, from: Data(payload.utf8)), generationID: try row.get("generation_id"),
                at: Date(timeIntervalSince1970: try row.get("at"))))
    }

    static func decodeAttempt(_ row: PostgresRandomAccessRow) throws -> Attempt {
        try EncodedAttempt.decode(
            generationID: try row.get("generation_id"), number: try row.get("number"),
            provider: try row.get("provider"),
            clientReference: try row.get("client_reference"), providerTaskID: try row.get("provider_task_id"),
            indexes: try row.get("output_indexes"), state: try row.get("state"), error: try row.get("error"),
            createdAt: try row.get("created_at"), finishedAt: try row.get("finished_at"),
            possibleDoubleCharge: try row.get("possible_double_charge"), model: try row.get("model"),
            cost: try row.get("cost"), charge: try row.get("charge"),
            chargesOnAcceptance: try row.get("charges_on_acceptance"))
    }
}

extension EncodedAttempt {
    func insert(_ db: PostgresConnection) async throws {
        try await db.run(
            """
            INSERT INTO attempts (generation_id, number, provider, client_reference, provider_task_id, output_indexes,
                state, error, created_at, finished_at, model, cost, charge, charges_on_acceptance)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
            """,
            [
                attempt.generationID, attempt.number, attempt.provider, attempt.clientReference,
                attempt.providerTaskID, indexes, attempt.state.rawValue, error,
                attempt.createdAt.timeIntervalSince1970, attempt.finishedAt?.timeIntervalSince1970, attempt.model,
                attempt.cost, charge, attempt.chargesOnAcceptance,
            ])
    }
}

extension EncodedAttemptUpdate {
    /// False if the attempt is not in one of the expected states (nothing written).
    func apply(_ db: PostgresConnection) async throws -> Bool {
        try await db.changes(
            """
            UPDATE attempts SET state = $1, provider_task_id = COALESCE($2, provider_task_id),
                error = COALESCE($3, error), finished_at = COALESCE($4, finished_at),
                possible_double_charge = possible_double_charge OR $5, charge = COALESCE($9, charge),
                cost = COALESCE($10, cost)
            WHERE generation_id = $6 AND number = $7 AND state = ANY($8)
            """,
            [
                update.to.rawValue, update.providerTaskID, error, finishedAt, update.possibleDoubleCharge,
                update.generationID, update.number, expected, charge, update.cost,
            ]) == 1
    }
}

/// The `provider_limits` table: admissions and adaptive limits inside a transition's write (the
/// writer lock makes the count and the token exact across hosts).
enum ProviderLimitRows {
    static func row(_ provider: String, db: PostgresConnection) async throws -> AdaptiveLimit.Row? {
        guard let row = try await db.row("SELECT * FROM provider_limits WHERE provider = $1", [provider]) else {
            return nil
        }
        return AdaptiveLimit.Row(
            concurrency: try row.get("concurrency"), rate: try row.get("rate"), tokens: try row.get("tokens"),
            refilledAt: try row.get("refilled_at"), decreasedAt: try row.get("decreased_at"))
    }

    static func save(_ row: AdaptiveLimit.Row, provider: String, db: PostgresConnection) async throws {
        try await db.run(
            """
            INSERT INTO provider_limits (provider, concurrency, rate, tokens, refilled_at, decreased_at)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (provider) DO UPDATE SET concurrency = excluded.concurrency, rate = excluded.rate,
                tokens = excluded.tokens, refilled_at = excluded.refilled_at, decreased_at = excluded.decreased_at
            """, [provider, row.concurrency, row.rate, row.tokens, row.refilledAt, row.decreasedAt])
    }

    /// Provider tasks open now, but for `excluding`'s own.
    static func open(_ provider: String, excluding: String?, db: PostgresConnection) async throws -> Int {
        try await db.row(
            """
            SELECT COUNT(*) AS count FROM generations
            WHERE status IN ('dispatching', 'running') AND provider = $1 AND id != $2
            """, [provider, excluding ?? ""])?.get("count") ?? 0
    }

    static func admit(_ admission: ProviderAdmission, generationID: String, db: PostgresConnection) async throws {
        let stored = try await row(admission.provider, db: db)
        let limits = admission.limits
        // Nothing configured and nothing learned: no limit, nothing to count.
        if stored == nil && limits.maxConcurrency == nil && limits.maxRequestsPerSecond == nil { return }
        let now = Date().timeIntervalSince1970
        let current = stored ?? .initial(limits, now: now)
        let inFlight =
            admission.replacing || current.clamped(to: limits).concurrency == nil
            ? 0 : try await open(admission.provider, excluding: generationID, db: db)
        switch AdaptiveLimit.admit(current, inFlight: inFlight, limits: limits, provider: admission.provider, now: now)
        {
        case .success(let next):
            if next != stored { try await save(next, provider: admission.provider, db: db) }
        case .failure(let refusal):
            throw refusal
        }
    }

    static func adapt(_ feedback: LimitFeedback, db: PostgresConnection) async throws {
        let stored = try await row(feedback.provider, db: db)
        if stored == nil && !feedback.throttled { return }
        let inFlight = try await open(feedback.provider, excluding: nil, db: db)
        let now = Date().timeIntervalSince1970
        if let next = AdaptiveLimit.adapt(stored, feedback: feedback, inFlight: inFlight, now: now) {
            try await save(next, provider: feedback.provider, db: db)
        }
    }

    static func states(db: PostgresConnection) async throws -> [ProviderLimitState] {
        var open: [String: Int] = [:]
        for row in try await db.rows(
            """
            SELECT provider, COUNT(*) AS open FROM generations WHERE status IN ('dispatching', 'running')
            GROUP BY provider
            """)
        {
            open[try row.get("provider")] = try row.get("open")
        }
        var rows: [String: AdaptiveLimit.Row] = [:]
        for row in try await db.rows("SELECT * FROM provider_limits") {
            rows[try row.get("provider")] = AdaptiveLimit.Row(
                concurrency: try row.get("concurrency"), rate: try row.get("rate"), tokens: try row.get("tokens"),
                refilledAt: try row.get("refilled_at"), decreasedAt: try row.get("decreased_at"))
        }
        return AdaptiveLimit.states(open: open, rows: rows, now: Date().timeIntervalSince1970)
    }
}

extension Array {
    func chunked(_ size: Int) -> [[Element]] {
        stride(from: 0, to: count, by: size).map { Array(self[$0..<Swift.min($0 + size, count)]) }
    }
}
