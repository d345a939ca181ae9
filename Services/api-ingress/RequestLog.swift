import Hummingbird
import Logging

/// One debug line a request: method, path (a callback's token cut, as in every log line of this
/// service), status and time. Headers are left out, so keys never reach the log. Hummingbird's
/// own `LogRequestsMiddleware` logs the whole URI, tokens included.
struct RequestLog: RouterMiddleware {
    typealias Context = GateContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard context.logger.logLevel <= .debug else { return try await next(request, context) }
        let started = ContinuousClock.now
        let response = try await next(request, context)
        context.logger.debug(
            "request",
            metadata: [
                "method": "\(request.method)", "path": "\(ErrorMiddleware.loggable(request.uri.path))",
                "status": "\(response.status.code)", "duration": "\(ContinuousClock.now - started)",
            ])
        return response
    }
}
