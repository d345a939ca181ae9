import GenGateCore

/// The providers this deployment offers and the models they serve. Built once from
/// configuration and passed down.
public struct ProviderRegistry: Sendable {
    public let adapters: [String: any ProviderAdapter]
    public let models: [String: ModelInfo]

    public init(adapters: [any ProviderAdapter]) {
        var byName: [String: any ProviderAdapter] = [:]
        var models: [String: ModelInfo] = [:]
        for adapter in adapters {
            byName[adapter.name] = adapter
            for model in adapter.models { models[model.id] = model }
        }
        self.adapters = byName
        self.models = models
    }

    public func model(_ id: String) -> ModelInfo? { models[id] }

    /// The adapter of `provider`; throws `internal_error` if this deployment has none (a job
    /// created by a differently configured ingress).
    public func adapter(_ provider: String) throws -> any ProviderAdapter {
        guard let adapter = adapters[provider] else {
            throw GenGateError(.internalError, "provider \(provider) is not configured in this service")
        }
        return adapter
    }
}
