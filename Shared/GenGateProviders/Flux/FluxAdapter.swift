import Foundation
import GenGateCore
import NIOHTTP1

/// Black Forest Labs' Flux API (https://docs.bfl.ai), as its reference client speaks it.
///
/// Covered: submit (`POST /v1/{model}` with `x-key`; prompt, width, height, seed and any other
/// field from `params`, e.g. `output_format`, `aspect_ratio`, `safety_tolerance`); status by
/// the `polling_url` the submission returned (the global host routes tasks across clusters, so
/// the URL is kept as the task id; one on another host than the configured base URL is not
/// followed, so the key never goes elsewhere) or `GET /v1/get_result?id=`; the result's
/// `sample` URL, which expires after about ten minutes and is fetched as soon as the task is
/// ready (the check moves the job to upload at once), without the key (signed URLs carry their
/// own authority). One image per task. Input images (Kontext, FLUX.2, Ultra's image prompt) go as
/// raw base64 in `input_image`, `input_image_2`, … (`image_prompt` for Ultra).
/// Callbacks: with GenGate's public URL configured, each task asks for a `webhook_url` with a
/// `webhook_secret` (the URL's own token), which BFL sends back in `X-Webhook-Secret`; a delivery
/// without it is refused.
/// Not covered: cancel (BFL documents none), finding a task by our reference (none),
/// fine-tuning, `/v1/credits`.
///
/// Mapping: `Pending` → running with `progress` (0…1) as a percentage, `Ready` → the sample
/// (a Ready without one is a retryable provider error), `Request Moderated` and `Content
/// Moderated` → content policy, `Error` and `Task not found` → a retryable provider error, any
/// other status → a failed check. HTTP: 401/403 authentication, 402 quota, 422 invalid request
/// (FastAPI's `detail` list), 429 rate limited with Retry-After (too many active tasks), 5xx
/// unavailable; a body is read for its status whatever the HTTP code.
public struct FluxAdapter: HTTPProviderAdapter {
    public let name = "flux"
    public let http: ProviderHTTP
    let key: String
    public let models: [ModelInfo]

    public var capabilities: ProviderCapabilities {
        ProviderCapabilities(
            asynchronous: true, streaming: false, cancel: false, maxOutputsPerCall: 1,
            findsSubmissionByReference: false, callbacks: true,
            // Most models allow 24 active tasks an account (Kontext Max 6: configure it lower).
            limits: ProviderLimits(maxConcurrency: 24),
            // A task's credits are taken at submission (its answer says how many).
            chargesOnAcceptance: true)
    }

    public static let defaultModels: [ModelInfo] = [
        "flux-pro-1.1", "flux-pro-1.1-ultra", "flux-pro", "flux-dev", "flux-kontext-pro", "flux-kontext-max",
        "flux-2-pro",
    ].map { ModelInfo(id: "flux/\($0)", provider: "flux", kind: .image, maxOutputs: 4, images: images(of: $0)) }

    /// What a model takes in images, and the fields they go in: Kontext up to 4 and FLUX.2 up to
    /// 8 reference images to edit from (`input_image`, `input_image_2`, …), Ultra one image
    /// prompt (`image_prompt`). Sent as BFL takes them best: raw base64 of a JPEG within
    /// 2048 × 2048 at quality 90.
    static func images(of model: String) -> ImageIntake? {
        let count: Int
        let purpose: String
        switch model {
        case "flux-kontext-pro", "flux-kontext-max": (count, purpose) = (4, "images to edit or take from")
        case "flux-2-pro": (count, purpose) = (8, "reference images")
        case "flux-pro-1.1-ultra": (count, purpose) = (1, "an image prompt, weighed by params.image_prompt_strength")
        default: return nil
        }
        return ImageIntake(
            maxImages: count, limits: ImageLimits(maxBytes: 20 << 20, minSide: 64), delivery: [.base64, .url],
            pipeline: ImagePipeline([.resize(.fit, width: 2048, height: 2048), .quality(90), .format(.jpeg)]),
            purpose: purpose, formats: [.jpeg, .png, .webp])
    }

    /// The body field of a model's input image `index`.
    static func imageField(model: String, index: Int) -> String {
        if model == "flux-pro-1.1-ultra" { return "image_prompt" }
        return index == 0 ? "input_image" : "input_image_\(index + 1)"
    }

    public static let defaultBaseURL = "https://api.bfl.ai"

    public init(key: String, endpoint: ProviderEndpoint, models: [ModelInfo] = Self.defaultModels) {
        self.key = key
        http = ProviderHTTP(provider: "flux", endpoint: endpoint.droppingVersionPath())
        self.models = models
    }

    var authorization: [(String, String)] { [("x-key", key)] }

    public func submit(_ request: ProviderRequest) async throws -> String {
        let model = request.model.hasPrefix("flux/") ? String(request.model.dropFirst("flux/".count)) : request.model
        guard !model.isEmpty, model.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." }) else {
            throw GenGateError(.invalidRequest, "flux: not a Flux model: \(request.model)")
        }
        var body = request.params
        body["prompt"] = .string(request.prompt)
        // One image a task: each output its own seed, or n tasks would paint the same image.
        if let seed = request.callSeed { body["seed"] = .number(Double(seed)) }
        if let width = request.width { body["width"] = .number(Double(width)) }
        if let height = request.height { body["height"] = .number(Double(height)) }
        for (index, image) in request.images.enumerated() {
            body[Self.imageField(model: model, index: index)] = .string(image.text)
        }
        if let callback = request.callback {
            body["webhook_url"] = .string(callback.url)
            body["webhook_secret"] = .string(callback.secret)
        }
        let answer = try await http.send(
            .POST, "/v1/\(model)", headers: authorization + [("X-GenGate-Reference", request.clientReference)],
            json: .object(body))
        guard answer.status == .ok else { throw statusError(answer) }
        guard let id = answer.json?["id"]?.stringValue, !id.isEmpty else {
            throw GenGateError(.providerError, "flux: the submission's answer has no task id")
        }
        if let credits = answer.json?["cost"]?.doubleValue { request.charges.report(ProviderCharge(credits: credits)) }
        if let polling = answer.json?["polling_url"]?.stringValue, isOurs(polling) { return polling }
        return id
    }

    public func status(taskID: String, request: ProviderRequest) async throws -> ProviderTaskState {
        let path: String
        if taskID.hasPrefix("http://") || taskID.hasPrefix("https://") {
            guard isOurs(taskID) else {
                throw GenGateError(
                    .providerError, "flux: a polling URL on another host is not followed", retryable: false)
            }
            path = taskID
        } else {
            path = "/v1/get_result?id=\(ProviderHTTP.segment(taskID))"
        }
        let answer = try await http.send(.GET, path, headers: authorization)
        // Terminal statuses have been seen with non-200 codes: the body decides when it says.
        if let task = answer.json, task["status"]?.stringValue != nil {
            return try Self.state(of: task, request: request)
        }
        throw statusError(answer)
    }

    /// The state of a `get_result` answer (also the body of Flux's webhooks).
    public static func state(of task: JSONValue, request: ProviderRequest) throws -> ProviderTaskState {
        let status = task["status"]?.stringValue ?? ""
        switch status {
        case "Pending":
            let progress = task["progress"].flatMap { value -> Int? in
                guard case .number(let fraction) = value, fraction.isFinite else { return nil }
                return Int((min(1, max(0, fraction)) * 100).rounded())
            }
            return .running(progress: progress)
        case "Ready":
            guard let sample = task["result"]?["sample"]?.stringValue,
                sample.hasPrefix("https://") || sample.hasPrefix("http://"), let index = request.outputIndexes.first
            else {
                return .failed(
                    GenGateError(.providerError, "flux: the task is ready without an image", retryable: true))
            }
            return .succeeded(outputs: [
                Output(index: index, source: sample, contentType: ProviderHTTP.contentType(ofURL: sample))
            ])
        case "Request Moderated", "Content Moderated":
            return .failed(GenGateError(.contentPolicy, "flux: \(status.lowercased())\(details(task))"))
        case "Error", "Task not found":
            return .failed(GenGateError(.providerError, "flux: \(status)\(details(task))", retryable: true))
        default:
            throw GenGateError(.providerError, "flux: unknown task status \(status.isEmpty ? "(none)" : status)")
        }
    }

    static func details(_ task: JSONValue) -> String {
        guard let details = task["details"], details != .null,
            let text = try? String(decoding: JSONCoding.encode(details), as: UTF8.self)
        else { return "" }
        return " (\(text.prefix(300)))"
    }

    /// Whether `url` is on the configured API host, so the key may go with it.
    func isOurs(_ url: String) -> Bool {
        guard let host = URL(string: url)?.host, let base = URL(string: http.endpoint.baseURL)?.host else {
            return false
        }
        return host == base || (base.hasSuffix("bfl.ai") && host.hasSuffix(".bfl.ai"))
    }

    public func verifyCallback(headers: [String: String], body: Data, secret: String, now: Date) async throws {
        guard Digest.constantTimeEqual(headers["x-webhook-secret"] ?? "", secret) else {
            throw GenGateError(.authenticationFailed, "flux: the webhook does not carry our secret")
        }
    }
}
