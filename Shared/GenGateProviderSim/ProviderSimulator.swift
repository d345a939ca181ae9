import AsyncHTTPClient
import Foundation
import GenGateCore
import GenGateProviders
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// One simulated provider: its tasks, knobs and counts, and the `/_sim` endpoints every
/// simulator has (`POST /_sim/config`, `GET /_sim/stats`, `GET /_sim/files/{task}/{n}`). Each
/// provider's own API is a `SimulatedAPI` registered on the same router.
public final class ProviderSimulator: Sendable {
    public let provider: String
    /// The credential accepted: a token, or `ID:SECRET` where the provider signs with a pair.
    public let key: String

    struct State {
        var knobs: SimKnobs
        var stats = SimStats()
        var tasks: [String: SimTask] = [:]
        var references: Set<String> = []
    }

    let state: Mutex<State>

    public static let providers = ["dashscope", "flux", "hunyuan", "kling", "openai", "pollo", "replicate"]

    public init(provider: String, key: String, knobs: SimKnobs = SimKnobs()) throws {
        guard Self.providers.contains(provider) else {
            throw SimError(
                "no simulator for provider \(provider); available: \(Self.providers.joined(separator: ", "))")
        }
        guard !key.isEmpty else { throw SimError("the key must not be empty") }
        if provider == "hunyuan", key.split(separator: ":", maxSplits: 1).count != 2 {
            throw SimError("hunyuan's key is SECRET_ID:SECRET_KEY")
        }
        if provider == "kling" {
            let parts = key.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { throw SimError("kling's key is ACCESS_KEY:SECRET_KEY") }
            if let problem = KlingAdapter.problem(secretKey: String(parts[1])) {
                throw SimError("kling's secret key \(problem)")
            }
        }
        self.provider = provider
        self.key = key
        state = Mutex(State(knobs: knobs))
    }

    public var knobs: SimKnobs { state.withLock { $0.knobs } }

    /// Applies the knobs in `patch` (all or none) and returns the knobs now in force.
    public func configure(_ patch: JSONValue) throws -> SimKnobs {
        try state.withLock { state in
            state.knobs = try state.knobs.applying(patch)
            return state.knobs
        }
    }
    public var stats: SimStats { state.withLock { $0.stats } }

    /// A router serving this provider's API and the `/_sim` endpoints.
    public func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.post("/_sim/config") { request, context in
            let body = try await request.body.collect(upTo: 65_536)
            let patch: JSONValue
            do {
                patch = try JSONCoding.decode(JSONValue.self, from: Data(body.readableBytesView))
            } catch {
                return SimJSON.response(.badRequest, ["error": .string("the body is not JSON")])
            }
            do {
                let knobs = try self.configure(patch)
                return SimJSON.response(.ok, try JSONValue(encoding: knobs))
            } catch let error as SimError {
                return SimJSON.response(.badRequest, ["error": .string(error.description)])
            }
        }
        router.get("/_sim/stats") { _, _ in
            SimJSON.response(.ok, try JSONValue(encoding: self.stats))
        }
        router.get("/_sim/files/:task/:file") { _, context in
            let task = context.parameters.get("task") ?? ""
            let file = context.parameters.get("file") ?? ""
            guard let known = self.state.withLock({ $0.tasks[task] }), let (index, isVideo) = Self.parse(file: file),
                index < known.outputs
            else {
                return SimJSON.response(.notFound, ["error": .string("no such file")])
            }
            let bytes =
                isVideo ? SimFiles.mp4(seed: index) : SimFiles.png(seed: task, index: index, side: self.knobs.imageSide)
            var headers = HTTPFields()
            headers[.contentType] = isVideo ? "video/mp4" : "image/png"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        switch provider {
        case "flux": FluxAPI(simulator: self).register(on: router)
        case "dashscope": DashScopeAPI(simulator: self).register(on: router)
        case "pollo": PolloAPI(simulator: self).register(on: router)
        case "kling": KlingAPI(simulator: self).register(on: router)
        case "hunyuan": HunyuanAPI(simulator: self).register(on: router)
        case "openai": OpenAIAPI(simulator: self).register(on: router)
        default: ReplicateAPI(simulator: self).register(on: router)
        }
        return router
    }

    // MARK: Tasks

    /// Records a submission: a new task with its fate decided now, counted (and counted again
    /// as a duplicate when `reference` was seen before).
    func submit(
        reference: String?, model: String, input: JSONValue, outputs: Int, isVideo: Bool, version: String? = nil,
        now: Date = Date()
    ) -> SimTask {
        state.withLock { state in
            state.stats.submissions += 1
            if let reference, !reference.isEmpty {
                if !state.references.insert(reference).inserted { state.stats.duplicateSubmissions += 1 }
            }
            let knobs = state.knobs
            let fate: SimTask.Fate
            if Double.random(in: 0..<1) < knobs.pStuck {
                fate = .stuck
            } else if Double.random(in: 0..<1) < knobs.pPolicy {
                fate = .policy
            } else if Double.random(in: 0..<1) < knobs.pEmpty {
                fate = .empty
            } else {
                fate = .succeed
            }
            let task = SimTask(
                id: Identifier.randomToken(count: 26), reference: reference, model: model, input: input,
                createdAt: now, endsAt: now.addingTimeInterval(knobs.taskSeconds),
                queuedUntil: now.addingTimeInterval(min(knobs.queueSeconds, knobs.taskSeconds / 4)), fate: fate,
                outputs: fate == .succeed ? outputs : 0, isVideo: isVideo, version: version)
            state.tasks[task.id] = task
            let active = state.tasks.values.count { $0.phase(at: now) != .ended }
            state.stats.peakActive = max(state.stats.peakActive, active)
            return task
        }
    }

    /// Whether a new task would pass `max_active` now (counted as a refusal if so).
    func refusesNewTask(now: Date = Date()) -> Bool {
        state.withLock { state in
            guard state.knobs.maxActive > 0,
                state.tasks.values.count(where: { $0.phase(at: now) != .ended }) >= state.knobs.maxActive
            else { return false }
            state.stats.busyRefusals += 1
            return true
        }
    }

    func task(_ id: String, countingStatusCall: Bool) -> SimTask? {
        state.withLock { state in
            if countingStatusCall { state.stats.statusCalls += 1 }
            return state.tasks[id]
        }
    }

    /// The task with this id, or else the one created with this client reference, among those
    /// `belongs` admits.
    func task(_ idOrReference: String, countingStatusCall: Bool, where belongs: (SimTask) -> Bool) -> SimTask? {
        state.withLock { state in
            if countingStatusCall { state.stats.statusCalls += 1 }
            if let task = state.tasks[idOrReference], belongs(task) { return task }
            return state.tasks.values.first { $0.reference == idOrReference && belongs($0) }
        }
    }

    /// Every task `belongs` admits.
    func tasks(where belongs: (SimTask) -> Bool) -> [SimTask] {
        state.withLock { state in state.tasks.values.filter(belongs) }
    }

    /// Cancels a task that has not ended; the task as it is after.
    func cancel(_ id: String, now: Date = Date()) -> SimTask? {
        state.withLock { state in
            state.stats.cancels += 1
            guard var task = state.tasks[id] else { return nil }
            if task.phase(at: now) != .ended { task.cancelledAt = now }
            state.tasks[id] = task
            return task
        }
    }

    /// Stops a task at `time` if it has not ended by then, as a provider's own deadline does
    /// (not counted as a cancel: nobody asked).
    func stop(_ id: String, at time: Date) {
        Task.detached { [self] in
            let wait = time.timeIntervalSinceNow
            if wait > 0 { try? await Task.sleep(for: .milliseconds(Int(wait * 1_000))) }
            state.withLock { state in
                guard var task = state.tasks[id], task.phase(at: time) != .ended else { return }
                task.cancelledAt = time
                state.tasks[id] = task
            }
        }
    }

    // MARK: Callbacks

    /// The body of a callback: `value` as JSON.
    static func json(_ value: JSONValue) -> Data { (try? JSONCoding.encode(value)) ?? Data("{}".utf8) }

    /// Calls `url` back once `task` has ended, as providers do (not if it never ends or was
    /// cancelled), with the body and headers `make` gives for the task as it is then; counted in
    /// `callbacks`, and in `failed_callbacks` when the receiver does not answer 2xx.
    func callBack(
        _ task: SimTask, url: String, make: @escaping @Sendable (SimTask) -> (body: Data, headers: [(String, String)])
    ) {
        guard task.fate != .stuck, url.hasPrefix("http://") || url.hasPrefix("https://") else { return }
        Task.detached { [self] in
            let wait = task.endsAt.timeIntervalSinceNow + 0.05
            if wait > 0 { try? await Task.sleep(for: .milliseconds(Int(wait * 1_000))) }
            guard let ended = self.task(task.id, countingStatusCall: false), ended.cancelledAt == nil else { return }
            let (body, headers) = make(ended)
            var request = HTTPClientRequest(url: url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            request.body = .bytes(ByteBuffer(bytes: body))
            let delivered: Bool
            do {
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
                delivered = (200..<300).contains(response.status.code)
                _ = try? await response.body.collect(upTo: 1 << 20)
            } catch {
                delivered = false
            }
            self.state.withLock { state in
                state.stats.callbacks += 1
                if !delivered { state.stats.failedCallbacks += 1 }
            }
        }
    }

    // MARK: Faults

    /// What a call meets before it is handled: latency, then maybe a fault. Nil: go on.
    enum Fault {
        case rateLimited(retryAfter: Double)
        case serverError
        case reset
        case timeout
        case malformed
    }

    func fault() async -> Fault? {
        let knobs = self.knobs
        if knobs.latencyMs > 0 { try? await Task.sleep(for: .milliseconds(knobs.latencyMs)) }
        if Double.random(in: 0..<1) < knobs.p429 { return .rateLimited(retryAfter: knobs.retryAfterS) }
        if Double.random(in: 0..<1) < knobs.p5xx { return .serverError }
        if Double.random(in: 0..<1) < knobs.pReset { return .reset }
        if Double.random(in: 0..<1) < knobs.pTimeout { return .timeout }
        if Double.random(in: 0..<1) < knobs.pMalformed { return .malformed }
        return nil
    }

    /// After a task was created: its answer dropped (`p_lost_answer`), or nil to answer normally.
    func lostAnswer() async -> Response? {
        let lost = state.withLock { state -> Bool in
            guard Double.random(in: 0..<1) < state.knobs.pLostAnswer else { return false }
            state.stats.lostAnswers += 1
            return true
        }
        return lost ? await Self.generic(.reset) : nil
    }

    /// The answer of a fault that is not the provider's own error format.
    static func generic(_ fault: Fault) async -> Response? {
        switch fault {
        case .reset:
            // Promise more than is sent, then fail the body: the connection is dropped mid-answer.
            var headers = HTTPFields()
            headers[.contentLength] = "1024"
            headers[.contentType] = "application/json"
            return Response(
                status: .ok, headers: headers,
                body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: "{\"id\": "))
                    throw SimError("connection reset by the simulator")
                })
        case .timeout:
            try? await Task.sleep(for: .seconds(3_600))
            return SimJSON.response(.serviceUnavailable, ["error": .string("timed out")])
        case .malformed:
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(
                status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: "{\"status\": \"succ")))
        case .rateLimited, .serverError:
            return nil
        }
    }

    // MARK: Helpers

    /// `<n>.png` or `<n>.mp4`.
    static func parse(file: String) -> (index: Int, isVideo: Bool)? {
        let parts = file.split(separator: ".")
        guard parts.count == 2, let index = Int(parts[0]), index >= 0, ["png", "mp4"].contains(parts[1]) else {
            return nil
        }
        return (index, parts[1] == "mp4")
    }

    /// The base URL the client used to reach us, for the file URLs we hand out.
    static func base(of request: Request) -> String {
        "http://\(request.head.authority ?? "127.0.0.1")"
    }
}

/// One provider's API on a simulator: how it says "who are you", "slow down" and "try again" in
/// its own format. `guarded` applies them, with the knobs, before each handler.
protocol SimulatedAPI {
    var simulator: ProviderSimulator { get }
    func register(on router: Router<BasicRequestContext>)
    /// The provider's answer to a call it does not let in (no or wrong credentials); nil: go on.
    func refusal(_ request: Request) async -> Response?
    func rateLimited(retryAfter seconds: Int, headers: HTTPFields) -> Response
    func serverError() -> Response
}

/// An API that lets a call in by comparing a header with its key.
protocol KeyCheckedAPI: SimulatedAPI {
    func isAuthorized(_ request: Request) -> Bool
    func unauthorized() -> Response
}

extension KeyCheckedAPI {
    func refusal(_ request: Request) async -> Response? { isAuthorized(request) ? nil : unauthorized() }
}

extension SimulatedAPI {
    /// Auth, then the knobs' latency and faults (and, for a call that `creates` a task, the
    /// `max_active` limit), then `body`.
    func guarded(_ request: Request, creates: Bool = false, _ body: () async throws -> Response) async throws
        -> Response
    {
        if let refused = await refusal(request) { return refused }
        if creates, simulator.refusesNewTask() {
            var headers = HTTPFields()
            headers[.retryAfter] = "1"
            return rateLimited(retryAfter: 1, headers: headers)
        }
        if let fault = await simulator.fault() {
            if let answer = await ProviderSimulator.generic(fault) { return answer }
            if case .rateLimited(let seconds) = fault {
                let whole = Int(seconds.rounded(.up))
                var headers = HTTPFields()
                headers[.retryAfter] = String(whole)
                return rateLimited(retryAfter: whole, headers: headers)
            }
            return serverError()
        }
        return try await body()
    }
}

/// One task of a simulated provider.
struct SimTask: Sendable {
    enum Fate: Sendable { case succeed, empty, policy, stuck }
    enum Phase { case queued, running, ended }

    var id: String
    var reference: String?
    var model: String
    var input: JSONValue
    var createdAt: Date
    var endsAt: Date
    var queuedUntil: Date
    var fate: Fate
    var outputs: Int
    var isVideo: Bool
    var cancelledAt: Date?
    /// Replicate: the version the prediction was created with, when one was given.
    var version: String?

    func phase(at now: Date) -> Phase {
        if cancelledAt != nil { return .ended }
        if fate != .stuck, now >= endsAt { return .ended }
        return now < queuedUntil ? .queued : .running
    }

    func files(base: String) -> [String] {
        (0..<outputs).map { "\(base)/_sim/files/\(id)/\($0).\(isVideo ? "mp4" : "png")" }
    }
}

/// JSON answers of the simulators.
enum SimJSON {
    static func response(_ status: HTTPResponse.Status, _ body: JSONValue, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        let data = (try? JSONCoding.encode(body)) ?? Data("{}".utf8)
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func response(_ status: HTTPResponse.Status, _ body: [String: JSONValue], headers: HTTPFields = [:])
        -> Response
    {
        response(status, JSONValue.object(body), headers: headers)
    }
}
