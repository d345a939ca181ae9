import Foundation
import GenGateCore
import NIOCore
import NIOHTTP1

/// Tencent Cloud's Hunyuan image jobs (API 3.0, version 2023-09-01), as Tencent's own SDK
/// speaks it: every call a `POST /` of JSON to `hunyuan.tencentcloudapi.com`, the action in
/// `X-TC-Action`, signed with TC3-HMAC-SHA256 over `content-type;host` (see `TC3Signature`),
/// region `ap-guangzhou`.
///
/// Covered: `SubmitHunyuanImageJob` (`Prompt`; `NegativePrompt` from `params.negative_prompt`;
/// `Resolution` as `W:H` from width and height; `Num` up to 4; `Seed` when positive; any other
/// `params` field in Tencent's own spelling, e.g. `Style`, `Clarity`, `Revise`, `LogoAdd`, sent
/// as it is) and `QueryHunyuanImageJob` (`JobStatusCode` "1" queued, "2" running, "4" failed,
/// "5" done with `ResultImage` URLs, kept an hour, fetched as soon as the job ends).
/// Not covered: cancel and callbacks (the API has neither), finding a job by our reference (it
/// takes none, so recovery counts a possible double charge), reference images, temporary
/// credentials (`X-TC-Token`), other regions. Tencent runs one job per account at a time by
/// default; later ones wait queued on its side.
///
/// Mapping: errors are `Response.Error.Code`, whatever the HTTP status (Tencent answers 200):
/// `AuthFailure.*` authentication; `RequestLimitExceeded*` and
/// `FailedOperation.EngineServerLimitExceeded` rate limited; `OperationDenied.*IllegalDetected`
/// and `FailedOperation.GenerateImageFailed` content policy; `ResourceInsufficient.*`,
/// `ResourceUnavailable.*`, `LimitExceeded`, the resource-pack and service-state
/// `FailedOperation`s quota; `FailedOperation.EngineRequestTimeout` timeout;
/// `FailedOperation.EngineServerError` and `InternalError*` unavailable; `InvalidParameter*`,
/// `MissingParameter`, `InvalidAction`, `UnsupportedOperation*` and image-input failures invalid
/// request; any other code a retryable provider error. A failed job's `JobErrorCode` goes
/// through the same table.
public struct HunyuanAdapter: HTTPProviderAdapter {
    public let name = "hunyuan"
    public let http: ProviderHTTP
    let signer: TC3Signature
    public let models: [ModelInfo]
    /// The `Host` signed and sent: the base URL's host, with its port when it names one.
    let host: String

    public static let version = "2023-09-01"
    public static let region = "ap-guangzhou"
    public static let defaultBaseURL = "https://hunyuan.tencentcloudapi.com"
    public static let defaultModels = [
        ModelInfo(id: "hunyuan/hunyuan-image", provider: "hunyuan", kind: .image, maxOutputs: 4)
    ]

    public var capabilities: ProviderCapabilities {
        ProviderCapabilities(
            asynchronous: true, streaming: false, cancel: false, maxOutputsPerCall: 4,
            findsSubmissionByReference: false,
            // One job at a time an account, unless Tencent raised it: another waits at Tencent.
            limits: ProviderLimits(maxConcurrency: 1))
    }

    public init(
        secretID: String, secretKey: String, endpoint: ProviderEndpoint, models: [ModelInfo] = Self.defaultModels
    ) {
        signer = TC3Signature(secretID: secretID, secretKey: secretKey, service: "hunyuan")
        http = ProviderHTTP(provider: "hunyuan", endpoint: endpoint)
        self.models = models
        let url = URL(string: endpoint.baseURL)
        host = (url?.host ?? "") + (url?.port.map { ":\($0)" } ?? "")
    }

    /// Calls `action` with `body` and returns its `Response`, or throws its error.
    func call(_ action: String, _ body: JSONValue, now: Date = Date()) async throws -> JSONValue {
        let payload = try JSONCoding.encode(body)
        let contentType = "application/json"
        let timestamp = Int(now.timeIntervalSince1970)
        let signed = TC3Signature.Request(
            method: "POST", headers: ["content-type": contentType, "host": host], payload: Array(payload),
            timestamp: timestamp)
        let answer = try await http.send(
            .POST, "/",
            headers: [
                ("Authorization", signer.authorization(signed)), ("Content-Type", contentType), ("Host", host),
                ("X-TC-Action", action), ("X-TC-Version", Self.version), ("X-TC-Timestamp", String(timestamp)),
                ("X-TC-Region", Self.region),
            ], body: ByteBuffer(bytes: payload), describedAs: action)
        guard let response = answer.json?["Response"], case .object = response else {
            if answer.status != .ok { throw statusError(answer) }
            throw GenGateError(.providerError, "hunyuan: the answer to \(action) has no Response")
        }
        if let error = response["Error"] {
            throw Self.error(
                code: error["Code"]?.stringValue ?? "", message: error["Message"]?.stringValue ?? "")
        }
        guard answer.status == .ok else { throw statusError(answer) }
        return response
    }

    public func submit(_ request: ProviderRequest) async throws -> String {
        guard request.model == "hunyuan/hunyuan-image" || models.contains(where: { $0.id == request.model }) else {
            throw GenGateError(.invalidRequest, "hunyuan: not a Hunyuan image model: \(request.model)")
        }
        var body = request.params
        if let negative = body.removeValue(forKey: "negative_prompt") { body["NegativePrompt"] = negative }
        body["Prompt"] = .string(request.prompt)
        body["Num"] = .number(Double(request.outputIndexes.count))
        if let width = request.width, let height = request.height { body["Resolution"] = .string("\(width):\(height)") }
        if let seed = request.callSeed, seed > 0 { body["Seed"] = .number(Double(seed)) }
        let response = try await call("SubmitHunyuanImageJob", .object(body))
        guard let id = response["JobId"]?.stringValue, !id.isEmpty else {
            throw GenGateError(.providerError, "hunyuan: the submission's answer has no JobId")
        }
        return id
    }

    public func status(taskID: String, request: ProviderRequest) async throws -> ProviderTaskState {
        try Self.state(
            of: try await call("QueryHunyuanImageJob", .object(["JobId": .string(taskID)])), request: request)
    }

    /// The state of a `QueryHunyuanImageJob` answer's `Response`.
    public static func state(of job: JSONValue, request: ProviderRequest) throws -> ProviderTaskState {
        switch job["JobStatusCode"]?.stringValue ?? "" {
        case "1":
            return .queued
        case "2":
            return .running(progress: nil)
        case "5":
            guard case .array(let images)? = job["ResultImage"] else {
                return .failed(GenGateError(.providerError, "hunyuan: the job ended without images", retryable: true))
            }
            let urls = images.compactMap(\.stringValue).filter { $0.hasPrefix("https://") || $0.hasPrefix("http://") }
            guard !urls.isEmpty else {
                return .failed(GenGateError(.providerError, "hunyuan: the job ended without images", retryable: true))
            }
            return .succeeded(
                outputs: zip(request.outputIndexes, urls).map {
                    Output(index: $0, source: $1, contentType: ProviderHTTP.contentType(ofURL: $1))
                })
        case "4":
            let code = job["JobErrorCode"]?.stringValue ?? ""
            let message = job["JobErrorMsg"]?.stringValue ?? "the job failed"
            var error = Self.error(code: code, message: message)
            if code.isEmpty { error = GenGateError(.providerError, "hunyuan: \(message)", retryable: true) }
            return .failed(error)
        case let other:
            // Not a state we know: a failed check (the job may still run), not a failed attempt.
            throw GenGateError(.providerError, "hunyuan: unknown JobStatusCode \(other)")
        }
    }

    /// Tencent's error codes as GenGate's classes.
    public static func error(code: String, message: String) -> GenGateError {
        classify(code: code, message: message).withProviderCode(code)
    }

    static func classify(code: String, message: String) -> GenGateError {
        let text = "hunyuan: \(message.isEmpty ? code : message) (\(code))"
        func starts(_ prefixes: String...) -> Bool { prefixes.contains { code.hasPrefix($0) } }
        if starts("AuthFailure") { return GenGateError(.authenticationFailed, text) }
        if starts("RequestLimitExceeded", "FailedOperation.EngineServerLimitExceeded") {
            return GenGateError(.rateLimited, text)
        }
        if starts("OperationDenied.TextIllegalDetected", "OperationDenied.ImageIllegalDetected")
            || code == "FailedOperation.GenerateImageFailed"
        {
            return GenGateError(.contentPolicy, text)
        }
        if starts("ResourceInsufficient", "ResourceUnavailable", "LimitExceeded")
            || [
                "FailedOperation.ResourcePackExhausted", "FailedOperation.FreeResourcePackExhausted",
                "FailedOperation.ServiceNotActivated", "FailedOperation.ServiceStop",
                "FailedOperation.ServiceStopArrears", "FailedOperation.UserUnAuthError",
            ].contains(code)
        {
            return GenGateError(.quotaExceeded, text)
        }
        if code == "FailedOperation.EngineRequestTimeout" { return GenGateError(.providerTimeout, text) }
        if starts("InternalError", "FailedOperation.EngineServerError") {
            return GenGateError(.providerUnavailable, text)
        }
        if starts("InvalidParameter", "MissingParameter", "InvalidAction", "UnsupportedOperation", "UnknownParameter")
            || ["FailedOperation.ImageDownloadError", "FailedOperation.ImageDecodeFailed"].contains(code)
        {
            return GenGateError(.invalidRequest, text)
        }
        return GenGateError(.providerError, text, retryable: true)
    }
}
