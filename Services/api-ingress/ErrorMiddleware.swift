import GenGateCore
import GenGateStore
import Hummingbird
import Logging
import NIOCore

/// Turns every error into the API's JSON error shape: ours as they are, Hummingbird's (unknown
/// route or method, body too large) translated, anything else a logged 500 that says nothing
/// about internals.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = GateContext
    let maxBodyBytes: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch {
            await RequestBodyReader.drainUnread(request, context: context)
            return try response(for: error, request, context)
        }
    }

    func response(for error: any Error, _ request: Request, _ context: Context) throws -> Response {
        do {
            throw error
        } catch let error as APIError {
            return try error.response(from: request, context: context)
        } catch let error as GenGateError where !error.code.isJobClass {
            // A request code raised below the API: answered as itself. A job class reaching here
            // (a store or object error) is a fault of ours, answered as one below.
            return try APIError(error.code, error.message).response(from: request, context: context)
        } catch is NIOTooManyBytesError {
            return try APIError.payloadTooLarge(limit: maxBodyBytes).response(from: request, context: context)
        } catch let error as HTTPError {
            let translated: APIError
            switch error.status {
            case .notFound:
                // Hummingbird's router also answers an unknown method on a known path this way.
                translated = .notFound("no such endpoint: \(request.method) \(Self.loggable(request.uri.path))")
            case .contentTooLarge:
                translated = .payloadTooLarge(limit: maxBodyBytes)
            default:
                // Anything else the HTTP layer refuses keeps its status, under the vocabulary's code.
                translated = APIError(
                    error.status.code < 500 ? .invalidRequest : .internalError,
                    error.body ?? error.status.reasonPhrase, status: error.status)
            }
            return try translated.response(from: request, context: context)
        } catch  where StoreError.isUnavailable(error) {
            context.logger.error(
                "the store is busy", metadata: ["error": "\(error)", "path": "\(Self.loggable(request.uri.path))"])
            return try APIError.unavailable.response(from: request, context: context)
        } catch {
            context.logger.error(
                "request failed", metadata: ["error": "\(error)", "path": "\(Self.loggable(request.uri.path))"])
            return try APIError.internalError.response(from: request, context: context)
        }
    }

    /// A path as it may be logged or echoed: a callback's token (its last part) left out.
    static func loggable(_ path: String) -> String {
        guard path.hasPrefix("/v1/callbacks/") else { return path }
        return "/" + path.split(separator: "/").dropLast().joined(separator: "/") + "/…"
    }
}
