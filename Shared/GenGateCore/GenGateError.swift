import Foundation

/// The error every layer of GenGate speaks: a class (`code`), a human message, whether a retry
/// may help, and an optional `Retry-After` hint. It is mapped to HTTP in api-ingress and to
/// events in exactly one place each. Messages must never contain secrets.
public struct GenGateError: Error, Codable, Sendable, Equatable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String
    public var retryable: Bool
    /// Seconds the provider asked us to wait before trying again, when it said so.
    public var retryAfter: Double?

    public init(_ code: ErrorCode, _ message: String, retryable: Bool? = nil, retryAfter: Double? = nil) {
        self.code = code
        self.message = message
        self.retryable = retryable ?? code.isRetryable
        self.retryAfter = retryAfter
    }

    enum CodingKeys: String, CodingKey {
        case code, message, retryable
        case retryAfter = "retry_after"
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// Wraps any error as a GenGateError; unknown errors become `internal_error`.
    public static func wrap(_ error: any Error) -> GenGateError {
        if let error = error as? GenGateError { return error }
        return GenGateError(.internalError, String(describing: error))
    }
}
