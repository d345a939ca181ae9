import Foundation
import GenGateCore
import NIOHTTP1

/// Alibaba Cloud DashScope (Model Studio) asynchronous image synthesis, as the official Python
/// SDK (`dashscope`, `ImageSynthesis`) speaks it.
///
/// Covered: submit (`POST /services/aigc/text2image/image-synthesis` with `X-DashScope-Async:
/// enable`; prompt, `n` up to 4 a call, `size` as `W*H`, seed; `params.negative_prompt` into
/// `input`, every other `params` field into `parameters`, e.g. `prompt_extend`, `watermark`,
/// `style`); status (`GET /tasks/{id}`); cancel (`POST /tasks/{id}/cancel`, which the service
/// accepts only while the task is `PENDING`); result URLs (they live 24 hours). A partial
/// success (fewer URLs than asked) delivers what it has; the engine asks again for the rest.
/// Image-to-video (the Wan `i2v` models): `POST /services/aigc/video-generation/video-synthesis`,
/// the first frame as `input.img_url` (a URL DashScope fetches), `params` into `parameters`
/// (`resolution`, `duration`, `prompt_extend`); the result is `output.video_url`.
/// Not covered: the synchronous multimodal endpoint of the newest models, reference images of
/// image models (`ref_img`), the workspace header, finding a task by our reference (none).
///
/// Mapping: `PENDING` → queued, `RUNNING`/`SUSPENDED` → running, `SUCCEEDED` → outputs (none is
/// a retryable provider error), `FAILED` → content policy for `DataInspectionFailed`, else a
/// retryable provider error, `CANCELED` → cancelled, `UNKNOWN` (unknown or expired) → a
/// retryable provider error. Error codes: `InvalidApiKey`/`AccessDenied` authentication,
/// `Arrearage` and "Free allocated quota exceeded" quota, `DataInspectionFailed` content policy,
/// `Throttling*` rate limited (no Retry-After is sent: the engine backs off), `InvalidParameter`,
/// `ModelNotFound` and other 4xx invalid request, 5xx unavailable.
public struct DashScopeAdapter: HTTPProviderAdapter {
    public let name = "dashscope"
    public let http: ProviderHTTP
    let key: String
    public let models: [ModelInfo]

    public var capabilities: ProviderCapabilities {
        ProviderCapabilities(
            asynchronous: true, streaming: false, cancel: true, maxOutputsPerCall: 4,
            findsSubmissionByReference: false)
    }

    public static let defaultModels: [ModelInfo] =
        [
            "wanx2.1-t2i-turbo", "wanx2.1-t2i-plus", "wan2.2-t2i-flash", "wan2.2-t2i-plus", "wanx-v1",
        ].map { ModelInfo(id: "dashscope/\($0)", provider: "dashscope", kind: .image, maxOutputs: 4) }
        + ["wanx2.1-i2v-turbo", "wanx2.1-i2v-plus", "wan2.2-i2v-plus"].map {
            ModelInfo(id: "dashscope/\($0)", provider: "dashscope", kind: .video, maxOutputs: 1, images: firstFrame)
        }

    /// Wan image-to-video: one image, the first frame (`input.img_url`), as a URL DashScope
    /// fetches; its documented limits: 10 MB, sides from 360 to 2000 px, JPEG, PNG, BMP or WebP.
    public static let firstFrame = ImageIntake(
        maxImages: 1, limits: ImageLimits(maxBytes: 10 << 20, minSide: 360, maxSide: 2_000), delivery: [.url],
        pipeline: ImagePipeline([.resize(.fit, width: 2_000, height: 2_000), .quality(90), .format(.jpeg)]),
        purpose: "image-to-video: the first frame", formats: [.jpeg, .png, .webp], minImages: 1)

    /// Whether a model makes video (`video-synthesis`), not images.
    static func isVideo(_ model: String) -> Bool { model.contains("i2v") }

    /// As the SDK takes it (`DASHSCOPE_HTTP_BASE_URL`); Singapore is
    /// `https://dashscope-intl.aliyuncs.com/api/v1`.
    public static let defaultBaseURL = "https://dashscope.aliyuncs.com/api/v1"

    public init(key: String, endpoint: ProviderEndpoint, models: [ModelInfo] = Self.defaultModels) {
        self.key = key
        http = ProviderHTTP(provider: "dashscope", endpoint: endpoint)
        self.models = models
    }

    var authorization: [(String, String)] { [("Authorization", "Bearer \(key)")] }

    public func submit(_ request: ProviderRequest) async throws -> String {
        let model = request.model.hasPrefix("dashscope/") ? String(request.model.dropFirst(10)) : request.model
        var input: [String: JSONValue] = ["prompt": .string(request.prompt)]
        var parameters = request.params
        if let negative = parameters.removeValue(forKey: "negative_prompt") { input["negative_prompt"] = negative }
        let video = Self.isVideo(model)
        if !video { parameters["n"] = .number(Double(request.outputIndexes.count)) }
        if let seed = request.callSeed { parameters["seed"] = .number(Double(seed)) }
        if !video, let width = request.width, let height = request.height {
            parameters["size"] = .string("\(width)*\(height)")
        }
        if let image = request.images.first { input["img_url"] = .string(image.text) }
        let answer = try await http.send(
            .POST,
            video ? "/services/aigc/video-generation/video-synthesis" : "/services/aigc/text2image/image-synthesis",
            headers: authorization + [
                ("X-DashScope-Async", "enable"), ("X-GenGate-Reference", request.clientReference),
            ],
            json: .object(["model": .string(model), "input": .object(input), "parameters": .object(parameters)]))
        guard answer.status == .ok else { throw error(answer) }
        guard let id = answer.json?["output"]?["task_id"]?.stringValue, !id.isEmpty else {
            throw GenGateError(.providerError, "dashscope: the submission's answer has no task id")
        }
        return id
    }

    public func status(taskID: String, request: ProviderRequest) async throws -> ProviderTaskState {
        let answer = try await http.send(.GET, "/tasks/\(ProviderHTTP.segment(taskID))", headers: authorization)
        guard answer.status == .ok else { throw error(answer) }
        guard let output = answer.json?["output"] else {
            throw GenGateError(.providerError, "dashscope: the task answer has no output")
        }
        return Self.state(of: output, request: request)
    }

    /// The state of a task's `output` object.
    public static func state(of output: JSONValue, request: ProviderRequest) -> ProviderTaskState {
        let status = output["task_status"]?.stringValue ?? ""
        switch status {
        case "PENDING":
            return .queued
        case "RUNNING", "SUSPENDED":
            return .running(progress: nil)
        case "SUCCEEDED":
            var urls: [String] = []
            if case .array(let results)? = output["results"] {
                urls = results.compactMap { $0["url"]?.stringValue }
            } else if let video = output["video_url"]?.stringValue {
                urls = [video]
            }
            urls = urls.filter { $0.hasPrefix("https://") || $0.hasPrefix("http://") }
            guard !urls.isEmpty else {
                return .failed(
                    GenGateError(.providerError, "dashscope: the task succeeded without outputs", retryable: true))
            }
            return .succeeded(
                outputs: zip(request.outputIndexes, urls).map { index, url in
                    Output(index: index, source: url, contentType: ProviderHTTP.contentType(ofURL: url))
                })
        case "FAILED":
            let code = output["code"]?.stringValue ?? ""
            let message = output["message"]?.stringValue ?? "the task failed"
            if code == "DataInspectionFailed" {
                return .failed(GenGateError(.contentPolicy, "dashscope: \(message) (\(code))"))
            }
            return .failed(GenGateError(.providerError, "dashscope: \(message) (\(code))", retryable: true))
        case "CANCELED":
            return .cancelled
        default:
            // UNKNOWN: the task does not exist or expired; anything else is not DashScope's.
            return .failed(
                GenGateError(
                    .providerError, "dashscope: task status \(status.isEmpty ? "(none)" : status)", retryable: true))
        }
    }

    public func cancel(taskID: String) async throws {
        let answer = try await http.send(.POST, "/tasks/\(ProviderHTTP.segment(taskID))/cancel", headers: authorization)
        // Only a PENDING task can be cancelled: one already running goes on, and is paid.
        if answer.json?["code"]?.stringValue == "UnsupportedOperation" { throw TaskAlreadyEnded(status: "not pending") }
        guard answer.status == .ok else { throw error(answer) }
    }

    /// An error answer: DashScope's `code` first, then the HTTP status.
    func error(_ answer: ProviderHTTP.Answer) -> GenGateError {
        classify(answer).withProviderCode(ProviderErrors.code(answer.json))
    }

    func classify(_ answer: ProviderHTTP.Answer) -> GenGateError {
        let code = answer.json?["code"]?.stringValue ?? ""
        let message = answer.json?["message"]?.stringValue ?? ""
        let text =
            "dashscope: \(message.isEmpty ? "HTTP \(answer.status.code)" : message) (\(code), HTTP \(answer.status.code))"
        switch code {
        case "InvalidApiKey", "AccessDenied":
            return GenGateError(.authenticationFailed, text)
        case "Arrearage":
            return GenGateError(.quotaExceeded, text)
        case "DataInspectionFailed":
            return GenGateError(.contentPolicy, text)
        case _ where code.hasPrefix("Throttling"):
            if message.contains("Free allocated quota exceeded") { return GenGateError(.quotaExceeded, text) }
            return GenGateError(.rateLimited, text, retryAfter: ProviderErrors.retryAfter(answer.headers))
        default:
            return ProviderErrors.fromStatus(
                answer.status, provider: name, message: "\(message) (\(code))", headers: answer.headers)
        }
    }
}
