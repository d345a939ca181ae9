import Foundation
import GenGateBus
import GenGateCore
import GenGateProviders
import GenGateRuntime
import GenGateStore
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// `POST /v1/callbacks/{provider}/{generation}/{attempt}/{token}`: a provider saying that a task
/// ended. The URL's token (`CallbackToken`) proves that GenGate made the URL; the provider's own
/// proof (Replicate's signature, Flux's echoed secret) is checked as well. A callback only makes
/// the job's next status check due now: what the task became is read from the provider's API as
/// on every check, never taken from the body, so a forged callback is refused and a replayed or
/// late one changes no state (at most one status check a job every five seconds).
struct CallbackRoutes: Sendable {
    let environment: ServiceEnvironment
    let poll: WorkProducer
    /// Largest callback body read (a task object: a few KiB, more with a model's logs).
    static let maxBodyBytes = 8 << 20
    /// How long a callback that found its job busy keeps trying.
    static let retryFor: Duration = .seconds(330)
    /// Jobs' attempts whose callback is being retried.
    let retrying = RetryingJobs()
    /// When each job's attempt was last nudged by this process.
    let recent = RecentNudges()

    /// Admits one nudge a key every `gap`; remembers at most `limit` keys.
    final class RecentNudges: Sendable {
        static let gap: Duration = .seconds(5)
        static let limit = 100_000
        let last = Mutex<[String: ContinuousClock.Instant]>([:])

        func admit(_ key: String, now: ContinuousClock.Instant = .now) -> Bool {
            last.withLock { last in
                if let previous = last[key], now - previous < Self.gap { return false }
                if last.count >= Self.limit { last = last.filter { now - $0.value < Self.gap } }
                last[key] = now
                return true
            }
        }
    }

    final class RetryingJobs: Sendable {
        let ids = Mutex<Set<String>>([])
        /// Marks `id` as being retried; false if it already is.
        func start(_ id: String) -> Bool { ids.withLock { $0.insert(id).inserted } }
        func end(_ id: String) { _ = ids.withLock { $0.remove(id) } }
    }

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
            if environment.providers.unavailable[provider] != nil {
                environment.logger.warning(
                    "a callback came for a provider this api-ingress has no credentials for",
                    metadata: ["provider": "\(provider)"])
            }
            // Said the same way whatever was wrong: a guess learns nothing.
            throw APIError.notFound("no such callback")
        }
        let body = try await RequestBodyReader.collect(request, context: context, limit: Self.maxBodyBytes)
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.canonicalName] = field.value }
        do {
            try await adapter.verifyCallback(
                headers: headers, body: Data(body.readableBytesView),
                secret: tokens.secret(provider: provider, generationID: id, attempt: attempt), now: Date())
        } catch {
            environment.logger.warning(
                "a provider callback failed its check", metadata: ["provider": "\(provider)", "generation": "\(id)"])
            throw APIError.unauthorized("the callback's signature does not verify")
        }
        // One nudge a job's attempt every few seconds, however many deliveries (Kling calls on
        // every status change; a captured delivery may be replayed): each costs a status call.
        if recent.admit("\(id)/\(attempt)"), try await nudge(id, attempt: attempt) == .busy {
            retryLater(id, attempt: attempt)
        }
        return JSONResponse.make(status: .ok, ["received": .bool(true)])
    }

    func nudge(_ id: String, attempt: Int) async throws -> NudgeResult {
        let result = try await environment.store.nudgeCheck(generationID: id, attempt: attempt, now: Date())
        if result == .nudged || result == .alreadyDue { poll.send(generationID: id, reason: "provider callback") }
        return result
    }

    /// The job is being checked this moment (that check may have missed the end by a hair), or
    /// its submission's answer is still being recorded: nudge it once that is over, without
    /// keeping the provider waiting. A status call lasts at most the provider's request timeout,
    /// so this keeps trying as long; one retry a job at a time.
    func retryLater(_ id: String, attempt: Int) {
        let key = "\(id)/\(attempt)"
        guard retrying.start(key) else { return }
        let routes = self
        Task {
            defer { routes.retrying.end(key) }
            let until = ContinuousClock.now + Self.retryFor
            while ContinuousClock.now < until {
                try? await Task.sleep(for: .seconds(1))
                guard let result = try? await routes.nudge(id, attempt: attempt), result == .busy else { return }
            }
            routes.environment.logger.warning(
                "a provider callback found its job busy throughout; polling will see the end",
                metadata: ["generation": "\(id)"])
        }
    }
}
