import Foundation
import GenGateCore
import NIOHTTP1
import NIOPosix

/// OpenAI's Images API and chat completions, and every server that speaks them (Tuzi, vLLM,
/// Ollama, LiteLLM, …: set the base URL as the `openai` SDK takes it, ending in `/v1`). Both
/// are synchronous: the answer carries the outputs, which the engine stores at once.
///
/// Covered: `POST /images/generations` (`model`, `prompt`, `n`, `size` as `WxH` from width and
/// height, `response_format: b64_json` for the dall-e models, which otherwise answer with URLs
/// kept an hour; gpt-image models always answer base64 and refuse the field; every other
/// `params` field as it is: `quality`, `style`, `background`, `output_format`, `moderation`, …).
/// The answer streams into a scratch file and each `b64_json` is decoded from there into a file
/// of its own (`Base64Fields`), so images are never held whole; `url` outputs, which some
/// compatible servers send, are downloaded at once. The type of each image is read from its
/// bytes. `POST /chat/completions` with `stream: true` (and `stream_options.include_usage`):
/// `params.messages` as OpenAI takes them, or the prompt as one user message, and every other
/// `params` field (`temperature`, `max_tokens`, …) as it is; each `delta.content` of the
/// server-sent events goes to the event stream as it arrives, and the whole text is the output
/// (`text/plain; charset=utf-8`).
/// Image edits: with input images, the same call goes to `POST /images/edits` as a multipart
/// body, the images as files (`image[]`; `image` for a dall-e model, though none is offered
/// images: dall-e-2 wants a PNG whose transparency is the mask).
/// Not covered: variations, masks given as images, streamed partial images, tool calls,
/// several choices (`n` > 1 for chat), the Responses API, organisation and project headers.
/// OpenAI finds no call by reference: a crash during a call is counted as a possible double
/// charge.
///
/// Mapping: `{"error": {message, type, code}}`: 400 with `content_policy_violation` or
/// `moderation_blocked` (or a message naming the safety system) content policy; 429 with
/// `insufficient_quota` (or the spend-limit codes) quota, any other 429 rate limited with
/// `retry-after-ms` or `retry-after`; 401 and 403 authentication; 5xx unavailable; a chat whose
/// `finish_reason` is `content_filter` content policy; an error event mid-stream a retryable
/// provider error; an answer with no image, or an empty text, a retryable provider error.
public struct OpenAIAdapter: HTTPProviderAdapter {
    public let name = "openai"
    public let http: ProviderHTTP
    let key: String
    public let models: [ModelInfo]

    public static let defaultBaseURL = "https://api.openai.com/v1"

    /// gpt-image-1 edits from up to 16 images (PNG, JPEG or WebP, under 50 MB each), as files of
    /// a multipart body: within 2048 px, in their own format (a PNG keeps its transparency), the
    /// body built in memory.
    /// dall-e-2 takes none here: its edits want a PNG with transparency as the mask, which a
    /// pipeline does not make.
    public static let gptImageEdits = ImageIntake(
        maxImages: 16, limits: ImageLimits(maxBytes: 50_000_000), delivery: [.multipart],
        pipeline: ImagePipeline([.resize(.fit, width: 2048, height: 2048), .quality(90), .format(nil)]),
        purpose: "images to edit or take from", formats: [.png, .jpeg, .webp])

    public static let defaultModels: [ModelInfo] = [
        ModelInfo(id: "openai/gpt-image-1", provider: "openai", kind: .image, maxOutputs: 10, images: gptImageEdits),
        ModelInfo(id: "openai/dall-e-3", provider: "openai", kind: .image, maxOutputs: 4, maxOutputsPerCall: 1),
        ModelInfo(id: "openai/dall-e-2", provider: "openai", kind: .image, maxOutputs: 10),
        ModelInfo(id: "openai/gpt-4o-mini", provider: "openai", kind: .text, maxOutputs: 1),
        ModelInfo(id: "openai/gpt-4o", provider: "openai", kind: .text, maxOutputs: 1),
        ModelInfo(id: "openai/gpt-4.1-mini", provider: "openai", kind: .text, maxOutputs: 1),
    ]

    public var capabilities: ProviderCapabilities {
        ProviderCapabilities(
            asynchronous: false, streaming: true, cancel: false, maxOutputsPerCall: 10,
            findsSubmissionByReference: false, chargesOnAcceptance: true)
    }

    public init(key: String, endpoint: ProviderEndpoint, models: [ModelInfo] = Self.defaultModels) {
        self.key = key
        http = ProviderHTTP(provider: "openai", endpoint: endpoint)
        self.models = models
    }

    var authorization: [(String, String)] { [("Authorization", "Bearer \(key)")] }

    /// Our client reference, in a header OpenAI ignores (simulators count duplicates by it).
    func reference(_ request: ProviderRequest) -> [(String, String)] {
        [("X-GenGate-Reference", request.clientReference)]
    }

    /// The model name OpenAI knows (after `openai/`).
    static func modelName(_ id: String) -> String {
        id.hasPrefix("openai/") ? String(id.dropFirst("openai/".count)) : id
    }

    public func submit(_ request: ProviderRequest) async throws -> String {
        throw GenGateError(.internalError, "openai answers with its outputs: use generate", retryable: false)
    }

    public func status(taskID: String, request: ProviderRequest) async throws -> ProviderTaskState {
        throw GenGateError(.internalError, "openai has no tasks to check", retryable: false)
    }

    public func generate(_ request: ProviderRequest, into sink: GenerationSink) async throws -> [GeneratedOutput] {
        let kind = models.first { $0.id == request.model }?.kind ?? .image
        return kind == .text ? try await chat(request, sink: sink) : try await images(request, sink: sink)
    }

    // MARK: Images

    /// An edit's multipart body: every field of `body` as text (objects and arrays as JSON), and
    /// the images as files (`image[]` where several are taken, else `image`).
    static func edits(_ body: [String: JSONValue], images: [ProviderImage], many: Bool) throws -> Multipart {
        var form = Multipart()
        for (name, value) in body.sorted(by: { $0.key < $1.key }) {
            let text: String
            switch value {
            case .string(let string): text = string
            case .null: continue
            default: text = String(decoding: try JSONCoding.encode(value), as: UTF8.self)
            }
            form.parts.append(.init(name: name, data: Data(text.utf8)))
        }
        for (index, image) in images.enumerated() {
            guard let data = image.data else {
                throw GenGateError(.internalError, "openai: an image edit's image came without its bytes")
            }
            let ext = image.contentType.split(separator: "/").last.map(String.init) ?? "png"
            form.parts.append(
                .init(
                    name: many ? "image[]" : "image", filename: "image-\(index).\(ext == "jpeg" ? "jpg" : ext)",
                    contentType: image.contentType, data: data))
        }
        return form
    }

    func images(_ request: ProviderRequest, sink: GenerationSink) async throws -> [GeneratedOutput] {
        let model = Self.modelName(request.model)
        var body = request.params
        body["model"] = .string(model)
        body["prompt"] = .string(request.prompt)
        body["n"] = .number(Double(request.outputIndexes.count))
        if let width = request.width, let height = request.height { body["size"] = .string("\(width)x\(height)") }
        if model.hasPrefix("dall-e"), body["response_format"] == nil { body["response_format"] = .string("b64_json") }
        let answer = try sink.scratchFile()
        defer { try? FileManager.default.removeItem(at: answer) }
        let head: (status: HTTPResponseStatus, headers: HTTPHeaders, bytes: Int)
        if request.images.isEmpty {
            head = try await http.exchange(
                .POST, "/images/generations", headers: authorization + reference(request), json: .object(body),
                to: answer, timeoutSeconds: http.endpoint.requestTimeoutSeconds)
        } else {
            head = try await http.exchange(
                .POST, "/images/edits", headers: authorization + reference(request),
                multipart: Self.edits(body, images: request.images, many: !model.hasPrefix("dall-e")), to: answer,
                timeoutSeconds: http.endpoint.requestTimeoutSeconds)
        }
        guard (200..<300).contains(head.status.code) else {
            let reader = try? FileHandle(forReadingFrom: answer)
            let data = (try? reader?.read(upToCount: 1 << 20)) ?? Data()
            try? reader?.close()
            throw error(
                ProviderHTTP.Answer(status: head.status, headers: head.headers, body: .init(bytes: data)))
        }
        // Decoding reads and writes files: on NIO's blocking-I/O pool, not the tasks' threads.
        let count = max(request.outputIndexes.count, 10)  // OpenAI's most; extras are dropped below
        let extracted = try await NIOThreadPool.singleton.runIfActive {
            try Base64Fields.extract(field: "b64_json", from: answer, maxValues: count, newFile: sink.scratchFile)
        }
        if let usage = Self.charge(extracted.skeleton["usage"]) { request.charges.report(usage) }
        var made: [GeneratedOutput] = []
        do {
            guard case .array(let items)? = extracted.skeleton["data"] else {
                throw GenGateError(.providerError, "openai: the answer has no data", retryable: true)
            }
            for (index, item) in zip(request.outputIndexes, items) {
                let file: URL
                if let number = item["b64_json"]?.intValue, extracted.files.indices.contains(number) {
                    file = extracted.files[number]
                } else if let url = item["url"]?.stringValue, url.hasPrefix("https://") || url.hasPrefix("http://") {
                    file = try sink.scratchFile()
                    _ = try await http.download(url, to: file)  // no key: the URL is signed
                } else {
                    continue
                }
                made.append(GeneratedOutput(index: index, file: file, contentType: MediaType.sniff(file)))
            }
        } catch {
            for file in extracted.files { try? FileManager.default.removeItem(at: file) }
            for output in made { try? FileManager.default.removeItem(at: output.file) }
            throw error
        }
        // Files of items past the indexes asked for are not kept.
        for file in extracted.files where !made.contains(where: { $0.file == file }) {
            try? FileManager.default.removeItem(at: file)
        }
        guard !made.isEmpty else {
            throw GenGateError(.providerError, "openai: the answer has no image", retryable: true)
        }
        return made
    }

    // MARK: Chat

    func chat(_ request: ProviderRequest, sink: GenerationSink) async throws -> [GeneratedOutput] {
        var body = request.params
        body["model"] = .string(Self.modelName(request.model))
        if body["messages"] == nil {
            body["messages"] = .array([.object(["role": .string("user"), "content": .string(request.prompt)])])
        }
        body["stream"] = .bool(true)
        body["stream_options"] = .object(["include_usage": .bool(true)])
        body["n"] = nil
        let file = try sink.scratchFile()
        guard FileManager.default.createFile(atPath: file.path, contents: nil) else {
            throw GenGateError(.internalError, "cannot create a scratch file")
        }
        var reply = ChatReply(key: key)
        do {
            let handle = try FileHandle(forWritingTo: file)
            defer { try? handle.close() }
            let within = min(
                Duration.seconds(http.endpoint.requestTimeoutSeconds),
                .seconds(max(1, (request.deadline ?? .distantFuture).timeIntervalSinceNow)))
            let refused = try await http.streamLines(
                .POST, "/chat/completions", headers: authorization + reference(request), json: .object(body),
                within: within
            ) { line in
                let more = try reply.take(line)
                if let text = reply.pendingText {
                    try handle.write(contentsOf: Data(text.utf8))
                    sink.chunk(text)
                    reply.pendingText = nil
                }
                return more
            }
            if let refused { throw error(refused) }
            // A server that ignored `stream: true` answers one chat.completion instead.
            if let whole = try reply.wholeAnswer() {
                try handle.write(contentsOf: Data(whole.utf8))
                sink.chunk(whole)
            }
        } catch {
            try? FileManager.default.removeItem(at: file)
            throw error
        }
        do {
            try reply.check()
        } catch {
            try? FileManager.default.removeItem(at: file)
            throw error
        }
        if let usage = reply.usage { request.charges.report(usage) }
        return [GeneratedOutput(index: request.outputIndexes.first ?? 0, file: file, contentType: MediaType.text)]
    }

    /// The tokens a `usage` object reports: chat's `prompt_tokens` / `completion_tokens`, or the
    /// image API's `input_tokens` / `output_tokens`.
    static func charge(_ usage: JSONValue?) -> ProviderCharge? {
        guard let usage, case .object = usage else { return nil }
        let charge = ProviderCharge(
            inputTokens: (usage["prompt_tokens"] ?? usage["input_tokens"])?.intValue,
            outputTokens: (usage["completion_tokens"] ?? usage["output_tokens"])?.intValue)
        return charge.isEmpty ? nil : charge
    }

    /// What a streamed chat said so far, read one server-sent line at a time.
    struct ChatReply {
        /// The tokens the stream's usage chunk (or a whole answer) reported.
        var usage: ProviderCharge?
        var written = 0
        var finish: String?
        var done = false
        var refusal = ""
        /// Text to hand on, from the last line.
        var pendingText: String?
        /// Lines that were not events (a plain JSON answer), kept to a bound.
        var plain = ""

        /// The key, never quoted back in an error.
        var key = ""

        /// Takes one line; false once the stream said it is over.
        mutating func take(_ line: Substring) throws -> Bool {
            guard line.hasPrefix("data:") else {
                if !line.hasPrefix(":"), !line.hasPrefix("event:"), !line.hasPrefix("id:"), plain.utf8.count < 8 << 20 {
                    plain += line + "\n"
                }
                return true
            }
            let data = line.dropFirst(5).trimmingCharacters(in: .whitespaces)
            if data == "[DONE]" {
                done = true
                return false
            }
            guard let chunk = try? JSONCoding.decode(JSONValue.self, from: Data(data.utf8)) else {
                throw GenGateError(.providerError, "openai: a streamed chunk is not JSON", retryable: true)
            }
            if let reported = OpenAIAdapter.charge(chunk["usage"]) { usage = reported }
            if let failure = chunk["error"] {
                let message = failure["message"]?.stringValue ?? "the stream failed"
                throw GenGateError(.providerError, "openai: \(message.replacingOccurrences(of: key, with: "[key]"))")
            }
            guard case .array(let choices)? = chunk["choices"], let choice = choices.first else { return true }
            if let text = choice["delta"]?["content"]?.stringValue, !text.isEmpty {
                written += text.utf8.count
                pendingText = text
            }
            if let text = choice["delta"]?["refusal"]?.stringValue { refusal += text }
            if let reason = choice["finish_reason"]?.stringValue { finish = reason }
            return true
        }

        /// The text of a plain `chat.completion` answer, when no event came.
        mutating func wholeAnswer() throws -> String? {
            guard written == 0, finish == nil, !done, !plain.isEmpty,
                let answer = try? JSONCoding.decode(JSONValue.self, from: Data(plain.utf8)),
                case .array(let choices)? = answer["choices"], let choice = choices.first
            else { return nil }
            finish = choice["finish_reason"]?.stringValue ?? "stop"
            if let reported = OpenAIAdapter.charge(answer["usage"]) { usage = reported }
            if let text = choice["message"]?["refusal"]?.stringValue { refusal += text }
            guard let text = choice["message"]?["content"]?.stringValue, !text.isEmpty else { return nil }
            written = text.utf8.count
            return text
        }

        /// Whether the reply is whole and usable.
        func check() throws {
            if finish == "content_filter" || (!refusal.isEmpty && written == 0) {
                throw GenGateError(.contentPolicy, "openai: the model refused or its answer was filtered")
            }
            guard done || finish != nil else {
                throw GenGateError(.providerError, "openai: the answer stopped before its end", retryable: true)
            }
            guard written > 0 else {
                throw GenGateError(.providerError, "openai: the answer has no text", retryable: true)
            }
        }
    }

    // MARK: Errors

    func error(_ answer: ProviderHTTP.Answer) -> GenGateError {
        classify(answer).withProviderCode(
            ProviderErrors.code(answer.json)?.replacingOccurrences(of: key, with: "[key]"))
    }

    func classify(_ answer: ProviderHTTP.Answer) -> GenGateError {
        let details = answer.json?["error"]
        // A server may quote the key it was given (a wrong one, or ours): never passed on.
        let message = (details?["message"]?.stringValue ?? ProviderErrors.message(answer.json))
            .replacingOccurrences(of: key, with: "[key]")
        let code = details?["code"]?.stringValue ?? ""
        let type = details?["type"]?.stringValue ?? ""
        let text =
            "openai: \(message.isEmpty ? "HTTP \(answer.status.code)" : message) (HTTP \(answer.status.code)\(code.isEmpty ? "" : ", \(code)"))"
        let quota = [
            "insufficient_quota", "credit_balance_exhausted", "organization_spend_limit_exceeded",
            "project_spend_limit_exceeded", "billing_hard_limit_reached",
        ]
        if quota.contains(code) || quota.contains(type) { return GenGateError(.quotaExceeded, text) }
        if ["content_policy_violation", "moderation_blocked"].contains(code)
            || message.lowercased().contains("safety system")
        {
            return GenGateError(.contentPolicy, text)
        }
        if answer.status.code == 429 {
            var wait = ProviderErrors.retryAfter(answer.headers)
            if let millis = answer.headers.first(name: "retry-after-ms").flatMap(Double.init), millis >= 0 {
                wait = min(millis / 1_000, 3_600)
            }
            return GenGateError(.rateLimited, text, retryAfter: wait)
        }
        return ProviderErrors.fromStatus(answer.status, provider: name, message: message, headers: answer.headers)
    }
}

/// Media types told from content, not taken from what the provider claims.
public enum MediaType {
    public static let text = "text/plain; charset=utf-8"

    /// The type of an image file by its first bytes: PNG, JPEG, WebP or GIF; otherwise
    /// `application/octet-stream`.
    public static func sniff(_ file: URL) -> String {
        guard let handle = try? FileHandle(forReadingFrom: file) else { return "application/octet-stream" }
        defer { try? handle.close() }
        return sniff(Array((try? handle.read(upToCount: 12)) ?? Data()))
    }

    public static func sniff(_ head: [UInt8]) -> String {
        if head.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return "image/png" }
        if head.starts(with: [0xFF, 0xD8, 0xFF]) { return "image/jpeg" }
        if head.count >= 12, head.starts(with: Array("RIFF".utf8)), Array(head[8..<12]) == Array("WEBP".utf8) {
            return "image/webp"
        }
        if head.starts(with: Array("GIF8".utf8)) { return "image/gif" }
        return "application/octet-stream"
    }
}
