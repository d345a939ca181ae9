/// The one error vocabulary of GenGate: every `code` a client can see, whether in an API error
/// answer or in a failed generation's `error`. Each code knows its HTTP status (where the API
/// answers it) and whether a retry may help; adapters classify provider answers into the job
/// classes once, in one place. docs/ERRORS.md lists them all (a test keeps it whole).
public enum ErrorCode: String, Codable, Sendable, CaseIterable {
    // Job classes: a generation fails with one of these (most also answer API requests).
    case invalidRequest = "invalid_request"
    /// An input image that is not one, cannot be read whole, or breaks the model's limits.
    case invalidImage = "invalid_image"
    /// An input image is another job's output, and that job failed or was cancelled (or has no
    /// such output).
    case inputUnavailable = "input_unavailable"
    /// A submission would take its API key past its daily or monthly budget (refused at once), or
    /// a job's retry would (the job fails without it).
    case budgetExceeded = "budget_exceeded"
    case authenticationFailed = "authentication_failed"
    case quotaExceeded = "quota_exceeded"
    case contentPolicy = "content_policy"
    case rateLimited = "rate_limited"
    case providerError = "provider_error"
    case providerUnavailable = "provider_unavailable"
    case providerTimeout = "provider_timeout"
    case taskTimeout = "task_timeout"
    case uploadFailed = "upload_failed"
    case cancelled = "cancelled"
    case internalError = "internal_error"

    // Request codes: the API answers a request with these at once; no job carries them.
    case invalidJSON = "invalid_json"
    case unknownModel = "unknown_model"
    case providerNotConfigured = "provider_not_configured"
    case unauthorized
    case forbidden
    case notFound = "not_found"
    case conflict
    case idempotencyKeyReused = "idempotency_key_reused"
    case payloadTooLarge = "payload_too_large"
    case rangeNotSatisfiable = "range_not_satisfiable"
    case unavailable

    /// Whether an error of this class is retried by default (by GenGate for a job; by a client
    /// for a request).
    public var isRetryable: Bool {
        switch self {
        case .rateLimited, .providerError, .providerUnavailable, .providerTimeout, .uploadFailed, .unavailable:
            return true
        case .invalidRequest, .invalidImage, .inputUnavailable, .authenticationFailed, .quotaExceeded,
            .contentPolicy, .taskTimeout, .cancelled, .internalError, .invalidJSON, .unknownModel,
            .providerNotConfigured, .unauthorized,
            .forbidden, .notFound, .conflict, .idempotencyKeyReused, .payloadTooLarge,
            .rangeNotSatisfiable, .budgetExceeded:
            return false
        }
    }

    /// Whether a generation can fail with this code (the rest are for requests only).
    public var isJobClass: Bool {
        switch self {
        case .invalidRequest, .invalidImage, .inputUnavailable, .authenticationFailed, .quotaExceeded,
            .contentPolicy, .rateLimited, .providerError, .providerUnavailable, .providerTimeout, .taskTimeout,
            .uploadFailed, .cancelled,
            .internalError, .budgetExceeded:
            return true
        case .invalidJSON, .unknownModel, .providerNotConfigured, .unauthorized, .forbidden, .notFound, .conflict,
            .idempotencyKeyReused, .payloadTooLarge, .rangeNotSatisfiable, .unavailable:
            return false
        }
    }

    /// The HTTP status the API answers a request with when it fails this way.
    public var httpStatus: Int {
        switch self {
        case .invalidRequest, .invalidImage, .invalidJSON, .unknownModel, .providerNotConfigured, .contentPolicy:
            return 400
        case .unauthorized, .authenticationFailed: return 401
        case .quotaExceeded, .budgetExceeded: return 402
        case .forbidden: return 403
        case .notFound: return 404
        case .conflict, .idempotencyKeyReused, .cancelled: return 409
        case .payloadTooLarge: return 413
        case .inputUnavailable: return 424
        case .rangeNotSatisfiable: return 416
        case .rateLimited: return 429
        case .internalError, .uploadFailed: return 500
        case .providerError: return 502
        case .unavailable, .providerUnavailable: return 503
        case .providerTimeout, .taskTimeout: return 504
        }
    }
}
