import Foundation
import GenGateCore
import JWTKit
import NIOHTTP1

/// Kling AI's classic API (https://klingai.com/document-api), which stays supported beside its
/// newer one: every call carries `Authorization: Bearer <JWT>`, an HS256 token (`typ: JWT`)
/// with `iss` = the access key, `nbf` = now − 60 s and `exp` = now + 30 min, signed with the
/// secret key; a fresh one per call (signing is microseconds, and no token outlives a call).
///
/// Covered: text-to-video (`POST /v1/videos/text2video`), image-to-video (`POST
/// /v1/videos/image2video`, chosen when `params.image` is set: an HTTPS URL or raw base64
/// without a `data:` prefix, as Kling takes it; `params.image_tail` for the last frame),
/// image generation (`POST /v1/images/generations`, up to 9 images a task); each task's status
/// at `GET <create path>/{task_id}`. `model_name` comes from the model (`kling/<model_name>` for
/// video, `kling/image/<model_name>` for images); prompt, seed-free bodies (Kling takes no
/// seed) and every other `params` field (`negative_prompt`, `mode`, `aspect_ratio`,
/// `cfg_scale`, `sound`, `camera_control`, …) are sent as they are, except `duration`, which
/// Kling wants as a string ("5") and is sent so when given as a number. Video submissions carry
/// our client reference as `external_task_id` (unique per account), and a crashed submission is
/// found again by that id (`GET <create path>/{external_task_id}`, then the account's task list,
/// `GET <create path>?pageNum=&pageSize=500`, up to three pages; "not there" only when the list
/// ended within them, otherwise recovery counts a possible double charge; and not before 90 s
/// after the submission, since a request that timed out may still be creating its task). Output URLs (`task_result.videos[].url`,
/// `task_result.images[].url`, kept 30 days) are fetched without the token. With GenGate's public
/// URL configured, each task asks for a `callback_url`.
/// Not covered: cancel (Kling documents none), finding an image task by reference (image
/// tasks take no `external_task_id`; recovery counts a possible double charge instead),
/// Kling's optional webhook signatures (the URL's token is the proof), the newer API 2.0 (model
/// in the path, one static key), lip sync, effects, virtual try-on, video extension.
///
/// Mapping: `submitted` → queued, `processing` → running, `succeed` → the outputs (none is a
/// retryable provider error), `failed` → content policy when `task_status_msg` says risk
/// control, sensitive content or policy, else a retryable provider error. Errors by Kling's
/// `code` first, since its HTTP statuses are shared among unlike errors (429 carries both
/// "slow down" and "out of balance"): 1000–1004 authentication; 1100–1102 (account exception,
/// arrears, resource pack used up) quota; 1103 authentication (no permission for the model);
/// 1200–1203 invalid request; 1300–1301 content policy; 1302 (too fast) and 1303 (more parallel
/// tasks than the resource pack allows) rate limited; 1304 (IP allow-list) authentication;
/// 5000–5002 unavailable; any other code by its HTTP status.
public struct KlingAdapter: HTTPProviderAdapter {
    public let name = "kling"
    public let http: ProviderHTTP
    let accessKey: String
    let secretKey: String
    public let models: [ModelInfo]

    public var capabilities: ProviderCapabilities {
        ProviderCapabilities(
            asynchronous: true, streaming: false, cancel: false, maxOutputsPerCall: 9,
            findsSubmissionByReference: true, callbacks: true,
            // A request that timed out may still be creating its task: a minute and a half.
            referenceSettleSeconds: 90)
    }

    public static let defaultModels: [ModelInfo] =
        ["kling-v1", "kling-v1-6", "kling-v2-master", "kling-v2-1", "kling-v2-1-master", "kling-v2-5-turbo"].map {
            ModelInfo(id: "kling/\($0)", provider: "kling", kind: .video, maxOutputs: 1, images: videoImages)
        }
        + ["kling-v1", "kling-v1-5", "kling-v2", "kling-v2-1"].map {
            ModelInfo(id: "kling/image/\($0)", provider: "kling", kind: .image, maxOutputs: 9, images: referenceImage)
        }

    /// Kling's documented limits on an input image (10 MB, sides of 300 px at least, an aspect
    /// ratio from 1:2.5 to 2.5:1), and how GenGate sends one: raw base64 (Kling takes no `data:`
    /// prefix), as a JPEG within 2048 px.
    static let imageLimits = ImageLimits(maxBytes: 10 << 20, minSide: 300, minAspect: 0.4, maxAspect: 2.5)
    static let imagePipeline = ImagePipeline([
        .resize(.fit, width: 2048, height: 2048), .quality(90), .format(.jpeg), .maxKilobytes(9_500),
    ])

    /// Video models: with an image, image-to-video (`image`, the first frame; a second image is
    /// `image_tail`, the last frame).
    public static let videoImages = ImageIntake(
        maxImages: 2, limits: imageLimits, delivery: [.base64, .url], pipeline: imagePipeline,
        purpose: "image-to-video: the first frame, then (optional) the last frame", formats: [.jpeg, .png])
    /// Image models: one reference image (`image`).
    public static let referenceImage = ImageIntake(
        maxImages: 1, limits: imageLimits, delivery: [.base64, .url], pipeline: imagePipeline,
        purpose: "a reference image", formats: [.jpeg, .png])

    public static let defaultBaseURL = "https://api-singapore.klingai.com"

    /// Pages of recent tasks searched for a crashed submission, and their size (Kling's largest).
    static let searchPages = 3
    static let pageSize = 500

    /// `credential`: the access key and the secret key.
    public init(
        accessKey: String, secretKey: String, endpoint: ProviderEndpoint, models: [ModelInfo] = Self.defaultModels
    ) {
        self.accessKey = accessKey
        self.secretKey = secretKey
        http = ProviderHTTP(provider: "kling", endpoint: endpoint.droppingVersionPath())
        self.models = models
    }

    /// What is wrong with a secret key, or nil. Kling's are 32 characters; HS256 wants a key at
    /// least as long as its hash (RFC 7518 §3.2), and JWTKit stops at a shorter one.
    public static func problem(secretKey: String) -> String? {
        secretKey.utf8.count < 32 ? "is shorter than a Kling secret key (32 characters)" : nil
    }

    /// What Kling reads from the token.
    struct Claims: JWTPayload {
        var iss: IssuerClaim
        var exp: ExpirationClaim
        var nbf: NotBeforeClaim

        func verify(using algorithm: some JWTAlgorithm) throws {
            try exp.verifyNotExpired()
            try nbf.verifyNotBefore()
        }
    }

    /// A token for one call.
    func authorization(now: Date = Date()) async throws -> [(String, String)] {
        let claims = Claims(
            iss: .init(value: accessKey), exp: .init(value: now.addingTimeInterval(1_800)),
            // Kling's example says now − 5 s; a minute forgives a host clock a little ahead.
            nbf: .init(value: now.addingTimeInterval(-60)))
        do {
            let keys = await JWTKeyCollection().add(hmac: HMACKey(from: secretKey), digestAlgorithm: .sha256)
            let token = try await keys.sign(claims, header: ["typ": "JWT"])
            return [("Authorization", "Bearer \(token)")]
        } catch {
            throw GenGateError(.authenticationFailed, "kling: the token could not be signed", retryable: false)
        }
    }

    /// What a model asks for: its `model_name`, and whether it makes images.
    static func model(_ id: String) throws -> (name: String, isImage: Bool) {
        var rest = id.hasPrefix("kling/") ? String(id.dropFirst("kling/".count)) : id
        let isImage = rest.hasPrefix("image/")
        if isImage { rest = String(rest.dropFirst("image/".count)) }
        guard !rest.isEmpty, rest.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
        else {
            throw GenGateError(.invalidRequest, "kling: model must be kling/<model> or kling/image/<model>, got \(id)")
        }
        return (rest, isImage)
    }

    /// Where a request's tasks are created (and, under it, read).
    static func collection(of request: ProviderRequest) throws -> String {
        if try model(request.model).isImage { return "/v1/images/generations" }
        let image = request.params["image"] != nil || request.inputImageCount > 0
        return image ? "/v1/videos/image2video" : "/v1/videos/text2video"
    }

    public func submit(_ request: ProviderRequest) async throws -> String {
        let (modelName, isImage) = try Self.model(request.model)
        var body = request.params
        body["model_name"] = .string(modelName)
        body["prompt"] = .string(request.prompt)
        if case .number(let seconds)? = body["duration"], let whole = Int(exactly: seconds) {
            body["duration"] = .string(String(whole))  // Kling refuses a number here
        }
        if let callback = request.callback { body["callback_url"] = .string(callback.url) }
        // Input images: raw base64 or a URL, as prepared.
        if let first = request.images.first { body["image"] = .string(first.text) }
        if !isImage, request.images.count > 1 { body["image_tail"] = .string(request.images[1].text) }
        if isImage {
            body["n"] = .number(Double(request.outputIndexes.count))
        } else {
            body["external_task_id"] = .string(request.clientReference)
        }
        let answer = try await http.send(
            .POST, try Self.collection(of: request), headers: try await authorization(), json: .object(body))
        guard answer.status == .ok, answer.json?["code"]?.intValue == 0 else { throw error(answer) }
        guard let id = answer.json?["data"]?["task_id"]?.stringValue, !id.isEmpty else {
            throw GenGateError(.providerError, "kling: the submission's answer has no task_id")
        }
        return id
    }

    public func status(taskID: String, request: ProviderRequest) async throws -> ProviderTaskState {
        let escaped = ProviderHTTP.segment(taskID)
        let answer = try await http.send(
            .GET, "\(try Self.collection(of: request))/\(escaped)", headers: try await authorization())
        guard answer.status == .ok, answer.json?["code"]?.intValue == 0 else { throw error(answer) }
        guard let task = answer.json?["data"], case .object = task else {
            throw GenGateError(.providerError, "kling: the status answer has no task")
        }
        return try Self.state(of: task, request: request)
    }

    /// The state of a task object (a status answer's `data`, or a callback's body).
    public static func state(of task: JSONValue, request: ProviderRequest) throws -> ProviderTaskState {
        switch task["task_status"]?.stringValue ?? "" {
        case "submitted":
            return .queued
        case "processing":
            return .running(progress: nil)
        case "succeed", "succeeded":
            let result = task["task_result"]
            var items: [JSONValue] = []
            var isVideo = false
            if case .array(let videos)? = result?["videos"], !videos.isEmpty {
                (items, isVideo) = (videos, true)
            } else if case .array(let images)? = result?["images"] {
                items = images
            }
            let urls = items.compactMap { $0["url"]?.stringValue }.filter {
                $0.hasPrefix("https://") || $0.hasPrefix("http://")
            }
            guard !urls.isEmpty else {
                return .failed(
                    GenGateError(.providerError, "kling: the task succeeded without outputs", retryable: true))
            }
            let outputs = zip(request.outputIndexes, urls).map { index, url in
                Output(
                    index: index, source: url, contentType: isVideo ? "video/mp4" : ProviderHTTP.contentType(ofURL: url)
                )
            }
            return .succeeded(outputs: outputs)
        case "failed":
            let message = task["task_status_msg"]?.stringValue ?? "the task failed"
            let lowered = message.lowercased()
            if ["risk", "sensitive", "policy", "violat", "inappropriate"].contains(where: lowered.contains) {
                return .failed(GenGateError(.contentPolicy, "kling: \(message)"))
            }
            return .failed(GenGateError(.providerError, "kling: \(message)", retryable: true))
        case let other:
            // Not a state we know: a failed check (the task may still run), not a failed attempt.
            throw GenGateError(.providerError, "kling: unknown task status \(other)")
        }
    }

    public func findSubmission(clientReference: String, request: ProviderRequest) async throws -> String? {
        let collection = try Self.collection(of: request)
        guard collection != "/v1/images/generations" else {
            throw GenGateError(
                .invalidRequest, "kling: image tasks carry no external_task_id to be found by", retryable: false)
        }
        // The task by its external_task_id, where Kling reads the id in place of the task's.
        let escaped = ProviderHTTP.segment(clientReference)
        let direct = try await http.send(.GET, "\(collection)/\(escaped)", headers: try await authorization())
        if direct.status == .ok, direct.json?["code"]?.intValue == 0,
            direct.json?["data"]?["task_info"]?["external_task_id"]?.stringValue == clientReference,
            let id = direct.json?["data"]?["task_id"]?.stringValue
        {
            return id
        }
        let missing = direct.status == .notFound || direct.json?["code"]?.intValue == 1203
        guard direct.status == .ok || missing else { throw error(direct) }
        // Then the account's task list, page by page: "not there" only once the list has ended.
        for page in 1...Self.searchPages {
            let answer = try await http.send(
                .GET, "\(collection)?pageNum=\(page)&pageSize=\(Self.pageSize)", headers: try await authorization())
            guard answer.status == .ok, answer.json?["code"]?.intValue == 0 else { throw error(answer) }
            guard case .array(let tasks)? = answer.json?["data"] else {
                throw GenGateError(.providerError, "kling: the task list is not a list")
            }
            if let found = tasks.first(where: { $0["task_info"]?["external_task_id"]?.stringValue == clientReference }),
                let id = found["task_id"]?.stringValue
            {
                return id
            }
            if tasks.count < Self.pageSize { return nil }  // the whole list was read
        }
        // More tasks than were searched: Kling cannot say for sure, so the resubmission that
        // follows is counted as a possible double charge.
        throw GenGateError(
            .providerError,
            "kling: \(clientReference) is not among the \(Self.searchPages * Self.pageSize) tasks searched",
            retryable: false)
    }

    /// An error answer, by Kling's `code` first.
    func error(_ answer: ProviderHTTP.Answer) -> GenGateError {
        classify(answer).withProviderCode(ProviderErrors.code(answer.json))
    }

    func classify(_ answer: ProviderHTTP.Answer) -> GenGateError {
        let message = ProviderErrors.message(answer.json)
        guard let code = answer.json?["code"]?.intValue, code != 0 else {
            if answer.status == .ok {
                return GenGateError(.providerError, "kling: an answer that is neither success nor error")
            }
            return statusError(answer)
        }
        let text = "kling: \(message.isEmpty ? "error" : message) (code \(code), HTTP \(answer.status.code))"
        switch code {
        case 1000...1004, 1103, 1304:  // 1304: the IP allow-list refuses us
            return GenGateError(.authenticationFailed, text)
        case 1100...1102:
            return GenGateError(.quotaExceeded, text)
        case 1200...1299:
            return GenGateError(.invalidRequest, text)
        case 1300, 1301:
            return GenGateError(.contentPolicy, text)
        case 1302, 1303:
            // No Retry-After from Kling: the engine's rate-limit back-off applies.
            return GenGateError(.rateLimited, text, retryAfter: ProviderErrors.retryAfter(answer.headers))
        case 5000...5999:
            return GenGateError(.providerUnavailable, text)
        default:
            return statusError(answer)
        }
    }
}
