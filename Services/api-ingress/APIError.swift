import Foundation
import GenGateCore
import GenGateStore
import Hummingbird

/// An error answer of the API, always `{"error": {"code", "message", "retryable", "details"?}}`,
/// its `code` one of GenGate's one vocabulary (`ErrorCode`, docs/ERRORS.md). Every error a
/// handler or middleware raises becomes one of these in `ErrorMiddleware`, the one place errors
/// are mapped to HTTP.
struct APIError: Error, HTTPResponseError {
    struct Detail: Sendable, Equatable {
        var path: String
        var message: String
    }

    var status: HTTPResponse.Status
    var code: ErrorCode
    var message: String
    var details: [Detail] = []
    var headers: HTTPFields = [:]

    /// An answer with `code`'s own status, or `status` where the HTTP layer gave another.
    init(
        _ code: ErrorCode, _ message: String, status: HTTPResponse.Status? = nil, details: [Detail] = [],
        headers: HTTPFields = [:]
    ) {
        self.code = code
        self.message = message
        self.status = status ?? HTTPResponse.Status(code: code.httpStatus)
        self.details = details
        self.headers = headers
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var error: [String: JSONValue] = [
            "code": .string(code.rawValue), "message": .string(message), "retryable": .bool(code.isRetryable),
        ]
        if !details.isEmpty {
            error["details"] = .array(
                details.map { .object(["path": .string($0.path), "message": .string($0.message)]) })
        }
        var response = JSONResponse.make(status: status, ["error": .object(error)])
        for field in headers { response.headers.append(field) }
        return response
    }

    static func invalidRequest(_ message: String, details: [Detail] = []) -> APIError {
        APIError(.invalidRequest, message, details: details)
    }

    static func invalidJSON(_ message: String) -> APIError {
        APIError(.invalidJSON, message)
    }

    static func unauthorized(_ message: String) -> APIError {
        APIError(.unauthorized, message, headers: [.wwwAuthenticate: "Bearer realm=\"gengate\""])
    }

    static let forbidden = APIError(.forbidden, "this endpoint needs an admin key")

    static func notFound(_ message: String) -> APIError {
        APIError(.notFound, message)
    }

    static func conflict(_ message: String) -> APIError {
        APIError(.conflict, message)
    }

    static func payloadTooLarge(limit: Int) -> APIError {
        APIError(.payloadTooLarge, "request body is larger than \(limit) bytes")
    }

    /// A submission its key's budget refuses: which budget, what is committed, what it would add.
    static func budgetExceeded(_ refusal: BudgetExceeded, currency: String) -> APIError {
        func money(_ amount: Double) -> String { String(format: "%.6g", Money.rounded(amount)) }
        let left = max(0, refusal.budget - refusal.committed)
        return APIError(
            .budgetExceeded,
            "this request would take the key past its \(refusal.period.rawValue) budget of \(money(refusal.budget)) \(currency): "
                + "\(money(refusal.committed)) is committed \(refusal.period == .daily ? "today (UTC)" : "this month (UTC)"), "
                + "\(money(left)) is left, and the request is estimated at up to \(money(refusal.requested))",
            details: [
                .init(path: "budget_\(refusal.period.rawValue)", message: "\(money(refusal.budget)) \(currency)"),
                .init(path: "committed", message: "\(money(refusal.committed)) \(currency)"),
                .init(path: "requested", message: "\(money(refusal.requested)) \(currency)"),
            ])
    }

    /// A key with a budget sending work to a model without a price.
    static func unpriced(_ refusal: UnpricedModel) -> APIError {
        APIError(
            .budgetExceeded,
            "\(refusal.model) has no price, and this key has a budget: what it spent could not be counted; give the model a price in pricing.models",
            details: [.init(path: "model", message: "\(refusal.model) has no price")])
    }

    static let internalError = APIError(
        .internalError, "the server failed to handle this request; it has been logged")

    static let unavailable = APIError(
        .unavailable, "the store is busy; try again shortly", headers: [.retryAfter: "1"])
}

/// JSON responses in GenGate's one JSON convention.
enum JSONResponse {
    static func make(status: HTTPResponse.Status, _ body: [String: JSONValue], headers: HTTPFields = [:]) -> Response {
        let data = (try? JSONCoding.encode(JSONValue.object(body))) ?? Data("{}".utf8)
        var fields = headers
        fields[.contentType] = "application/json; charset=utf-8"
        fields[.cacheControl] = "no-store"
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}
