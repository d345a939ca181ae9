import GenGateProviders

/// The real providers GenGate speaks to: each one's name, the environment variable its own SDK
/// reads the credential from, its default base URL, models and settings, and how to make its
/// adapter. The one table the services and `gengate up --simulate-providers` both read.
public struct RealProvider: Sendable {
    public var name: String
    public var credential: String
    public var defaultBaseURL: String
    /// What follows the simulator's address in the base URL (as the SDK takes it).
    public var basePath: String
    public var models: [ModelInfo]
    /// Its settings in `providers`.
    public var connection: any WritableKeyPath<GenGateConfig.Providers, GenGateConfig.ProviderConnection> & Sendable
    public var make: @Sendable (String, ProviderEndpoint) -> any ProviderAdapter

    public static let all: [RealProvider] = [
        RealProvider(
            name: "replicate", credential: "REPLICATE_API_TOKEN", defaultBaseURL: ReplicateAdapter.defaultBaseURL,
            basePath: "", models: ReplicateAdapter.defaultModels, connection: \.replicate,
            make: { ReplicateAdapter(token: $0, endpoint: $1) }),
        RealProvider(
            name: "flux", credential: "BFL_API_KEY", defaultBaseURL: FluxAdapter.defaultBaseURL, basePath: "",
            models: FluxAdapter.defaultModels, connection: \.flux, make: { FluxAdapter(key: $0, endpoint: $1) }),
        RealProvider(
            name: "dashscope", credential: "DASHSCOPE_API_KEY", defaultBaseURL: DashScopeAdapter.defaultBaseURL,
            basePath: "/api/v1", models: DashScopeAdapter.defaultModels, connection: \.dashscope,
            make: { DashScopeAdapter(key: $0, endpoint: $1) }),
        RealProvider(
            name: "pollo", credential: "POLLO_API_KEY", defaultBaseURL: PolloAdapter.defaultBaseURL,
            basePath: "/api/platform", models: PolloAdapter.defaultModels, connection: \.pollo,
            make: { PolloAdapter(key: $0, endpoint: $1) }),
    ]
}
