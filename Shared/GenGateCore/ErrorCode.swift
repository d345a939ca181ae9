/// The one error taxonomy of GenGate. Each class knows whether it is
/// worth retrying; adapters classify provider answers into these once, in one place.
public enum ErrorCode: String, Codable, Sendable, CaseIterable {
    case invalidRequest = "invalid_request"
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

    /// Whether an error of this class is retried by default.
    public var isRetryable: Bool {
        switch self {
        case .rateLimited, .providerError, .providerUnavailable, .providerTimeout, .uploadFailed:
            return true
        case .invalidRequest, .authenticationFailed, .quotaExceeded, .contentPolicy, .taskTimeout,
            .cancelled, .internalError:
            return false
        }
    }
}
