import Foundation
import GenGateCore
import GenGateStore
import Hummingbird
import Synchronization

/// Checks `Authorization: Bearer <key>` against the store's hashed keys. Known keys are cached
/// for a second by hash (never by the secret itself): a busy client costs one store read a
/// second, and a revoked key stops working within a second.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = GateContext
    let store: any GenerationStore
    let cache: KeyCache

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard let header = request.headers[.authorization] else {
            throw APIError.unauthorized("missing API key: send Authorization: Bearer <key>")
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer",
            !parts[1].trimmingCharacters(in: .whitespaces).isEmpty
        else {
            throw APIError.unauthorized("malformed Authorization header: expected Bearer <key>")
        }
        let secret = parts[1].trimmingCharacters(in: .whitespaces)
        let hash = Digest.sha256Hex(secret)
        let key: APIKey
        if let cached = cache.lookup(hash) {
            key = cached
        } else {
            let found: APIKey?
            do {
                found = try await store.apiKey(secret: secret)
            } catch {
                throw APIError.unavailable
            }
            guard let found else { throw APIError.unauthorized("unknown or revoked API key") }
            cache.remember(hash, found)
            key = found
        }
        var context = context
        context.apiKey = key
        context.logger[metadataKey: "key"] = "\(key.id)"
        return try await next(request, context)
    }
}

/// Recently seen keys by secret hash, each for `ttl`.
final class KeyCache: Sendable {
    private let entries = Mutex<[String: (key: APIKey, until: ContinuousClock.Instant)]>([:])
    let ttl: Duration

    init(ttl: Duration = .seconds(1)) {
        self.ttl = ttl
    }

    func lookup(_ hash: String) -> APIKey? {
        entries.withLock { entries in
            guard let entry = entries[hash] else { return nil }
            if entry.until < .now {
                entries[hash] = nil
                return nil
            }
            return entry.key
        }
    }

    func remember(_ hash: String, _ key: APIKey) {
        entries.withLock { entries in
            if entries.count > 10_000 { entries.removeAll() }
            entries[hash] = (key, .now + ttl)
        }
    }
}
