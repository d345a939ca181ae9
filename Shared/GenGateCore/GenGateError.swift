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
    /// The provider's own code for it (Kling's `1303`, Tencent's `RequestLimitExceeded`,
    /// OpenAI's `insufficient_quota`), where it gave one.
    public var providerCode: String?
    /// Why, where the code alone does not say: a cancelled job's `client` or `deadline`
    /// (its Cancel-After ran out).
    public var reason: String?

    public init(
        _ code: ErrorCode, _ message: String, retryable: Bool? = nil, retryAfter: Double? = nil,
        providerCode: String? = nil, reason: String? = nil
    ) {
        self.reason = reason
        self.code = code
        self.message = message
        self.retryable = retryable ?? code.isRetryable
        self.retryAfter = retryAfter
        self.providerCode = providerCode.flatMap { $0.isEmpty ? nil : String($0.prefix(100)) }
    }

    enum CodingKeys: String, CodingKey {
        case code, message, retryable
        case retryAfter = "retry_after"
        case providerCode = "provider_code"
        case reason
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// This error with the provider's own code for it (kept when `code` is nil).
    public func withProviderCode(_ code: String?) -> GenGateError {
        var copy = self
        if let code, !code.isEmpty { copy.providerCode = String(code.prefix(100)) }
        return copy
    }

    /// Wraps any error as a GenGateError; unknown errors become `internal_error`.
    public static func wrap(_ error: any Error) -> GenGateError {
        if let error = error as? GenGateError { return error }
        return GenGateError(.internalError, String(describing: error))
    }
}
