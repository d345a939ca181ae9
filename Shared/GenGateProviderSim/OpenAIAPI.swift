import Foundation
import GenGateCore
import GenGateProviders
import HTTPTypes
import Hummingbird
import NIOCore

/// OpenAI's API at its real paths, enough for the `openai` SDK: `POST /v1/images/generations`
/// (synchronous; answers after `task_seconds` with `data[].b64_json`, or `data[].url` for the
/// dall-e models unless `response_format` is `b64_json`; gpt-image models refuse
/// `response_format`, dall-e-3 refuses `n` > 1), `POST /v1/chat/completions` (the reply, an
/// echo of the last user message, as one `chat.completion` or, with `stream: true`, as
/// server-sent `chat.completion.chunk`s spread over `task_seconds`, a usage chunk when asked,
/// and `data: [DONE]`), `GET /v1/models`. Errors are `{"error": {message, type, param, code}}`:
/// 401 `invalid_api_key`, 429 `rate_limit_exceeded` (with `retry-after`), 429
/// `insufficient_quota` (balance), 400 `content_policy_violation` (dall-e) or
/// `moderation_blocked` (gpt-image), 500 `server_error`; a refused chat ends with
/// `finish_reason: content_filter`.
struct OpenAIAPI: SimulatedAPI {
    let simulator: ProviderSimulator

    static let imageModels = ["gpt-image-1", "dall-e-2", "dall-e-3"]
    static let chatModels = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"]

    func register(on router: Router<BasicRequestContext>) {
        router.post("/v1/images/generations") { request, _ in
            try await guarded(request, creates: true) { try await images(request) }
        }
        router.post("/v1/images/edits") { request, _ in
            try await guarded(request, creates: true) { try await edits(request) }
        }
        router.post("/v1/chat/completions") { request, _ in
            try await guarded(request, creates: true) { try await chat(request) }
        }
        router.get("/v1/models") { request, _ in
            try await guarded(request) {
                SimJSON.response(
                    .ok,
                    [
                        "object": .string("list"),
                        "data": .array(
                            (Self.imageModels + Self.chatModels).map {
                                .object([
                                    "id": .string($0), "object": .string("model"), "created": .number(1_700_000_000),
                                    "owned_by": .string("system"),
                                ])
                            }),
                    ])
            }
        }
    }

    /// OpenAI's answer to a wrong key quotes the key it was given (the real one masks its
    /// middle; quoting it whole here proves GenGate never passes it on).
    func refusal(_ request: Request) async -> Response? {
        let given = request.headers[.authorization] ?? ""
        guard given != "Bearer \(simulator.key)" else { return nil }
        let key = given.hasPrefix("Bearer ") ? String(given.dropFirst(7)) : given
        return error(
            .unauthorized,
            "Incorrect API key provided: \(key). You can find your API key at https://platform.openai.com/account/api-keys.",
            type: "invalid_request_error", code: "invalid_api_key")
    }

    func rateLimited(retryAfter seconds: Int, headers: HTTPFields) -> Response {
        error(
            .tooManyRequests, "Rate limit reached for requests", type: "requests", code: "rate_limit_exceeded",
            headers: headers)
    }

    func serverError() -> Response {
        error(.internalServerError, "The server had an error while processing your request.", type: "server_error")
    }

    func body(of request: Request) async throws -> [String: JSONValue]? {
        var request = request
        let data = try await request.collectBody(upTo: 1 << 20)
        guard case .object(let body)? = try? JSONCoding.decode(JSONValue.self, from: Data(data.readableBytesView))
        else {
            return nil
        }
        return body
    }

    var quotaExceeded: Response {
        error(
            .tooManyRequests, "You exceeded your current quota, please check your plan and billing details.",
            type: "insufficient_quota", code: "insufficient_quota")
    }

    func images(_ request: Request) async throws -> Response {
        guard let body = try await body(of: request) else {
            return error(
                .badRequest, "We could not parse the JSON body of your request.", type: "invalid_request_error")
        }
        return try await images(body, request)
    }

    /// `POST /v1/images/edits`: a multipart body, its images as files (`image`, or `image[]` for
    /// several), every other field as text; read as OpenAI would, then answered as a generation.
    func edits(_ request: Request) async throws -> Response {
        var request = request
        let data = try await request.collectBody(upTo: 256 << 20)
        guard
            let parts = Multipart.parse(
                Data(data.readableBytesView), contentType: request.headers[.contentType] ?? "")
        else {
            return error(.badRequest, "The body must be multipart/form-data.", type: "invalid_request_error")
        }
        var body: [String: JSONValue] = [:]
        var imageCount = 0
        for part in parts {
            if part.name == "image" || part.name == "image[]" {
                imageCount += 1
                if let refusal = simulator.receiveImage(bytes: part.data, field: part.name, form: "multipart") {
                    return error(.badRequest, "Invalid image: \(refusal).", param: "image")
                }
            } else if part.name == "n", let number = Double(part.text) {
                body["n"] = .number(number)
            } else {
                body[part.name] = .string(part.text)
            }
        }
        guard imageCount > 0 else {
            return error(.badRequest, "Missing required parameter: 'image'.", param: "image")
        }
        let model = body["model"]?.stringValue ?? "dall-e-2"
        guard model != "dall-e-3" else {
            return error(.badRequest, "Invalid value for 'model' = dall-e-3: it cannot edit.", param: "model")
        }
        if model == "dall-e-2", imageCount > 1 || parts.contains(where: { $0.name == "image[]" }) {
            return error(.badRequest, "dall-e-2 edits one image, as 'image'.", param: "image")
        }
        return try await images(body, request)
    }

    func images(_ body: [String: JSONValue], _ request: Request) async throws -> Response {
        guard let prompt = body["prompt"]?.stringValue, !prompt.isEmpty else {
            return error(.badRequest, "Missing required parameter: 'prompt'.", param: "prompt")
        }
        let model = body["model"]?.stringValue ?? "dall-e-2"
        guard Self.imageModels.contains(model) else {
            return error(.badRequest, "Invalid value for 'model' = \(model).", param: "model")
        }
        let count = body["n"].map { $0.intValue ?? 0 } ?? 1
        guard (1...10).contains(count), model != "dall-e-3" || count == 1 else {
            return error(.badRequest, "Invalid 'n': this model supports 1…\(model == "dall-e-3" ? 1 : 10).", param: "n")
        }
        if model.hasPrefix("gpt-image"), body["response_format"] != nil {
            return error(.badRequest, "Unknown parameter: 'response_format'.", param: "response_format")
        }
        if Double.random(in: 0..<1) < simulator.knobs.pBalance { return quotaExceeded }
        let task = simulator.submit(
            reference: request.headers[HTTPField.Name("X-GenGate-Reference")!], model: model, input: .object(body),
            outputs: count, isVideo: false)
        guard let answer = await wait(for: task) else {
            return error(.internalServerError, "timed out", type: "server_error")
        }
        if let lost = await simulator.lostAnswer() { return lost }
        switch task.fate {
        case .policy:
            return error(
                .badRequest,
                "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
                type: "image_generation_user_error",
                code: model.hasPrefix("gpt-image") ? "moderation_blocked" : "content_policy_violation")
        default:
            let base = ProviderSimulator.base(of: request)
            let asURL = model.hasPrefix("dall-e") && (body["response_format"]?.stringValue ?? "url") == "url"
            let data: [JSONValue] = (0..<answer.outputs).map { index in
                asURL
                    ? .object(["url": .string(answer.files(base: base)[index])])
                    : .object(["b64_json": .string(SimFiles.png(seed: task.id, index: index).base64EncodedString())])
            }
            var object: [String: JSONValue] = [
                "created": .number(Date().timeIntervalSince1970.rounded()), "data": .array(data),
            ]
            if model.hasPrefix("gpt-image") {
                object["usage"] = .object([
                    "input_tokens": .number(10), "output_tokens": .number(Double(272 * count)),
                    "total_tokens": .number(Double(10 + 272 * count)),
                ])
            }
            return SimJSON.response(.ok, .object(object))
        }
    }

    /// Waits out a synchronous call: the task as it ended, or nil if it never does (stuck; the
    /// client's timeout ends the call first).
    func wait(for task: SimTask) async -> SimTask? {
        if task.fate == .stuck {
            try? await Task.sleep(for: .seconds(3_600))
            return nil
        }
        let left = task.endsAt.timeIntervalSinceNow
        if left > 0 { try? await Task.sleep(for: .milliseconds(Int(left * 1_000))) }
        return task
    }

    func chat(_ request: Request) async throws -> Response {
        guard let body = try await body(of: request) else {
            return error(
                .badRequest, "We could not parse the JSON body of your request.", type: "invalid_request_error")
        }
        guard case .array(let messages)? = body["messages"], !messages.isEmpty else {
            return error(.badRequest, "Missing required parameter: 'messages'.", param: "messages")
        }
        let model = body["model"]?.stringValue ?? ""
        guard Self.chatModels.contains(model) else {
            return error(
                .notFound, "The model `\(model)` does not exist or you do not have access to it.",
                type: "invalid_request_error", code: "model_not_found")
        }
        if Double.random(in: 0..<1) < simulator.knobs.pBalance { return quotaExceeded }
        let last = messages.last { $0["role"]?.stringValue == "user" }?["content"]?.stringValue ?? ""
        let task = simulator.submit(
            reference: request.headers[HTTPField.Name("X-GenGate-Reference")!], model: model, input: .object(body),
            outputs: 1, isVideo: false)
        let id = "chatcmpl-" + task.id
        let created = JSONValue.number(Date().timeIntervalSince1970.rounded())
        let words: [String] =
            task.fate == .succeed
            ? ("Echo: " + last).split(separator: " ", omittingEmptySubsequences: false).enumerated().map {
                $0.offset == 0 ? String($0.element) : " " + $0.element
            } : []
        let finish = task.fate == .policy ? "content_filter" : "stop"
        let usage = JSONValue.object([
            "prompt_tokens": .number(Double(last.split(separator: " ").count)),
            "completion_tokens": .number(Double(words.count)),
            "total_tokens": .number(Double(last.split(separator: " ").count + words.count)),
        ])
        guard body["stream"] == .bool(true) else {
            guard await wait(for: task) != nil else { return serverError() }
            return SimJSON.response(
                .ok,
                [
                    "id": .string(id), "object": .string("chat.completion"), "created": created,
                    "model": .string(model),
                    "choices": .array([
                        .object([
                            "index": .number(0), "finish_reason": .string(finish), "logprobs": .null,
                            "message": .object([
                                "role": .string("assistant"), "content": .string(words.joined()), "refusal": .null,
                            ]),
                        ])
                    ]),
                    "usage": usage,
                ])
        }
        let includeUsage = body["stream_options"]?["include_usage"] == .bool(true)
        let stuck = task.fate == .stuck
        let pause = Duration.milliseconds(
            Int(max(0, task.endsAt.timeIntervalSince(task.createdAt)) * 1_000 / Double(words.count + 1)))
        @Sendable func chunk(_ delta: JSONValue, finish: String?) -> ByteBuffer {
            let object = JSONValue.object([
                "id": .string(id), "object": .string("chat.completion.chunk"), "created": created,
                "model": .string(model),
                "system_fingerprint": .string("fp_sim"),
                "choices": .array([
                    .object([
                        "index": .number(0), "delta": delta, "logprobs": .null,
                        "finish_reason": finish.map { .string($0) } ?? .null,
                    ])
                ]),
            ])
            return ByteBuffer(
                string: "data: " + String(decoding: (try? JSONCoding.encode(object)) ?? Data(), as: UTF8.self) + "\n\n")
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream; charset=utf-8"
        headers[.cacheControl] = "no-cache"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                try await writer.write(
                    chunk(.object(["role": .string("assistant"), "content": .string("")]), finish: nil))
                for word in words {
                    try await Task.sleep(for: pause)
                    try await writer.write(chunk(.object(["content": .string(word)]), finish: nil))
                }
                if stuck { try await Task.sleep(for: .seconds(3_600)) }
                try await Task.sleep(for: pause)
                try await writer.write(chunk(.object([:]), finish: finish))
                if includeUsage {
                    let object = JSONValue.object([
                        "id": .string(id), "object": .string("chat.completion.chunk"), "created": created,
                        "model": .string(model), "choices": .array([]), "usage": usage,
                    ])
                    try await writer.write(
                        ByteBuffer(
                            string: "data: " + String(decoding: try JSONCoding.encode(object), as: UTF8.self) + "\n\n"))
                }
                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                try await writer.finish(nil)
            })
    }

    func error(
        _ status: HTTPResponse.Status, _ message: String, type: String = "invalid_request_error", param: String? = nil,
        code: String? = nil, headers: HTTPFields = [:]
    ) -> Response {
        SimJSON.response(
            status,
            [
                "error": .object([
                    "message": .string(message), "type": .string(type), "param": param.map { .string($0) } ?? .null,
                    "code": code.map { .string($0) } ?? .null,
                ])
            ], headers: headers)
    }
}
