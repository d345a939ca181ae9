import Foundation
import GenGateCore
import GenGateStore
import Hummingbird

/// Admin only: the monitor's alerts (listed, shown, acknowledged) and the error log.
struct AlertRoutes: Sendable {
    let routes: GenerationRoutes

    var store: any GenerationStore { routes.store }

    func register(on group: RouterGroup<GateContext>) {
        group.get("admin/alerts") { request, context in try await list(request, context) }
        group.get("admin/alerts/:id") { _, context in try await show(context) }
        group.post("admin/alerts/:id/ack") { _, context in try await acknowledge(context) }
        group.get("admin/errors") { request, context in try await errors(request, context) }
    }

    /// `GET /v1/admin/alerts?state=open,acknowledged&severity=high&type=…&limit=…&cursor=…`,
    /// newest first.
    func list(_ request: Request, _ context: GateContext) async throws -> Response {
        _ = try context.requireAdmin()
        let query = request.uri.queryParameters
        var details: [APIError.Detail] = []
        var filter = AlertFilter()
        if let text = query.get("state") {
            let states = text.split(separator: ",").map { AlertState(rawValue: String($0)) }
            if states.isEmpty || states.contains(nil) {
                details.append(
                    .init(
                        path: "state",
                        message:
                            "a comma-separated list of \(AlertState.allCases.map(\.rawValue).joined(separator: ", "))"))
            } else {
                filter.states = Set(states.compactMap { $0 })
            }
        }
        if let text = query.get("severity") {
            if let severity = AlertSeverity(rawValue: text) {
                filter.minimumSeverity = severity
            } else {
                details.append(
                    .init(
                        path: "severity",
                        message:
                            "the least severity listed: \(AlertSeverity.allCases.map(\.rawValue).joined(separator: ", "))"
                    ))
            }
        }
        if let type = query.get("type") {
            if AlertRule(rawValue: type) == nil {
                details.append(
                    .init(path: "type", message: "one of \(AlertRule.allCases.map(\.rawValue).joined(separator: ", "))")
                )
            }
            filter.type = type
        }
        let (limit, cursor) = GenerationRoutes.page(request, idPrefix: "alt_", details: &details)
        guard details.isEmpty else { throw APIError.invalidRequest("invalid alert query", details: details) }
        filter.before = cursor
        filter.limit = limit + 1
        return Self.page(try await store.alerts(filter), limit: limit, id: \.id, json: \.json)
    }

    func show(_ context: GateContext) async throws -> Response {
        _ = try context.requireAdmin()
        let id = try alertID(context)
        guard let alert = try await store.alert(id: id) else { throw APIError.notFound("no alert \(id)") }
        return JSONResponse.make(status: .ok, alert.json)
    }

    /// Acknowledges an alert: it stays listed (open until its condition ends) with who
    /// acknowledged it and when. Acknowledging it again changes nothing and answers the same.
    func acknowledge(_ context: GateContext) async throws -> Response {
        let key = try context.requireAdmin()
        let id = try alertID(context)
        guard let alert = try await store.acknowledgeAlert(id: id, by: key.id, at: Date()) else {
            throw APIError.notFound("no alert \(id)")
        }
        context.logger.notice("alert acknowledged", metadata: ["alert": "\(id)"])
        return JSONResponse.make(status: .ok, alert.json)
    }

    func alertID(_ context: GateContext) throws -> String {
        guard let id = context.parameters.get("id"), id.hasPrefix("alt_"), id.count <= 64 else {
            throw APIError.notFound("no alert \(context.parameters.get("id") ?? "")")
        }
        return id
    }

    /// `GET /v1/admin/errors?level=error&source=kling&code=…&generation_id=…&since=…`, newest first.
    func errors(_ request: Request, _ context: GateContext) async throws -> Response {
        _ = try context.requireAdmin()
        let query = request.uri.queryParameters
        var details: [APIError.Detail] = []
        var filter = ErrorFilter()
        if let text = query.get("level") {
            if let level = ErrorEntry.Level(rawValue: text) {
                filter.minimumLevel = level
            } else {
                details.append(
                    .init(
                        path: "level",
                        message:
                            "the least level listed: \(ErrorEntry.Level.allCases.map(\.rawValue).joined(separator: ", "))"
                    ))
            }
        }
        for (name, path) in [("source", \ErrorFilter.source), ("code", \.code), ("generation_id", \.generationID)] {
            guard let value = query.get(name) else { continue }
            if value.isEmpty || value.count > 200
                || value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
            {
                details.append(
                    .init(path: name, message: "must be 1 to 200 characters, none of them control characters"))
            } else {
                filter[keyPath: path] = value
            }
        }
        if let text = query.get("since") {
            if let since = Timestamp.parse(text) {
                filter.since = since
            } else {
                details.append(.init(path: "since", message: "must be an ISO 8601 time, e.g. 2026-12-06T10:00:00Z"))
            }
        }
        let (limit, cursor) = GenerationRoutes.page(request, idPrefix: "err_", details: &details)
        guard details.isEmpty else { throw APIError.invalidRequest("invalid error log query", details: details) }
        filter.before = cursor
        filter.limit = limit + 1
        return Self.page(try await store.errors(filter), limit: limit, id: \.id, json: \.json)
    }

    /// A list's answer from `limit + 1` rows: `limit` of them, and the cursor of the next page
    /// when there is one more.
    static func page<Row>(
        _ rows: [Row], limit: Int, id: (Row) -> String, json: (Row) -> [String: JSONValue]
    ) -> Response {
        let page = Array(rows.prefix(limit))
        return JSONResponse.make(
            status: .ok,
            [
                "object": .string("list"), "data": .array(page.map { .object(json($0)) }),
                "next_cursor": rows.count > limit ? page.last.map { .string(id($0)) } ?? .null : .null,
            ])
    }
}
