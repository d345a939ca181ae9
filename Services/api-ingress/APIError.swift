import Foundation
import GenGateCore
import Hummingbird

/// An error answer of the API, always `{"error": {"code", "message", "details"?}}`.
/// Every error a handler or middleware raises becomes one of these in `ErrorMiddleware`, the one
/// place errors are mapped to HTTP.
struct APIError: Error, HTTPResponseError {
    struct Detail: Sendable, Equatable {
        var path: String
        var message: String
    }

    var status: HTTPResponse.Status
    var code: String
    var message: String
    var details: [Detail] = []
    var headers: HTTPFields = [:]

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var error: [String: JSONValue] = ["code": .string(code), "message": .string(message)]
        if !details.isEmpty {
            error["details"] = .array(
                details.map { .object(["path": .string($0.path), "message": .string($0.message)]) })
        }
        var response = JSONResponse.make(status: status, ["error": .object(error)])
        for field in headers { response.headers.append(field) }
        return response
    }

    static func invalidRequest(_ message: String, details: [Detail] = []) -> APIError {
        APIError(status: .badRequest, code: "invalid_request", message: message, details: details)
    }

    static func invalidJSON(_ message: String) -> APIError {
        APIError(status: .badRequest, code: "invalid_json", message: message)
    }

    static func unauthorized(_ message: String) -> APIError {
        APIError(
            status: .unauthorized, code: "unauthorized", message: message,
            headers: [.wwwAuthenticate: "Bearer realm=\"gengate\""])
    }

    static let forbidden = APIError(status: .forbidden, code: "forbidden", message: "this endpoint needs an admin key")

    static func notFound(_ message: String) -> APIError {
        APIError(status: .notFound, code: "not_found", message: message)
    }

    static func conflict(_ message: String) -> APIError {
        APIError(status: .conflict, code: "conflict", message: message)
    }

    static func payloadTooLarge(limit: Int) -> APIError {
        APIError(
            status: .contentTooLarge, code: "payload_too_large", message: "request body is larger than \(limit) bytes")
    }

    static let internalError = APIError(
        status: .internalServerError, code: "internal_error",
        message: "the server failed to handle this request; it has been logged")

    static let unavailable = APIError(
        status: .serviceUnavailable, code: "unavailable",
        message: "the store is busy; try again shortly",
        headers: [.retryAfter: "1"])
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
