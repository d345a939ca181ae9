import GenGateProviders

/// The real providers GenGate speaks to: each one's name, the environment variables its own SDK
/// reads the credentials from, its default base URL, models and settings, and how to make its
/// adapter. The one table the services and `gengate up --simulate-providers` both read.
public struct RealProvider: Sendable {
    public var name: String
    /// One variable, or two for a key pair (access key then secret), all required.
    public var credentials: [String]
    public var defaultBaseURL: String
    /// What follows the simulator's address in the base URL (as the SDK takes it).
    public var basePath: String
    public var models: [ModelInfo]
    /// Its settings in `providers`.
    public var connection: any WritableKeyPath<GenGateConfig.Providers, GenGateConfig.ProviderConnection> & Sendable
    /// The adapter, from the credentials' values (in the order of `credentials`), its endpoint
    /// and the models it offers.
    public var make: @Sendable ([String], ProviderEndpoint, [ModelInfo]) -> any ProviderAdapter
    /// The models a configuration offers: its own list, or the defaults.
    public func models(_ connection: GenGateConfig.ProviderConnection) -> [ModelInfo] {
        guard let configured = connection.models else { return models }
        return configured.map {
            ModelInfo(
                id: $0.id, provider: name, kind: $0.kind, maxOutputs: $0.maxOutputs ?? 1,
                maxOutputsPerCall: $0.maxOutputsPerCall)
        }
    }

    /// What is wrong with the credentials' values, where the provider's keys have a known form.
    public var problem: @Sendable ([String]) -> String? = { _ in nil }

    public static let all: [RealProvider] = [
        RealProvider(
            name: "replicate", credentials: ["REPLICATE_API_TOKEN"], defaultBaseURL: ReplicateAdapter.defaultBaseURL,
            basePath: "", models: ReplicateAdapter.defaultModels, connection: \.replicate,
            make: { ReplicateAdapter(token: $0[0], endpoint: $1, models: $2) }),
        RealProvider(
            name: "flux", credentials: ["BFL_API_KEY"], defaultBaseURL: FluxAdapter.defaultBaseURL, basePath: "",
            models: FluxAdapter.defaultModels, connection: \.flux,
            make: { FluxAdapter(key: $0[0], endpoint: $1, models: $2) }),
        RealProvider(
            name: "dashscope", credentials: ["DASHSCOPE_API_KEY"], defaultBaseURL: DashScopeAdapter.defaultBaseURL,
            basePath: "/api/v1", models: DashScopeAdapter.defaultModels, connection: \.dashscope,
            make: { DashScopeAdapter(key: $0[0], endpoint: $1, models: $2) }),
        RealProvider(
            name: "pollo", credentials: ["POLLO_API_KEY"], defaultBaseURL: PolloAdapter.defaultBaseURL,
            basePath: "/api/platform", models: PolloAdapter.defaultModels, connection: \.pollo,
            make: { PolloAdapter(key: $0[0], endpoint: $1, models: $2) }),
        RealProvider(
            name: "kling", credentials: ["KLING_ACCESS_KEY", "KLING_SECRET_KEY"],
            defaultBaseURL: KlingAdapter.defaultBaseURL, basePath: "", models: KlingAdapter.defaultModels,
            connection: \.kling, make: { KlingAdapter(accessKey: $0[0], secretKey: $0[1], endpoint: $1, models: $2) },
            problem: { KlingAdapter.problem(secretKey: $0[1]).map { "KLING_SECRET_KEY \($0)" } }),
        RealProvider(
            name: "openai", credentials: ["OPENAI_API_KEY"], defaultBaseURL: OpenAIAdapter.defaultBaseURL,
            basePath: "/v1", models: OpenAIAdapter.defaultModels, connection: \.openai,
            make: { OpenAIAdapter(key: $0[0], endpoint: $1, models: $2) }),
        RealProvider(
            name: "hunyuan", credentials: ["TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"],
            defaultBaseURL: HunyuanAdapter.defaultBaseURL, basePath: "", models: HunyuanAdapter.defaultModels,
            connection: \.hunyuan, make: { HunyuanAdapter(secretID: $0[0], secretKey: $0[1], endpoint: $1, models: $2) }
        ),
    ]
}
