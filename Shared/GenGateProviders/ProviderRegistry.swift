import GenGateCore

/// The providers this deployment offers and the models they serve. Built once from
/// configuration and passed down.
public struct ProviderRegistry: Sendable {
    public let adapters: [String: any ProviderAdapter]
    public let models: [String: ModelInfo]
    /// Providers this deployment knows but cannot use (no credentials), by name.
    public let unavailable: [String: Unavailable]
    /// The callback tokens of each provider that has credentials, by name.
    public let callbackTokens: [String: CallbackToken]
    /// Configured limits of providers, over their adapters' own.
    let configuredLimits: [String: ProviderLimits]
    /// Fallback aliases: a name for an ordered list of models, tried in turn.
    public let aliases: [String: [String]]

    /// A provider without what it needs, its models, and what is missing (said to users).
    public struct Unavailable: Sendable {
        public var provider: String
        public var models: [ModelInfo]
        public var missing: String

        public init(provider: String, models: [ModelInfo], missing: String) {
            self.provider = provider
            self.models = models
            self.missing = missing
        }
    }

    public init(
        adapters: [any ProviderAdapter], unavailable: [Unavailable] = [], callbackTokens: [String: CallbackToken] = [:],
        limits: [String: ProviderLimits] = [:], aliases: [String: [String]] = [:]
    ) {
        self.callbackTokens = callbackTokens
        self.configuredLimits = limits
        self.aliases = aliases
        self.unavailable = Dictionary(unavailable.map { ($0.provider, $0) }, uniquingKeysWith: { first, _ in first })
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

    /// The limits submissions to `provider` keep to: as configured, else as its adapter says.
    public func limits(_ provider: String) -> ProviderLimits {
        configuredLimits[provider] ?? adapters[provider]?.capabilities.limits ?? ProviderLimits()
    }

    /// A model known here, configured or not.
    public func knownModel(_ id: String) -> ModelInfo? {
        models[id] ?? unavailable.values.lazy.compactMap { $0.models.first { $0.id == id } }.first
    }

    /// Problems with the configured aliases (a model nobody serves, models of different kinds, a
    /// name that is a model's), one line each; empty when they are sound.
    public func aliasProblems() -> [String] {
        var problems: [String] = []
        for (name, route) in aliases.sorted(by: { $0.key < $1.key }) {
            if knownModel(name) != nil {
                problems.append("model_aliases.\(name): the name of a model, not free for an alias")
            }
            if route.isEmpty { problems.append("model_aliases.\(name): names no model") }
            if Set(route).count != route.count { problems.append("model_aliases.\(name): names a model twice") }
            let known = route.compactMap(knownModel)
            for id in route where knownModel(id) == nil {
                problems.append("model_aliases.\(name): no provider serves model \(id)")
            }
            if Set(known.map(\.kind)).count > 1 {
                problems.append(
                    "model_aliases.\(name): mixes kinds of model (\(known.map(\.kind.rawValue).joined(separator: ", ")))"
                )
            }
        }
        return problems
    }

    /// The models of alias `name` that this deployment can use, in order (nil: not an alias).
    public func route(_ name: String) -> [ModelInfo]? {
        aliases[name].map { $0.compactMap { models[$0] } }
    }

    /// Closes every adapter's connections (AsyncHTTPClient insists on it before it goes away).
    public func shutdown() async {
        for adapter in adapters.values { await adapter.shutdown() }
    }

    /// Why `model` cannot be used here, when it belongs to a provider without credentials.
    public func unavailableReason(model id: String) -> String? {
        for entry in unavailable.values where entry.models.contains(where: { $0.id == id }) {
            return "model \(id) needs provider \(entry.provider), which is not configured: \(entry.missing)"
        }
        return nil
    }

    /// The adapter of `provider`; throws `internal_error` if this deployment has none (a job
    /// created by a differently configured ingress).
    public func adapter(_ provider: String) throws -> any ProviderAdapter {
        guard let adapter = adapters[provider] else {
            throw GenGateError(.internalError, "provider \(provider) is not configured in this service")
        }
        return adapter
    }
}
