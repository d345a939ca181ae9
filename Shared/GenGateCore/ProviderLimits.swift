import Foundation

/// A provider's limits as configured: the most provider tasks open at once (submitted and not
/// ended: jobs `dispatching` or `running`) and the most submissions a second, across every
/// process that shares the store. Nil: no such limit is known; the store still learns one when
/// the provider throttles (see `LimitFeedback`).
public struct ProviderLimits: Sendable, Equatable, Codable {
    public var maxConcurrency: Int?
    public var maxRequestsPerSecond: Double?

    public init(maxConcurrency: Int? = nil, maxRequestsPerSecond: Double? = nil) {
        self.maxConcurrency = maxConcurrency
        self.maxRequestsPerSecond = maxRequestsPerSecond
    }

    /// A short burst of submissions allowed on top of the rate (a second's worth, at least one).
    public var burst: Double { max(1, maxRequestsPerSecond ?? 1) }
}
