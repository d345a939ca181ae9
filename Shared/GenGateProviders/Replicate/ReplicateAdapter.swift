import Foundation
import GenGateCore
import NIOHTTP1
import Synchronization

/// Replicate's predictions API (https://replicate.com/docs/reference/http), as its official
/// Python client (`replicate` on PyPI) speaks it.
///
/// Covered: submit to an official model (`POST /models/{owner}/{name}/predictions`) or to a
/// version (`owner/name:<version>` → `POST /predictions` with `version`), always asynchronous
/// (no `Prefer: wait`); status (`GET /predictions/{id}`); cancel (`POST
/// /predictions/{id}/cancel`); outputs as a URL or a list of URLs, downloaded with the token
/// (the reference says `replicate.delivery` files may require it). Each call makes one output:
/// `num_outputs` is not a field every model takes, so n outputs are n predictions.
/// Callbacks: with GenGate's public URL configured, each prediction asks for a `webhook` with
/// `webhook_events_filter: ["completed"]`; a delivery must carry Replicate's Standard Webhooks
/// signature, checked with the account's signing secret (`GET /v1/webhooks/default/secret`,
/// fetched once and kept), within five minutes of its timestamp.
/// Each prediction carries `Cancel-After` set to the job's deadline.
/// Input images go in the model's own field (`input_image` for Kontext, `first_frame_image` for
/// video-01, else `image`): a data URL up to 256 KB, as Replicate advises, a URL beyond.
/// Not covered: deployments, streaming output (`urls.stream`), training, finding a prediction by
/// our reference (the API keeps none; recovery counts a possible double charge instead).
///
/// Mapping (status → GenGate): `starting` → queued, `processing` → running, `succeeded` →
/// outputs (none, or `data_removed`, is a retryable provider error), `failed` → content policy
/// when the text says NSFW/sensitive/safety, else a retryable provider error, `canceled` and
/// `aborted` → cancelled. HTTP: 401 authentication, 402 quota ("Billing required"), 422 and 404
/// invalid request, 429 rate limited with Retry-After, 5xx unavailable.
public struct ReplicateAdapter: HTTPProviderAdapter {
    public let name = "replicate"
    public let http: ProviderHTTP
    let token: String
    public let models: [ModelInfo]
    /// The webhook signing key, once fetched.
    let signingKey = SigningKeyCache()

    final class SigningKeyCache: Sendable {
        let key = Mutex<(key: [UInt8], fetched: Date)?>(nil)
    }

    public var capabilities: ProviderCapabilities {
        ProviderCapabilities(
            asynchronous: true, streaming: false, cancel: true, maxOutputsPerCall: 1,
            findsSubmissionByReference: false, callbacks: true,
            // Creating predictions: 600 requests a minute.
            limits: ProviderLimits(maxRequestsPerSecond: 10),
            // A prediction is billed for the time it ran, also when it fails.
            chargesOnAcceptance: true)
    }

    /// The models offered.
    public static let defaultModels: [ModelInfo] = [
        ModelInfo(id: "replicate/black-forest-labs/flux-schnell", provider: "replicate", kind: .image, maxOutputs: 4),
        ModelInfo(id: "replicate/black-forest-labs/flux-dev", provider: "replicate", kind: .image, maxOutputs: 4),
        ModelInfo(id: "replicate/black-forest-labs/flux-1.1-pro", provider: "replicate", kind: .image, maxOutputs: 4),
        ModelInfo(
            id: "replicate/black-forest-labs/flux-kontext-pro", provider: "replicate", kind: .image, maxOutputs: 4,
            images: image("the image to edit")),
        ModelInfo(
            id: "replicate/minimax/video-01", provider: "replicate", kind: .video, maxOutputs: 1,
            images: image("image-to-video: the first frame")),
    ]

    /// The input field of each model that takes an image (Replicate's models name their own).
    static let imageFields = [
        "black-forest-labs/flux-kontext-pro": "input_image", "black-forest-labs/flux-dev": "image",
        "minimax/video-01": "first_frame_image",
    ]

    /// One image, as Replicate takes files: a data URL while small (Replicate advises them only up
    /// to 256 KB), a URL it fetches beyond that.
    static func image(_ purpose: String) -> ImageIntake {
        ImageIntake(
            maxImages: 1, limits: ImageLimits(maxBytes: 20 << 20), delivery: [.dataURL, .url],
            inlineLimitBytes: 256 * 1_024,
            pipeline: ImagePipeline([.resize(.fit, width: 1440, height: 1440), .quality(90), .format(.jpeg)]),
            purpose: purpose)
    }

    /// As Replicate's Python client takes it (`REPLICATE_BASE_URL`): the paths start with `/v1`.
    public static let defaultBaseURL = "https://api.replicate.com"

    public init(token: String, endpoint: ProviderEndpoint, models: [ModelInfo] = Self.defaultModels) {
        self.token = token
        http = ProviderHTTP(provider: "replicate", endpoint: endpoint.droppingVersionPath())
        self.models = models
    }

    var authorization: [(String, String)] { [("Authorization", "Bearer \(token)")] }

    public func submit(_ request: ProviderRequest) async throws -> String {
        let target = try Self.target(of: request.model)
        var input = request.params
        input["prompt"] = .string(request.prompt)
        // One output a prediction: a `num_outputs` would be paid for in full and mostly dropped.
        input.removeValue(forKey: "num_outputs")
        if let seed = request.callSeed { input["seed"] = .number(Double(seed)) }
        if let width = request.width { input["width"] = .number(Double(width)) }
        if let height = request.height { input["height"] = .number(Double(height)) }
        if let image = request.images.first {
            let name = String(request.model.dropFirst("replicate/".count))
            input[Self.imageFields[name] ?? "image"] = .string(image.text)
        }
        var body: [String: JSONValue] = ["input": .object(input)]
        if let callback = request.callback {
            body["webhook"] = .string(callback.url)
            body["webhook_events_filter"] = .array([.string("completed")])
        }
        let path: String
        switch target {
        case .model(let owner, let model):
            path = "/v1/models/\(owner)/\(model)/predictions"
        case .version(let version):
            path = "/v1/predictions"
            body["version"] = .string(version)
        }
        // Our reference rides in a header the API ignores, so a simulator (or a log) can tell a
        // second submission of the same attempt from a new one.
        var headers = authorization + [("X-GenGate-Reference", request.clientReference)]
        if let after = Self.cancelAfter(request.deadline) { headers.append(("Cancel-After", after)) }
        let answer = try await http.send(.POST, path, headers: headers, json: .object(body))
        guard answer.status == .created || answer.status == .accepted || answer.status == .ok else {
            throw statusError(answer)
        }
        guard let id = answer.json?["id"]?.stringValue, !id.isEmpty else {
            throw GenGateError(.providerError, "replicate: the submission's answer has no prediction id")
        }
        return id
    }

    public func status(taskID: String, request: ProviderRequest) async throws -> ProviderTaskState {
        let answer = try await http.send(
            .GET, "/v1/predictions/\(ProviderHTTP.segment(taskID))", headers: authorization)
        guard answer.status == .ok else { throw statusError(answer) }
        guard let prediction = answer.json else {
            throw GenGateError(.providerError, "replicate: the prediction is not JSON")
        }
        return try Self.state(of: prediction, request: request)
    }

    /// The state of a prediction object (also the body of Replicate's webhooks).
    public static func state(of prediction: JSONValue, request: ProviderRequest) throws -> ProviderTaskState {
        switch prediction["status"]?.stringValue {
        case "starting":
            return .queued
        case "processing":
            return .running(progress: nil)
        case "succeeded":
            let urls = outputURLs(prediction["output"])
            guard !urls.isEmpty else {
                let removed = prediction["data_removed"] == .bool(true)
                return .failed(
                    GenGateError(
                        .providerError,
                        removed
                            ? "replicate: the prediction's outputs were already removed"
                            : "replicate: the prediction succeeded without outputs", retryable: true))
            }
            return .succeeded(
                outputs: zip(request.outputIndexes, urls).map { index, url in
                    Output(index: index, source: url, contentType: ProviderHTTP.contentType(ofURL: url))
                })
        case "failed":
            let text = prediction["error"]?.stringValue ?? "the prediction failed"
            return .failed(classifyFailure(text))
        case "canceled", "aborted":
            return .cancelled
        case let other:
            throw GenGateError(
                .providerError, "replicate: unknown prediction status \(other ?? "(none)")", retryable: true)
        }
    }

    /// A failed prediction's text: content policy where it says so (Replicate has no code for
    /// it), otherwise a provider failure worth another attempt.
    static func classifyFailure(_ text: String) -> GenGateError {
        let lowered = text.lowercased()
        let policy = ["nsfw", "sensitive", "safety", "e005", "content policy", "inappropriate"]
        if policy.contains(where: lowered.contains) {
            return GenGateError(.contentPolicy, "replicate: \(text)")
        }
        return GenGateError(.providerError, "replicate: \(text)", retryable: true)
    }

    public func cancel(taskID: String) async throws {
        let answer = try await http.send(
            .POST, "/v1/predictions/\(ProviderHTTP.segment(taskID))/cancel", headers: authorization)
        guard answer.status == .ok else { throw statusError(answer) }
        // The answer is the prediction: one that had already ended was not stopped, and was paid.
        let status = answer.json?["status"]?.stringValue ?? "canceled"
        if ["succeeded", "failed"].contains(status) { throw TaskAlreadyEnded(status: status) }
    }

    public func fetch(_ output: Output) async throws -> (data: Data, contentType: String) {
        try await http.fetch(output, headers: credentials(for: output.source))
    }

    public func download(_ output: Output, to file: URL) async throws -> String? {
        try await http.download(output.source, headers: credentials(for: output.source), to: file)
    }

    /// The token, for an output URL on Replicate's own delivery hosts or its API host over
    /// HTTPS (plain HTTP only on this machine, for the simulator); nothing for any other URL a
    /// model may return.
    /// `Cancel-After` for a job's deadline: Replicate stops the prediction by itself then (and
    /// charges nothing for one that never started), so a prediction GenGate lost track of is
    /// not paid for past the time the job gave up. Whole seconds, at least Replicate's 5 s.
    static func cancelAfter(_ deadline: Date?, now: Date = Date()) -> String? {
        guard let deadline else { return nil }
        return "\(max(5, Int(deadline.timeIntervalSince(now).rounded(.up))))s"
    }

    public func verifyCallback(headers: [String: String], body: Data, secret: String, now: Date) async throws {
        var key = try await webhookKey(fresherThan: nil)
        do {
            try StandardWebhooks.verify(key: key, headers: headers, body: body, now: now)
        } catch StandardWebhooks.Failure.mismatch {
            // The account's secret may have been rotated: fetch it again (at most once a minute).
            key = try await webhookKey(fresherThan: Date().addingTimeInterval(-60))
            do {
                try StandardWebhooks.verify(key: key, headers: headers, body: body, now: now)
            } catch {
                throw GenGateError(.authenticationFailed, "replicate: the webhook's signature does not verify")
            }
        } catch {
            throw GenGateError(.authenticationFailed, "replicate: the webhook's signature does not verify (\(error))")
        }
    }

    /// The account's webhook signing key (`GET /v1/webhooks/default/secret`), fetched once and
    /// again when the one kept was fetched before `fresherThan`.
    func webhookKey(fresherThan: Date?) async throws -> [UInt8] {
        // Stamped before the fetch: a burst of mismatches (forged, or during an outage) makes one
        // fetch a minute, not one each.
        let kept = signingKey.key.withLock { cache -> [UInt8]? in
            guard let (key, fetched) = cache else { return nil }
            if let fresherThan, fetched < fresherThan {
                cache = (key, Date())
                return nil
            }
            return key
        }
        if let kept { return kept }
        let answer = try await http.send(.GET, "/v1/webhooks/default/secret", headers: authorization)
        guard answer.status == .ok else { throw statusError(answer) }
        guard let secret = answer.json?["key"]?.stringValue, let key = StandardWebhooks.key(secret: secret) else {
            throw GenGateError(.providerError, "replicate: the webhook secret answer has no key")
        }
        signingKey.key.withLock { $0 = (key, Date()) }
        return key
    }

    func credentials(for url: String) -> [(String, String)] {
        guard let parsed = URL(string: url), let host = parsed.host?.lowercased() else { return [] }
        let api = URL(string: http.endpoint.baseURL)?.host?.lowercased()
        let trusted = host == "replicate.delivery" || host.hasSuffix(".replicate.delivery") || host == api
        let secure =
            parsed.scheme == "https" || (parsed.scheme == "http" && ["127.0.0.1", "localhost", "::1"].contains(host))
        return trusted && secure ? authorization : []
    }

    enum Target: Equatable {
        case model(owner: String, name: String)
        case version(String)
    }

    /// `replicate/<owner>/<name>` or `replicate/<owner>/<name>:<version>`.
    static func target(of model: String) throws -> Target {
        let rest = model.hasPrefix("replicate/") ? String(model.dropFirst("replicate/".count)) : model
        let (path, version) =
            rest.split(separator: ":", maxSplits: 1).count == 2
            ? (String(rest.split(separator: ":")[0]), String(rest.split(separator: ":", maxSplits: 1)[1]))
            : (rest, "")
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_."))
        guard parts.count == 2,
            parts.allSatisfy({ !$0.isEmpty && !$0.hasPrefix(".") && $0.unicodeScalars.allSatisfy(allowed.contains) })
        else {
            throw GenGateError(.invalidRequest, "replicate: model must be replicate/<owner>/<name>, got \(model)")
        }
        if !version.isEmpty {
            guard version.count == 64, version.allSatisfy(\.isHexDigit) else {
                throw GenGateError(.invalidRequest, "replicate: a version is 64 hex digits, got \(version)")
            }
            return .version("\(path):\(version)")
        }
        return .model(owner: String(parts[0]), name: String(parts[1]))
    }

    static func outputURLs(_ output: JSONValue?) -> [String] {
        switch output {
        case .string(let url)?: return isURL(url) ? [url] : []
        case .array(let items)?: return items.compactMap { $0.stringValue }.filter(isURL)
        default: return []
        }
    }

    static func isURL(_ text: String) -> Bool { text.hasPrefix("https://") || text.hasPrefix("http://") }

}
