import Foundation
import GenGateCore
import NIOHTTP1

/// Pollo AI's video API (https://docs.pollo.ai), as its OpenAPI description has it.
///
/// Covered: submit (`POST /generation/{brand}/{model}` with `x-api-key`; `input` holds the
/// prompt, seed and every `params` field, e.g. `length`, `resolution`, `aspectRatio`, `mode`,
/// `negativePrompt`); status (`GET /generation/{taskId}/status`, the first of `generations[]`);
/// the output URL (kept 14 days). Models are named `pollo/<brand>/<model>`, or `pollo/<model>`
/// for Pollo's own brand.
/// With GenGate's public URL configured, each task asks for a `webhookUrl`.
/// Not covered: cancel (none documented), finding a task by our reference (none), Pollo's
/// webhook signatures (their signed string is undocumented; the URL's token is the proof),
/// image models. Input images go as URLs (`input.image`, `input.imageTail`).
///
/// Mapping: `waiting` → queued, `processing` → running, `succeed` → the URL (none is a
/// retryable provider error), `failed` → content policy when `failMsg` says so (sensitive,
/// policy, violat…), else a retryable provider error. HTTP (Pollo's error answers are not
/// documented): 401 authentication, 402 or 403 mentioning credit → quota, 429 rate limited, 5xx
/// unavailable, other 4xx invalid request. The task id is read from `taskId` at the top level
/// or under `data`, both seen.
public struct PolloAdapter: HTTPProviderAdapter {
    public let name = "pollo"
    public let http: ProviderHTTP
    let key: String
    public let models: [ModelInfo]

    public var capabilities: ProviderCapabilities {
        ProviderCapabilities(
            asynchronous: true, streaming: false, cancel: false, maxOutputsPerCall: 1,
            findsSubmissionByReference: false, callbacks: true,
            // Credits are taken when a task is made.
            chargesOnAcceptance: true)
    }

    public static let defaultModels: [ModelInfo] = [
        "pollo/pollo-v1-6", "pollo/pollo-v2-5", "pollo/pixverse/pixverse-v4-5", "pollo/minimax/minimax-hailuo-02",
    ].map { ModelInfo(id: $0, provider: "pollo", kind: .video, maxOutputs: 1, images: videoImages) }

    /// Pollo takes images only as URLs (`input.image`, the first frame; `input.imageTail`, the
    /// last): GenGate hands it a presigned object-store URL, or a signed GenGate link. Sent as
    /// the seed's Pollo preprocessing says: the format kept, quality 85, at most 5000 KB.
    public static let videoImages = ImageIntake(
        maxImages: 2, limits: ImageLimits(maxBytes: 10 << 20, minSide: 300, minAspect: 0.4, maxAspect: 2.5),
        delivery: [.url],
        pipeline: ImagePipeline([.resize(.fit, width: 4096, height: 4096), .quality(85), .maxKilobytes(5_000)]),
        purpose: "image-to-video: the first frame, then (optional) the last frame", formats: [.jpeg, .png])

    public static let defaultBaseURL = "https://pollo.ai/api/platform"

    public init(key: String, endpoint: ProviderEndpoint, models: [ModelInfo] = Self.defaultModels) {
        self.key = key
        http = ProviderHTTP(provider: "pollo", endpoint: endpoint)
        self.models = models
    }

    var authorization: [(String, String)] { [("x-api-key", key)] }

    /// `pollo/<brand>/<model>` or `pollo/<model>` (brand `pollo`) as the path after `/generation/`.
    static func path(of model: String) throws -> String {
        let rest = model.hasPrefix("pollo/") ? String(model.dropFirst(6)) : model
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_."))
        guard (1...2).contains(parts.count),
            parts.allSatisfy({ !$0.isEmpty && !$0.hasPrefix(".") && $0.unicodeScalars.allSatisfy(allowed.contains) })
        else {
            throw GenGateError(.invalidRequest, "pollo: model must be pollo/<brand>/<model>, got \(model)")
        }
        return parts.count == 1 ? "pollo/\(parts[0])" : "\(parts[0])/\(parts[1])"
    }

    public func submit(_ request: ProviderRequest) async throws -> String {
        var input = request.params
        input["prompt"] = .string(request.prompt)
        if let seed = request.callSeed { input["seed"] = .number(Double(seed)) }
        if let first = request.images.first { input["image"] = .string(first.text) }
        if request.images.count > 1 { input["imageTail"] = .string(request.images[1].text) }
        let answer = try await http.send(
            .POST, "/generation/\(try Self.path(of: request.model))",
            headers: authorization + [("X-GenGate-Reference", request.clientReference)],
            json: .object(body(request, input: input)))
        guard (200..<300).contains(answer.status.code) else { throw error(answer) }
        guard let id = (answer.json?["taskId"] ?? answer.json?["data"]?["taskId"])?.stringValue, !id.isEmpty else {
            throw GenGateError(.providerError, "pollo: the submission's answer has no taskId")
        }
        return id
    }

    /// The submission's body: `input`, and `webhookUrl` when a callback is asked for.
    func body(_ request: ProviderRequest, input: [String: JSONValue]) -> [String: JSONValue] {
        var body: [String: JSONValue] = ["input": .object(input), "clientSource": .string("gengate")]
        if let callback = request.callback { body["webhookUrl"] = .string(callback.url) }
        return body
    }

    public func status(taskID: String, request: ProviderRequest) async throws -> ProviderTaskState {
        let escaped = ProviderHTTP.segment(taskID)
        let answer = try await http.send(.GET, "/generation/\(escaped)/status", headers: authorization)
        guard answer.status == .ok else { throw error(answer) }
        guard let task = answer.json, case .object = task["data"] ?? task else {
            throw GenGateError(.providerError, "pollo: the status answer is not a task")
        }
        if let credits = (task["data"] ?? task)["credit"]?.doubleValue {
            request.charges.report(ProviderCharge(credits: credits))
        }
        return try Self.state(of: task["data"] ?? task, request: request)
    }

    /// The state of a status answer.
    public static func state(of task: JSONValue, request: ProviderRequest) throws -> ProviderTaskState {
        guard case .array(let generations)? = task["generations"] else {
            throw GenGateError(.providerError, "pollo: the status answer lists no generations")
        }
        guard let generation = generations.first else { return .queued }  // accepted, none listed yet
        switch generation["status"]?.stringValue ?? "" {
        case "waiting":
            return .queued
        case "processing":
            return .running(progress: nil)
        case "succeed", "succeeded":
            guard let url = generation["url"]?.stringValue, url.hasPrefix("https://") || url.hasPrefix("http://"),
                let index = request.outputIndexes.first
            else {
                return .failed(
                    GenGateError(.providerError, "pollo: the generation succeeded without a URL", retryable: true))
            }
            let type =
                generation["mediaType"]?.stringValue == "image"
                ? ProviderHTTP.contentType(ofURL: url) : "video/mp4"
            return .succeeded(outputs: [Output(index: index, source: url, contentType: type)])
        case "failed":
            let message = generation["failMsg"]?.stringValue ?? "the generation failed"
            let lowered = message.lowercased()
            if ["sensitive", "policy", "violat", "inappropriate", "nsfw"].contains(where: lowered.contains) {
                return .failed(GenGateError(.contentPolicy, "pollo: \(message)"))
            }
            return .failed(GenGateError(.providerError, "pollo: \(message)", retryable: true))
        case let other:
            // Not a state we know: a failed check (the task may still run), not a failed attempt.
            throw GenGateError(.providerError, "pollo: unknown status \(other)")
        }
    }

    func error(_ answer: ProviderHTTP.Answer) -> GenGateError {
        classify(answer).withProviderCode(ProviderErrors.code(answer.json))
    }

    func classify(_ answer: ProviderHTTP.Answer) -> GenGateError {
        let message = ProviderErrors.message(answer.json)
        if [402, 403].contains(answer.status.code), message.lowercased().contains("credit") {
            return GenGateError(.quotaExceeded, "pollo: \(message) (HTTP \(answer.status.code))")
        }
        return statusError(answer)
    }
}
