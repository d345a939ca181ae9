import Foundation
import GenGateCore
import GenGateJobs
import GenGateObjects
import GenGateProviders
import GenGateStore
import HTTPTypes
import Hummingbird
import NIOCore

/// OpenAI's API shape over GenGate's jobs, so the official OpenAI SDKs (and anything built for
/// them) work unchanged with a GenGate key: `POST /v1/images/generations`,
/// `POST /v1/chat/completions` (with `stream: true` as OpenAI's server-sent events) and
/// `GET /v1/models`. Every call is a durable job like any other (it shows in
/// `GET /v1/generations`, with its events and retries); the call waits for it, up to
/// `openai.wait_seconds`, and then answers in OpenAI's format.
struct OpenAIRoutes: Sendable {
    let routes: GenerationRoutes
    let links: OutputLinks

    var store: any GenerationStore { routes.store }
    var hub: EventHub { routes.hub }
    var waitLimit: Duration { .seconds(routes.environment.config.openai.waitSeconds) }

    /// Fields of OpenAI's requests that GenGate reads itself; the rest go to the provider in `params`.
    static let imageFields: Set<String> = ["model", "prompt", "n", "size", "response_format"]
    static let chatFields: Set<String> = ["model", "messages", "stream", "stream_options", "n"]

    func register(on group: RouterGroup<GateContext>) {
        group.post("images/generations") { request, context in try await images(request, context) }
        group.post("chat/completions") { request, context in try await chat(request, context) }
    }

    /// Validates `body` as a GenGate submission of `kind`, commits the job and tells the
    /// dispatchers; returns the job and the watch that says when it changes (at each event, or
    /// only when it ends, as `waking` says).
    ///
    /// With an `Idempotency-Key` (`extra_headers` in the SDKs), a repeat of the same call is the
    /// first call's job, so a client's retry never pays twice.
    func submit(
        _ body: [String: JSONValue], kind: ModelInfo.Kind, waking: EventHub.Wake, request: Request,
        context: GateContext
    ) async throws -> (Generation, EventHub.Watch) {
        let key = try context.requireKey()
        let idempotencyKey = try GenerationRoutes.idempotencyKey(request)
        let validated = try routes.validator.validate(.object(body))
        guard validated.model.kind == kind else {
            let other = validated.model.kind == .text ? "/v1/chat/completions" : "/v1/images/generations"
            throw APIError.invalidRequest(
                "model \(validated.request.model) makes \(validated.model.kind.rawValue); use \(other)",
                details: [.init(path: "model", message: "not a \(kind.rawValue) model")])
        }
        let committed = try await routes.commit(
            validated, owner: key.id, idempotencyKey: idempotencyKey, watching: waking, context: context)
        guard let watch = committed.watch else { throw APIError.unavailable }  // always made when watching
        return (committed.generation, watch)
    }

    static let shouldRetry = HTTPField.Name("x-should-retry")!

    /// The job's end as an error answer, for a job that did not complete (or did not end in time).
    /// The job has been paid for, or retried, already: `x-should-retry: false` tells the OpenAI
    /// SDKs (which retry 409, 429 and 5xx by themselves) not to make another. A provider's
    /// refusal of GenGate's own credentials is a 502, not the caller's 401 or 402.
    func failure(_ generation: Generation?, id: String) -> APIError {
        var headers: HTTPFields = [.location: "/v1/generations/\(id)", Self.shouldRetry: "false"]
        headers[HTTPField.Name("X-GenGate-Generation")!] = id
        guard let generation else {
            return APIError(
                .providerTimeout,
                "generation \(id) is still running after \(Int(waitLimit.components.seconds)) s; follow it at /v1/generations/\(id)",
                headers: headers)
        }
        let error =
            generation.error ?? GenGateError(.internalError, "generation \(id) ended \(generation.status.rawValue)")
        let status: HTTPResponse.Status? =
            [.authenticationFailed, .quotaExceeded].contains(error.code) ? .badGateway : nil
        return APIError(error.code, "\(error.message) (generation \(id))", status: status, headers: headers)
    }

    // MARK: Images

    func images(_ request: Request, _ context: GateContext) async throws -> Response {
        let limit = routes.environment.config.http.maxBodyBytes
        guard case .object(let fields) = try await JSONBody.read(request, context: context, limit: limit).value else {
            throw APIError.invalidRequest("the body must be a JSON object")
        }
        var details: [APIError.Detail] = []
        var body: [String: JSONValue] = ["model": fields["model"] ?? .null, "prompt": fields["prompt"] ?? .null]
        if let n = fields["n"], n != .null { body["n"] = n }
        var params: [String: JSONValue] = [:]
        for (name, value) in fields where !Self.imageFields.contains(name) { params[name] = value }
        switch fields["size"] {
        case nil, .null?: break
        case .string(let size)?:
            params["size"] = .string(size)
            // A size GenGate's own checks cover also sets width and height (for every provider).
            let parts = size.split(separator: "x").compactMap { Int($0) }
            if parts.count == 2, parts.allSatisfy(SubmissionValidator.sizeRange.contains) {
                body["width"] = .number(Double(parts[0]))
                body["height"] = .number(Double(parts[1]))
            }
        case let other?:
            details.append(.init(path: "size", message: "must be a string like 1024x1024, got \(other.typeName)"))
        }
        var format = "url"
        switch fields["response_format"] {
        case nil, .null?: break
        case .string(let name)? where name == "url" || name == "b64_json": format = name
        case _?: details.append(.init(path: "response_format", message: "must be url or b64_json"))
        }
        guard details.isEmpty else { throw APIError.invalidRequest("invalid image request", details: details) }
        if !params.isEmpty { body["params"] = .object(params) }
        let (generation, watch) = try await submit(
            body, kind: .image, waking: .end, request: request, context: context)
        defer { hub.unwatch(watch) }
        let ended = try await routes.waitForEnd(generation.id, upTo: waitLimit, watch: watch)
        guard let ended, ended.status == .completed else { throw failure(ended, id: generation.id) }
        var data: [JSONValue] = []
        for output in ended.outputs.sorted(by: { $0.index < $1.index }) {
            if format == "url" {
                // Straight from object storage where it hands out links; else a signed link to GenGate.
                let objects = routes.environment.objects
                let direct = output.objectKey.flatMap {
                    objects.publicURL(key: $0) ?? objects.temporaryURL(key: $0, now: Date())
                }
                data.append(
                    .object(["url": .string(direct ?? links.link(generationID: ended.id, index: output.index))]))
            } else {
                guard let key = output.objectKey, let bytes = try await routes.environment.objects.get(key: key) else {
                    throw APIError(
                        .internalError, "output \(output.index) of \(ended.id) is missing from object storage")
                }
                data.append(.object(["b64_json": .string(bytes.base64EncodedString())]))
            }
        }
        return JSONResponse.make(
            status: .ok,
            ["created": .number(Double(Int(ended.createdAt.timeIntervalSince1970))), "data": .array(data)],
            headers: [HTTPField.Name("X-GenGate-Generation")!: ended.id])
    }

    // MARK: Chat

    /// The prompt GenGate shows for a chat (its last user message's text), and the messages
    /// themselves for the provider.
    static func prompt(of messages: [JSONValue]) -> String? {
        for message in messages.reversed() where message["role"]?.stringValue == "user" {
            var text = ""
            switch message["content"] {
            case .string(let content)?: text = content
            case .array(let parts)?:
                text = parts.compactMap { $0["type"]?.stringValue == "text" ? $0["text"]?.stringValue : nil }
                    .joined(separator: "\n")
            default: continue
            }
            // The job's prompt only shows the question: NULs go, and it is cut to the prompt's limit.
            let shown = String(
                String.UnicodeScalarView(
                    text.unicodeScalars.filter { $0.value != 0 }.prefix(SubmissionValidator.maxPromptCharacters)))
            if !shown.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return shown }
        }
        return nil
    }

    func chat(_ request: Request, _ context: GateContext) async throws -> Response {
        let limit = routes.environment.config.http.maxBodyBytes
        guard case .object(let fields) = try await JSONBody.read(request, context: context, limit: limit).value else {
            throw APIError.invalidRequest("the body must be a JSON object")
        }
        var details: [APIError.Detail] = []
        var prompt = ""
        switch fields["messages"] {
        case .array(let messages)? where !messages.isEmpty:
            if let text = Self.prompt(of: messages), !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                // The whole conversation goes to the provider; the job shows its last question.
                prompt = text
            } else {
                details.append(.init(path: "messages", message: "needs a user message with text"))
            }
        default:
            details.append(.init(path: "messages", message: "required: a non-empty array of messages"))
        }
        var stream = false
        switch fields["stream"] {
        case nil, .null?: break
        case .bool(let flag)?: stream = flag
        case let other?: details.append(.init(path: "stream", message: "must be a boolean, got \(other.typeName)"))
        }
        if let n = fields["n"], n != .null, n.intValue != 1 {
            details.append(.init(path: "n", message: "only 1 choice per call"))
        }
        guard details.isEmpty else { throw APIError.invalidRequest("invalid chat request", details: details) }
        var params: [String: JSONValue] = [:]
        for (name, value) in fields where !Self.chatFields.contains(name) { params[name] = value }
        params["messages"] = fields["messages"]
        let body: [String: JSONValue] = [
            "model": fields["model"] ?? .null, "prompt": .string(prompt), "params": .object(params),
        ]
        let (generation, watch) = try await submit(
            body, kind: .text, waking: stream ? .everyEvent : .end, request: request, context: context)
        let model = generation.request.model
        let created = Int(generation.createdAt.timeIntervalSince1970)
        guard stream else {
            defer { hub.unwatch(watch) }
            let ended = try await routes.waitForEnd(generation.id, upTo: waitLimit, watch: watch)
            guard let ended, ended.status == .completed else { throw failure(ended, id: generation.id) }
            let text = try await outputText(ended)
            return JSONResponse.make(
                status: .ok,
                [
                    "id": .string("chatcmpl-\(generation.id)"), "object": .string("chat.completion"),
                    "created": .number(Double(created)), "model": .string(model),
                    "choices": .array([
                        .object([
                            "index": .number(0), "finish_reason": .string("stop"),
                            "message": .object(["role": .string("assistant"), "content": .string(text)]),
                        ])
                    ]),
                ], headers: [HTTPField.Name("X-GenGate-Generation")!: generation.id])
        }
        let store = self.store
        let limit2 = waitLimit
        let reader = self
        var headers: HTTPFields = [.contentType: "text/event-stream; charset=utf-8", .cacheControl: "no-store"]
        headers[HTTPField.Name("X-GenGate-Generation")!] = generation.id
        headers[HTTPField.Name("X-Accel-Buffering")!] = "no"
        // Let go with the body, run or not (a client gone before the headers were written).
        let held = HeldWatch(hub: hub, watch: watch)
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                try await reader.streamChat(
                    generation.id, model: model, created: created, watch: held.watch, store: store, limit: limit2,
                    writer: &writer)
                try await writer.finish(nil)
            })
    }

    /// The text of a completed job's first output.
    func outputText(_ generation: Generation) async throws -> String {
        guard let output = generation.outputs.sorted(by: { $0.index < $1.index }).first, let key = output.objectKey,
            let bytes = try await routes.environment.objects.get(key: key)
        else {
            throw APIError(.internalError, "the text of \(generation.id) is missing from object storage")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// OpenAI's streamed chat: a first chunk with the role, the text as the provider streams it
    /// (`generation.stream_chunk`; a provider that does not stream sends it whole at the end), a
    /// last chunk with `finish_reason`, then `[DONE]`. A job that fails ends the stream with an
    /// `error` object, as OpenAI's does.
    func streamChat(
        _ id: String, model: String, created: Int, watch: EventHub.Watch, store: any GenerationStore,
        limit: Duration, writer: inout any ResponseBodyWriter
    ) async throws {
        func chunk(_ delta: [String: JSONValue], finish: String? = nil) throws -> ByteBuffer {
            let body: JSONValue = .object([
                "id": .string("chatcmpl-\(id)"), "object": .string("chat.completion.chunk"),
                "created": .number(Double(created)), "model": .string(model),
                "choices": .array([
                    .object([
                        "index": .number(0), "delta": .object(delta),
                        "finish_reason": finish.map(JSONValue.string) ?? .null,
                    ])
                ]),
            ])
            return ByteBuffer(string: "data: " + String(decoding: try JSONCoding.encode(body), as: UTF8.self) + "\n\n")
        }
        try await writer.write(try chunk(["role": .string("assistant"), "content": .string("")]))
        let deadline = ContinuousClock.now + limit
        var attempt: Int?
        var nextIndex = 0
        var sent: [UInt8] = []
        var diverged = false
        var lastWrite = ContinuousClock.now
        var lastLook = ContinuousClock.now
        while true {
            var fresh = false
            for event in hub.chunks(of: id) {
                guard case .generationStreamChunk(let piece) = event.payload else { continue }
                if attempt == nil { attempt = piece.attempt }
                // A retry streams again from the start: what was sent cannot be taken back.
                guard piece.attempt == attempt else {
                    diverged = true
                    continue
                }
                guard piece.index >= nextIndex else { continue }
                try await writer.write(try chunk(["content": .string(piece.text)]))
                lastWrite = .now
                sent += Array(piece.text.utf8)
                nextIndex = piece.index + 1
                fresh = true
            }
            // The job itself is read when a wake brought no text (another event came) or every
            // second, not once per token.
            if fresh, ContinuousClock.now - lastLook < .seconds(1) {
                await watch.doorbell.wait(upTo: .seconds(1))
                continue
            }
            lastLook = .now
            if let generation = try await store.generation(id: id), generation.status.isTerminal {
                if generation.status == .completed {
                    // Compared as bytes: a chunk may end inside a character.
                    let text = Array(try await outputText(generation).utf8)
                    if text.starts(with: sent) {
                        let rest = String(decoding: text[sent.count...], as: UTF8.self)
                        if !rest.isEmpty { try await writer.write(try chunk(["content": .string(rest)])) }
                        try await writer.write(try chunk([:], finish: "stop"))
                        try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                        return
                    }
                    diverged = true
                }
                let error =
                    diverged
                    ? APIError(
                        .providerError,
                        "the provider's answer was retried after part of it was streamed; read generation \(id) for the whole text"
                    )
                    : failure(generation, id: id)
                try await writer.write(streamError(error))
                return
            }
            if ContinuousClock.now >= deadline || hub.isClosed {
                try await writer.write(streamError(failure(nil, id: id)))
                return
            }
            if ContinuousClock.now - lastWrite >= .seconds(15) {
                try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                lastWrite = .now
            }
            await watch.doorbell.wait(upTo: .seconds(1))
        }
    }

    /// A watch let go when the last holder of this goes (the response body, run or not).
    final class HeldWatch: Sendable {
        let hub: EventHub
        let watch: EventHub.Watch

        init(hub: EventHub, watch: EventHub.Watch) {
            self.hub = hub
            self.watch = watch
        }

        deinit { hub.unwatch(watch) }
    }

    func streamError(_ error: APIError) -> ByteBuffer {
        let body: JSONValue = .object([
            "error": .object([
                "message": .string(error.message), "type": .string(error.code.rawValue),
                "code": .string(error.code.rawValue),
            ])
        ])
        return ByteBuffer(
            string: "data: " + String(decoding: (try? JSONCoding.encode(body)) ?? Data(), as: UTF8.self) + "\n\n")
    }
}
