import Foundation
import GenGateBus
import GenGateCore
import GenGateProviders
import GenGateRuntime
import GenGateStore
import HTTPTypes
import Hummingbird
import NIOCore

/// `POST /v1/callbacks/{provider}/{generation}/{attempt}/{token}`: a provider saying that a task
/// ended. The URL's token (`CallbackToken`) proves that GenGate made the URL; the provider's own
/// proof (Replicate's signature, Flux's echoed secret) is checked as well. A callback only makes
/// the job's next status check due now: what the task became is read from the provider's API as
/// on every check, never taken from the body, so a forged callback is refused and a replayed or
/// late one changes nothing (at most one more status check).
struct CallbackRoutes: Sendable {
    let environment: ServiceEnvironment
    let poll: WorkProducer
    /// Largest callback body read (a task object: a few KiB).
    static let maxBodyBytes = 1 << 20

    func register(on router: Router<GateContext>) {
        router.post("v1/callbacks/:provider/:generation/:attempt/:token") { request, context in
            try await receive(request, context)
        }
    }

    func receive(_ request: Request, _ context: GateContext) async throws -> Response {
        let provider = context.parameters.get("provider") ?? ""
        let id = context.parameters.get("generation") ?? ""
        let token = context.parameters.get("token") ?? ""
        guard let attempt = context.parameters.get("attempt").flatMap({ Int($0) }),
            let adapter = environment.providers.adapters[provider], adapter.capabilities.callbacks,
            let tokens = environment.providers.callbackTokens[provider],
            tokens.verify(token, provider: provider, generationID: id, attempt: attempt)
        else {
            // Said the same way whatever was wrong: a guess learns nothing.
            throw APIError.notFound("no such callback")
        }
        let body = try await RequestBodyReader.collect(request, context: context, limit: Self.maxBodyBytes)
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.canonicalName] = field.value }
        do {
            try await adapter.verifyCallback(
                headers: headers, body: Data(body.readableBytesView), secret: token, now: Date())
        } catch {
            environment.logger.warning(
                "a provider callback failed its check", metadata: ["provider": "\(provider)", "generation": "\(id)"])
            throw APIError.unauthorized("the callback's signature does not verify")
        }
        let result = try await nudge(id)
        if result == .busy {
            // Being checked this moment: that check may have missed the end by a hair. Try again
            // shortly, without keeping the provider waiting; the slower polling remains the net.
            let store = environment.store
            let poll = self.poll
            Task {
                for _ in 0..<10 {
                    try? await Task.sleep(for: .milliseconds(200))
                    guard let again = try? await store.nudgeCheck(generationID: id, now: Date()), again == .busy else {
                        poll.send(generationID: id, reason: "provider callback")
                        return
                    }
                }
            }
        }
        return JSONResponse.make(status: .ok, ["received": .bool(true)])
    }

    func nudge(_ id: String) async throws -> NudgeResult {
        let result = try await environment.store.nudgeCheck(generationID: id, now: Date())
        if result == .nudged || result == .alreadyDue { poll.send(generationID: id, reason: "provider callback") }
        return result
    }
}
