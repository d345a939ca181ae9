import Foundation
import GRDB
import GenGateCore

/// Budgets, spend totals and usage on SQLite (see `SpendStore`).
extension SQLiteStore {
    /// Within a write: holds `amount` back in `owner`'s totals for the day and month of `at`,
    /// or throws `BudgetExceeded` (the caller's write is rolled back with it); with an
    /// `unpriced` model and a budget, throws `UnpricedModel`.
    static func reserve(_ amount: Double, unpriced: String? = nil, owner: String, at: Date, db: Database) throws {
        let (day, month) = SpendPeriod.names(at: at)
        try db.run(
            sql: "INSERT OR IGNORE INTO key_spend (key_id, period, amount) VALUES (?, ?, 0), (?, ?, 0)",
            arguments: [owner, day, owner, month])
        if let row = try Row.fetchOne(
            db, cached: "SELECT budget_daily, budget_monthly FROM api_keys WHERE id = ?", arguments: [owner]),
            row["budget_daily"] != nil || row["budget_monthly"] != nil
        {
            if let unpriced { throw UnpricedModel(model: unpriced) }
            let budgets = KeyBudgets(daily: row["budget_daily"], monthly: row["budget_monthly"])
            try SpendPeriod.check(amount, budgets: budgets, committed: try committed(owner, day, month, db: db))
        }
        guard amount != 0 else { return }
        try db.run(
            sql: "UPDATE key_spend SET amount = amount + ? WHERE key_id = ? AND period IN (?, ?)",
            arguments: [amount, owner, day, month])
    }

    /// Within a write that records a new attempt: when what the job's attempts may cost (those
    /// charged, and those open, the new one among them) passes what it holds back, the rest is
    /// held back too, within its key's budgets (on the day and month it was submitted), or
    /// `BudgetExceeded` is thrown. So a retry after a charged failure is paid only if the budget
    /// has room for it.
    static func extendReservation(of id: String, db: Database) throws {
        guard
            let row = try Row.fetchOne(
                db, cached: "SELECT owner_key_id, created_at, reserved_cost FROM generations WHERE id = ?",
                arguments: [id]),
            let reserved = row["reserved_cost"] as Double?
        else { return }
        let charged = ChargedSQL.charged("a", boolean: false)
        let exposure =
            try Double.fetchOne(
                db,
                cached: """
                    SELECT COALESCE(SUM(COALESCE(a.cost, 0)), 0) FROM attempts a
                    WHERE a.generation_id = ? AND (a.state IN ('submitting', 'submitted') OR \(charged))
                    """, arguments: [id]) ?? 0
        let extra = exposure - reserved
        guard extra > SpendPeriod.slack else { return }
        try reserve(extra, owner: row["owner_key_id"], at: Date(timeIntervalSince1970: row["created_at"]), db: db)
        try db.run(
            sql: "UPDATE generations SET reserved_cost = reserved_cost + ? WHERE id = ?", arguments: [extra, id])
    }

    static func committed(_ owner: String, _ day: String, _ month: String, db: Database) throws -> KeySpend {
        var spend = KeySpend(day: 0, month: 0)
        for row in try Row.fetchAll(
            db, cached: "SELECT period, amount FROM key_spend WHERE key_id = ? AND period IN (?, ?)",
            arguments: [owner, day, month])
        {
            if (row["period"] as String) == day { spend.day = row["amount"] } else { spend.month = row["amount"] }
        }
        return spend
    }

    public func updateAPIKey(id: String, budgets: BudgetChange) async throws -> APIKey? {
        try await batcher.write { db -> APIKey? in
            var assignments: [String] = []
            var arguments: StatementArguments = []
            if let daily = budgets.daily {
                assignments.append("budget_daily = ?")
                arguments += [daily]
            }
            if let monthly = budgets.monthly {
                assignments.append("budget_monthly = ?")
                arguments += [monthly]
            }
            if !assignments.isEmpty {
                arguments += [id]
                try db.run(
                    sql:
                        "UPDATE api_keys SET \(assignments.joined(separator: ", ")) WHERE id = ? AND revoked_at IS NULL",
                    arguments: arguments)
            }
            return try Row.fetchOne(
                db, cached: "SELECT * FROM api_keys WHERE id = ? AND revoked_at IS NULL", arguments: [id]
            ).map(Self.decodeKey)
        }
    }

    public func apiKey(id: String) async throws -> APIKey? {
        try await pool.read { db in
            try Row.fetchOne(db, cached: "SELECT * FROM api_keys WHERE id = ?", arguments: [id]).map(Self.decodeKey)
        }
    }

    public func spend(keyID: String, at: Date) async throws -> KeySpend {
        let (day, month) = SpendPeriod.names(at: at)
        return try await pool.read { db in try Self.committed(keyID, day, month, db: db) }
    }

    public func usage(from: Date, to: Date, keyID: String?) async throws -> [UsageRow] {
        let charged = ChargedSQL.charged("a", boolean: false)
        var sql = """
            SELECT strftime('%Y-%m-%d', CAST(a.created_at AS INTEGER), 'unixepoch') AS day, g.owner_key_id AS key_id,
                COALESCE(a.model, g.model) AS model, a.provider AS provider,
                COUNT(DISTINCT a.generation_id) AS jobs, COUNT(*) AS attempts,
                SUM(CASE WHEN \(charged) THEN 1 ELSE 0 END) AS charged_attempts,
                SUM(CASE WHEN \(charged) THEN COALESCE(a.cost, 0) ELSE 0 END) AS amount,
                SUM(CASE WHEN \(charged) AND a.state != 'succeeded' THEN COALESCE(a.cost, 0) ELSE 0 END) AS wasted,
                SUM(a.possible_double_charge) AS double_charges,
                SUM(json_extract(a.charge, '$.credits')) AS credits,
                SUM(json_extract(a.charge, '$.input_tokens')) AS input_tokens,
                SUM(json_extract(a.charge, '$.output_tokens')) AS output_tokens
            FROM attempts a INDEXED BY attempts_created JOIN generations g ON g.id = a.generation_id
            WHERE a.created_at >= ? AND a.created_at < ?
            """
        var arguments: StatementArguments = [from.timeIntervalSince1970, to.timeIntervalSince1970]
        if let keyID {
            sql += " AND g.owner_key_id = ?"
            arguments += [keyID]
        }
        sql += " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        let finalSQL = sql
        let finalArguments = arguments
        return try await pool.read { db in
            try Row.fetchAll(db, sql: finalSQL, arguments: finalArguments).map { row in
                UsageRow(
                    day: row["day"], keyID: row["key_id"], model: row["model"], provider: row["provider"],
                    jobs: row["jobs"], attempts: row["attempts"], chargedAttempts: row["charged_attempts"],
                    amount: row["amount"], wasted: row["wasted"], doubleCharges: row["double_charges"],
                    reported: ProviderCharge(
                        credits: row["credits"], inputTokens: row["input_tokens"], outputTokens: row["output_tokens"]))
            }
        }
    }
}
