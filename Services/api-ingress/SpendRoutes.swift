import Foundation
import GenGateCore
import GenGateStore
import Hummingbird

/// What keys spend and the budgets that cap them: `GET /v1/usage`, and a key's budgets shown
/// (`GET /v1/admin/keys/{id}`) and set (`PATCH /v1/admin/keys/{id}`).
struct SpendRoutes: Sendable {
    let routes: GenerationRoutes

    var store: any GenerationStore { routes.store }
    var currency: String { routes.environment.config.pricing.currency }

    func register(on group: RouterGroup<GateContext>) {
        group.get("usage") { request, context in try await usage(request, context) }
        group.get("admin/keys/:id") { _, context in try await showKey(context) }
        group.patch("admin/keys/:id") { request, context in try await updateKey(request, context) }
    }

    /// The most a budget may be set to.
    static let maxBudget = 1_000_000_000.0

    /// `budget_daily` / `budget_monthly` of a key request: a number from 0 up, or (`clearing`)
    /// null to remove it. Problems go to `details`.
    static func budgets(_ fields: [String: JSONValue], clearing: Bool, details: inout [APIError.Detail])
        -> BudgetChange
    {
        var change = BudgetChange()
        for name in ["budget_daily", "budget_monthly"] {
            guard let value = fields[name] else { continue }
            let parsed: Double??
            switch value {
            case .null where clearing:
                parsed = .some(nil)
            case .number(let amount) where amount.isFinite && amount >= 0 && amount <= maxBudget:
                parsed = .some(amount)
            default:
                details.append(
                    .init(
                        path: name,
                        message:
                            "must be a number from 0 to \(Int(maxBudget))\(clearing ? ", or null to remove it" : "")"
                    ))
                continue
            }
            if name == "budget_daily" { change.daily = parsed } else { change.monthly = parsed }
        }
        return change
    }

    /// A key as admin endpoints show it, with what it committed today and this month.
    func view(_ key: APIKey, now: Date = Date()) async throws -> [String: JSONValue] {
        let spend = try await store.spend(keyID: key.id, at: now)
        var fields: [String: JSONValue] = [
            "id": .string(key.id), "object": .string("api_key"), "name": .string(key.name),
            "admin": .bool(key.isAdmin), "created_at": .string(Timestamp.format(key.createdAt)),
            "budget_daily": key.budgets.daily.map(JSONValue.number) ?? .null,
            "budget_monthly": key.budgets.monthly.map(JSONValue.number) ?? .null,
            "spend": .object([
                "currency": .string(currency), "today": .number(Money.rounded(spend.day)),
                "this_month": .number(Money.rounded(spend.month)),
            ]),
        ]
        if let revoked = key.revokedAt { fields["revoked_at"] = .string(Timestamp.format(revoked)) }
        return fields
    }

    func keyID(_ context: GateContext) throws -> String {
        guard let id = context.parameters.get("id"), id.count <= 64 else { throw APIError.notFound("no such key") }
        return id
    }

    func showKey(_ context: GateContext) async throws -> Response {
        _ = try context.requireAdmin()
        let id = try keyID(context)
        guard let key = try await store.apiKey(id: id) else { throw APIError.notFound("no key \(id)") }
        return JSONResponse.make(status: .ok, try await view(key))
    }

    /// Admin only: sets or removes (null) a key's budgets; fields left out keep their value.
    func updateKey(_ request: Request, _ context: GateContext) async throws -> Response {
        _ = try context.requireAdmin()
        let id = try keyID(context)
        let body = try await JSONBody.read(
            request, context: context, limit: routes.environment.config.http.maxBodyBytes
        ).value
        guard case .object(let fields) = body else { throw APIError.invalidRequest("the body must be a JSON object") }
        var details: [APIError.Detail] = []
        for name in fields.keys.sorted() where !["budget_daily", "budget_monthly"].contains(name) {
            details.append(.init(path: name, message: "unknown field (budget_daily and budget_monthly can be changed)"))
        }
        let change = Self.budgets(fields, clearing: true, details: &details)
        guard details.isEmpty else { throw APIError.invalidRequest("invalid key update", details: details) }
        guard let key = try await store.updateAPIKey(id: id, budgets: change) else {
            throw APIError.notFound("no key \(id), or it is revoked")
        }
        context.logger.notice(
            "API key budgets changed",
            metadata: [
                "key": "\(id)", "budget_daily": "\(key.budgets.daily.map { "\($0)" } ?? "none")",
                "budget_monthly": "\(key.budgets.monthly.map { "\($0)" } ?? "none")",
            ])
        return JSONResponse.make(status: .ok, try await view(key))
    }

    static let dimensions = ["day", "key", "model", "provider"]
    /// The longest span one usage report covers.
    static let maxDays = 366

    /// `GET /v1/usage?from=YYYY-MM-DD&to=YYYY-MM-DD&key=…&group_by=day,key,model,provider`:
    /// spend over UTC days `from`…`to` (both included; by default this month so far), by the
    /// dimensions asked (all four by default), from each attempt's cost on the day it was made.
    /// An admin key sees every key (or one, with `key`); another key sees its own only.
    func usage(_ request: Request, _ context: GateContext) async throws -> Response {
        let caller = try context.requireKey()
        let query = request.uri.queryParameters
        var details: [APIError.Detail] = []
        let now = Date()
        func day(_ name: String, default fallback: Date) -> Date {
            guard let text = query.get(name) else { return fallback }
            guard let date = Self.parseDay(text) else {
                details.append(.init(path: name, message: "must be a UTC day as YYYY-MM-DD, got \(text.prefix(40))"))
                return fallback
            }
            return date
        }
        let starts = SpendPeriod.starts(of: now)
        let from = day("from", default: starts.month)
        let to = day("to", default: starts.day)
        let end = to.addingTimeInterval(86_400)
        if details.isEmpty {
            if from > to {
                details.append(.init(path: "from", message: "comes after to"))
            } else if end.timeIntervalSince(from) > Double(Self.maxDays) * 86_400 {
                details.append(.init(path: "to", message: "a report covers at most \(Self.maxDays) days"))
            }
        }
        var groups = Self.dimensions
        if let text = query.get("group_by") {
            let asked = text.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            if let wrong = asked.first(where: { !Self.dimensions.contains($0) }) {
                details.append(
                    .init(
                        path: "group_by",
                        message: "\(wrong.prefix(40)) is not one of \(Self.dimensions.joined(separator: ", "))"))
            } else {
                groups = Self.dimensions.filter(asked.contains)
            }
        }
        var keyID = query.get("key")
        if !caller.isAdmin {
            if let keyID, keyID != caller.id { throw APIError.forbidden }
            keyID = caller.id
        }
        guard details.isEmpty else { throw APIError.invalidRequest("invalid usage query", details: details) }
        let rows = try await store.usage(from: from, to: end, keyID: keyID)
        var answer: [String: JSONValue] = [
            "object": .string("usage"), "currency": .string(currency),
            "from": .string(Self.formatDay(from)), "to": .string(Self.formatDay(to)),
            "group_by": .array(groups.map(JSONValue.string)),
            "data": .array(Self.grouped(rows, by: groups)),
            "total": Self.grouped(rows, by: []).first ?? Self.totals(of: []),
        ]
        if let keyID, let key = try await store.apiKey(id: keyID) {
            answer["key"] = .object(try await view(key, now: now))
        }
        return JSONResponse.make(status: .ok, answer)
    }

    /// Rows summed over the dimensions not in `groups`, in order of the ones that are.
    static func grouped(_ rows: [UsageRow], by groups: [String]) -> [JSONValue] {
        func value(_ row: UsageRow, _ dimension: String) -> String {
            switch dimension {
            case "day": return row.day
            case "key": return row.keyID
            case "model": return row.model
            default: return row.provider
            }
        }
        var order: [[String]] = []
        var buckets: [[String]: [UsageRow]] = [:]
        for row in rows {
            let key = groups.map { value(row, $0) }
            if buckets[key] == nil { order.append(key) }
            buckets[key, default: []].append(row)
        }
        return order.sorted { $0.lexicographicallyPrecedes($1) }.map { key in
            guard case .object(var fields) = totals(of: buckets[key] ?? []) else { return .null }
            for (dimension, name) in zip(groups, key) { fields[dimension] = .string(name) }
            return .object(fields)
        }
    }

    /// The sums of `rows`. `jobs` counts a job once per row it has attempts in.
    static func totals(of rows: [UsageRow]) -> JSONValue {
        let reported = rows.reduce(ProviderCharge()) { $0.adding($1.reported) }
        var fields: [String: JSONValue] = [
            "jobs": .number(Double(rows.reduce(0) { $0 + $1.jobs })),
            "attempts": .number(Double(rows.reduce(0) { $0 + $1.attempts })),
            "charged_attempts": .number(Double(rows.reduce(0) { $0 + $1.chargedAttempts })),
            "amount": .number(Money.rounded(rows.reduce(0) { $0 + $1.amount })),
            "wasted": .number(Money.rounded(rows.reduce(0) { $0 + $1.wasted })),
            "double_charges": .number(Double(rows.reduce(0) { $0 + $1.doubleCharges })),
        ]
        if !reported.isEmpty { fields["reported"] = reported.json }
        return .object(fields)
    }

    static func parseDay(_ text: String) -> Date? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard text.count == 10, parts.count == 3, let year = Int(parts[0]), let month = Int(parts[1]),
            let day = Int(parts[2]), (1970...9999).contains(year), (1...12).contains(month), (1...31).contains(day)
        else { return nil }
        let components = DateComponents(year: year, month: month, day: day)
        guard let date = Calendar.utc.date(from: components),
            Calendar.utc.dateComponents([.day], from: date).day == day
        else { return nil }
        return date
    }

    static func formatDay(_ date: Date) -> String {
        SpendPeriod.day(of: date)
    }
}
