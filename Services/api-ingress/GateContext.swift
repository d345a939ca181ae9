import GenGateStore
import Hummingbird

/// The request context of api-ingress: Hummingbird's core storage plus the caller's API key once
/// `AuthMiddleware` has checked it.
struct GateContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    var apiKey: APIKey?
    /// Whether the body was read; see `RequestBodyReader`.
    let body = BodyReading()

    init(source: Source) {
        coreContext = .init(source: source)
        apiKey = nil
    }

    /// The authenticated key; routes behind `AuthMiddleware` always have one.
    func requireKey() throws -> APIKey {
        guard let apiKey else { throw APIError.unauthorized("missing API key") }
        return apiKey
    }

    /// The caller's key, if it is an admin key.
    func requireAdmin() throws -> APIKey {
        let key = try requireKey()
        guard key.isAdmin else { throw APIError.forbidden }
        return key
    }
}
