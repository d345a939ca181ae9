import Foundation
import GenGateCore
import GenGateStore
import PostgresNIO

/// Budgets, spend totals and usage on PostgreSQL (see `SpendStore`; each statement mirrors
/// `SQLiteStore`'s). Writes hold the writer lock, so a reservation's check and its update see
/// no other writer between them.
extension PostgresStore {
    static func reserve(
        _ amount: Double, unpriced: String? = nil, owner: String, at: Date, db: PostgresConnection
    ) async throws {
        let (day, month) = SpendPeriod.names(at: at)
        try await db.run(
            """
            INSERT INTO key_spend (key_id, period, amount) VALUES ($1, $2, 0), ($1, $3, 0)
            ON CONFLICT (key_id, period) DO NOTHING
            """, [owner, day, month])
        if let row = try await db.row("SELECT budget_daily, budget_monthly FROM api_keys WHERE id = $1", [owner]) {
            let budgets = KeyBudgets(
                daily: try row.get("budget_daily", as: Double?.self),
                monthly: try row.get("budget_monthly", as: Double?.self))
            if budgets.daily != nil || budgets.monthly != nil {
                if let unpriced { throw UnpricedModel(model: unpriced) }
                try SpendPeriod.check(
                    amount, budgets: budgets, committed: try await committed(owner, day, month, db: db))
            }
        }
        guard amount != 0 else { return }
        try await db.run(
            "UPDATE key_spend SET amount = amount + $1 WHERE key_id = $2 AND period IN ($3, $4)",
            [amount, owner, day, month])
    }

    /// As `SQLiteStore.extendReservation`: a new attempt that takes what the job may cost past
    /// what it holds back is held back too, within its key's budgets, or refused.
    static func extendReservation(of id: String, db: PostgresConnection) async throws {
        guard
            let row = try await db.row(
                "SELECT owner_key_id, created_at, reserved_cost FROM generations WHERE id = $1", [id]),
            let reserved = try row.get("reserved_cost", as: Double?.self)
        else { return }
        let charged = ChargedSQL.charged("a", boolean: true)
        let exposure: Double =
            try await db.row(
                """
                SELECT COALESCE(SUM(COALESCE(a.cost, 0)), 0)::double precision AS exposure FROM attempts a
                WHERE a.generation_id = $1 AND (a.state IN ('submitting', 'submitted') OR \(charged))
                """, [id]
            )?.get("exposure") ?? 0
        let extra = exposure - reserved
        guard extra > SpendPeriod.slack else { return }
        try await reserve(
            extra, owner: try row.get("owner_key_id"), at: Date(timeIntervalSince1970: try row.get("created_at")),
            db: db)
        try await db.run("UPDATE generations SET reserved_cost = reserved_cost + $1 WHERE id = $2", [extra, id])
    }

    static func committed(_ owner: String, _ day: String, _ month: String, db: PostgresConnection) async throws
        -> KeySpend
    {
        var spend = KeySpend(day: 0, month: 0)
        for row in try await db.rows(
            "SELECT period, amount FROM key_spend WHERE key_id = $1 AND period IN ($2, $3)", [owner, day, month])
        {
            let amount: Double = try row.get("amount")
            if try row.get("period", as: String.self) == day { spend.day = amount } else { spend.month = amount }
        }
        return spend
    }

    public func updateAPIKey(id: String, budgets: BudgetChange) async throws -> APIKey? {
        try await write { db -> APIKey? in
            var assignments: [String] = []
            var values: [any SQLValue] = []
            if let daily = budgets.daily {
                values.append(daily)
                assignments.append("budget_daily = $\(values.count)::double precision")
            }
            if let monthly = budgets.monthly {
                values.append(monthly)
                assignments.append("budget_monthly = $\(values.count)::double precision")
            }
            if !assignments.isEmpty {
                values.append(id)
                try await db.run(
                    """
                    UPDATE api_keys SET \(assignments.joined(separator: ", "))
                    WHERE id = $\(values.count) AND revoked_at IS NULL
                    """, values)
            }
            return try await db.row("SELECT * FROM api_keys WHERE id = $1 AND revoked_at IS NULL", [id]).map(
                Self.decodeKey)
        }
    }

    public func apiKey(id: String) async throws -> APIKey? {
        try await read { db in try await db.row("SELECT * FROM api_keys WHERE id = $1", [id]).map(Self.decodeKey) }
    }

    public func spend(keyID: String, at: Date) async throws -> KeySpend {
        let (day, month) = SpendPeriod.names(at: at)
        return try await read { db in try await Self.committed(keyID, day, month, db: db) }
    }

    public func usage(from: Date, to: Date, keyID: String?) async throws -> [UsageRow] {
        let charged = ChargedSQL.charged("a", boolean: true)
        var sql = """
            SELECT to_char(to_timestamp(floor(a.created_at)) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
                g.owner_key_id AS key_id, COALESCE(a.model, g.model) AS model, a.provider AS provider,
                COUNT(DISTINCT a.generation_id)::bigint AS jobs, COUNT(*)::bigint AS attempts,
                SUM(CASE WHEN \(charged) THEN 1 ELSE 0 END)::bigint AS charged_attempts,
                SUM(CASE WHEN \(charged) THEN COALESCE(a.cost, 0) ELSE 0 END)::double precision AS amount,
                SUM(CASE WHEN \(charged) AND a.state <> 'succeeded' THEN COALESCE(a.cost, 0) ELSE 0 END)::double precision
                    AS wasted,
                SUM(CASE WHEN a.possible_double_charge THEN 1 ELSE 0 END)::bigint AS double_charges,
                SUM((a.charge::json ->> 'credits')::double precision) AS credits,
                SUM((a.charge::json ->> 'input_tokens')::bigint)::bigint AS input_tokens,
                SUM((a.charge::json ->> 'output_tokens')::bigint)::bigint AS output_tokens
            FROM attempts a JOIN generations g ON g.id = a.generation_id
            WHERE a.created_at >= $1 AND a.created_at < $2
            """
        var values: [any SQLValue] = [from.timeIntervalSince1970, to.timeIntervalSince1970]
        if let keyID {
            sql += " AND g.owner_key_id = $3"
            values.append(keyID)
        }
        sql += " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        let finalSQL = sql
        let finalValues = values
        return try await read { db in
            try await db.rows(finalSQL, finalValues).map { row in
                UsageRow(
                    day: try row.get("day"), keyID: try row.get("key_id"), model: try row.get("model"),
                    provider: try row.get("provider"), jobs: try row.get("jobs"), attempts: try row.get("attempts"),
                    chargedAttempts: try row.get("charged_attempts"), amount: try row.get("amount"),
                    wasted: try row.get("wasted"), doubleCharges: try row.get("double_charges"),
                    reported: ProviderCharge(
                        credits: try row.get("credits"), inputTokens: try row.get("input_tokens", as: Int?.self),
                        outputTokens: try row.get("output_tokens", as: Int?.self)))
            }
        }
    }
}
