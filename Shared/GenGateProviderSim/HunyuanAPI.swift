import Foundation
import GenGateCore
import GenGateProviders
import HTTPTypes
import Hummingbird
import NIOCore

/// Tencent Cloud's Hunyuan image jobs at the real path: `POST /` with the action in
/// `X-TC-Action` (`SubmitHunyuanImageJob`, `QueryHunyuanImageJob`), every answer HTTP 200 with
/// `{"Response": {…, "RequestId"}}` and errors as `Response.Error {Code, Message}`. Each call's
/// TC3-HMAC-SHA256 signature is checked against the simulator's `SECRET_ID:SECRET_KEY` over the
/// headers it names (at least `content-type` and `host`), as Tencent does:
/// `AuthFailure.InvalidAuthorization` (no TC3 header, or one that signs too little),
/// `AuthFailure.SecretIdNotFound`, `AuthFailure.SignatureExpire` (a timestamp more than five
/// minutes off), `AuthFailure.SignatureFailure` (a signature that does not match). Faults answer
/// `RequestLimitExceeded`, `InternalError`, `ResourceInsufficient.ChargeResourceExhaust`; a
/// refused job ends `JobStatusCode` "4" with `FailedOperation.GenerateImageFailed`.
struct HunyuanAPI: SimulatedAPI {
    let simulator: ProviderSimulator
    let signer: TC3Signature

    static let resolutions: Set<String> = [
        "768:768", "768:1024", "1024:768", "1024:1024", "720:1280", "1280:720", "768:1280", "1280:768",
    ]

    init(simulator: ProviderSimulator) {
        self.simulator = simulator
        let parts = simulator.key.split(separator: ":", maxSplits: 1).map(String.init)
        signer = TC3Signature(
            secretID: parts.first ?? "", secretKey: parts.count > 1 ? parts[1] : "", service: "hunyuan")
    }

    func register(on router: Router<BasicRequestContext>) {
        router.post("/") { request, _ in
            var request = request
            let body = try await request.collectBody(upTo: 16 << 20)
            let payload = Array(body.readableBytesView)
            if let refused = verify(request, payload: payload) { return refused }
            let action = request.headers[HTTPField.Name("X-TC-Action")!] ?? ""
            return try await guarded(request, creates: action == "SubmitHunyuanImageJob") {
                guard case .object(let fields)? = try? JSONCoding.decode(JSONValue.self, from: Data(payload)) else {
                    return error("InvalidParameter", "the body is not a JSON object")
                }
                switch request.headers[HTTPField.Name("X-TC-Action")!] ?? "" {
                case "SubmitHunyuanImageJob": return await submit(fields)
                case "QueryHunyuanImageJob": return query(fields, base: ProviderSimulator.base(of: request))
                case let action: return error("InvalidAction", "the action \(action) does not exist")
                }
            }
        }
    }

    /// Checked in the handler, with the body the signature covers.
    func refusal(_ request: Request) async -> Response? { nil }

    /// Tencent's answer to a call whose signature it refuses, or nil.
    func verify(_ request: Request, payload: [UInt8], now: Date = Date()) -> Response? {
        guard let header = request.headers[.authorization], let parsed = TC3Signature.parse(authorization: header)
        else {
            return error("AuthFailure.InvalidAuthorization", "Authorization is not TC3-HMAC-SHA256")
        }
        guard parsed.secretID == signer.secretID else {
            return error("AuthFailure.SecretIdNotFound", "The SecretId is not found")
        }
        guard let timestamp = request.headers[HTTPField.Name("X-TC-Timestamp")!].flatMap({ Int($0) }),
            abs(Double(timestamp) - now.timeIntervalSince1970) <= 300
        else {
            return error(
                "AuthFailure.SignatureExpire", "The signature expired: X-TC-Timestamp is more than 5 minutes off")
        }
        let names = Set(parsed.signedHeaders)
        guard names.isSuperset(of: ["content-type", "host"]), parsed.service == "hunyuan",
            parsed.day == TC3Signature.day(of: timestamp)
        else {
            return error(
                "AuthFailure.InvalidAuthorization", "Authorization's credential scope or signed headers are wrong")
        }
        var headers: [String: String] = [:]
        for name in names {
            guard let field = HTTPField.Name(name) else {
                return error("AuthFailure.InvalidAuthorization", "a signed header name is not valid")
            }
            headers[name] = name == "host" ? request.head.authority ?? "" : request.headers[field] ?? ""
        }
        let signed = TC3Signature.Request(
            method: request.method.rawValue, path: request.uri.path, query: request.uri.query ?? "", headers: headers,
            payload: payload, timestamp: timestamp)
        guard signer.signature(signed) == parsed.signature else {
            return error("AuthFailure.SignatureFailure", "The provided credentials could not be validated")
        }
        return nil
    }

    func rateLimited(retryAfter seconds: Int, headers: HTTPFields) -> Response {
        error("RequestLimitExceeded", "Your current request rate is too high")
    }

    func serverError() -> Response { error("InternalError", "An internal error occurred") }

    func submit(_ body: [String: JSONValue]) async -> Response {
        guard let prompt = body["Prompt"]?.stringValue, !prompt.isEmpty else {
            return error("MissingParameter", "The Prompt parameter is missing")
        }
        guard prompt.count <= 1_024 else { return error("InvalidParameterValue", "Prompt is longer than 1024") }
        let count = body["Num"].map { $0.intValue ?? 0 } ?? 1
        guard (1...4).contains(count) else { return error("InvalidParameterValue", "Num must be 1…4") }
        if let resolution = body["Resolution"] {
            guard let text = resolution.stringValue, Self.resolutions.contains(text) else {
                return error("InvalidParameterValue", "Resolution is not one of the supported sizes")
            }
        }
        if Double.random(in: 0..<1) < simulator.knobs.pBalance {
            return error("ResourceInsufficient.ChargeResourceExhaust", "The resource pack is used up")
        }
        let task = simulator.submit(
            reference: nil, model: "hunyuan-image", input: .object(body), outputs: count, isVideo: false)
        if let lost = await simulator.lostAnswer() { return lost }
        return answer(["JobId": .string(task.id)])
    }

    func query(_ body: [String: JSONValue], base: String) -> Response {
        guard let id = body["JobId"]?.stringValue, !id.isEmpty else {
            return error("MissingParameter", "The JobId parameter is missing")
        }
        guard let task = simulator.task(id, countingStatusCall: true) else {
            return error("InvalidParameterValue", "The JobId does not exist")
        }
        var job: [String: JSONValue] = [
            "JobErrorCode": .string(""), "JobErrorMsg": .string(""), "ResultImage": .array([]),
            "ResultDetails": .array([]), "RevisedPrompt": .array([]),
        ]
        switch task.phase(at: Date()) {
        case .queued:
            job["JobStatusCode"] = .string("1")
            job["JobStatusMsg"] = .string("排队中")
        case .running:
            job["JobStatusCode"] = .string("2")
            job["JobStatusMsg"] = .string("处理中")
        case .ended:
            switch task.fate {
            case .succeed, .empty:
                let files = task.files(base: base)
                job["JobStatusCode"] = .string("5")
                job["JobStatusMsg"] = .string("处理完成")
                job["ResultImage"] = .array(files.map { .string($0) })
                job["ResultDetails"] = .array(files.map { _ in .string("Success") })
                job["RevisedPrompt"] = .array(files.map { _ in task.input["Prompt"] ?? .string("") })
            case .policy:
                job["JobStatusCode"] = .string("4")
                job["JobStatusMsg"] = .string("处理失败")
                job["JobErrorCode"] = .string("FailedOperation.GenerateImageFailed")
                job["JobErrorMsg"] = .string("The generated image contains sensitive content")
            case .stuck:
                job["JobStatusCode"] = .string("2")
                job["JobStatusMsg"] = .string("处理中")
            }
        }
        return answer(job)
    }

    func answer(_ fields: [String: JSONValue]) -> Response {
        var response = fields
        response["RequestId"] = .string(UUID().uuidString.lowercased())
        return SimJSON.response(.ok, ["Response": .object(response)])
    }

    func error(_ code: String, _ message: String) -> Response {
        answer(["Error": .object(["Code": .string(code), "Message": .string(message)])])
    }
}
