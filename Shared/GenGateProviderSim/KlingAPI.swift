import Foundation
import GenGateCore
import HTTPTypes
import Hummingbird
import JWTKit
import NIOCore

/// Kling AI's classic API at its real paths: `POST /v1/videos/text2video`,
/// `/v1/videos/image2video` and `/v1/images/generations`, each task read at `GET <path>/{id}`
/// (the task id, or the `external_task_id` it was created with) and listed newest first at `GET
/// <path>?pageNum=&pageSize=` (≤ 500). Every answer is `{code, message, request_id, data}`,
/// `code` 0 on success; tasks go `submitted`, `processing`, `succeed` or `failed`. Every call
/// must carry `Authorization: Bearer <JWT>`: HS256, signed with the secret key of the
/// simulator's `ACCESS:SECRET` credential, `iss` the access key, within its `nbf` and `exp`;
/// otherwise 401 with code 1001 (no header), 1002 (bad token), 1003 (not yet valid) or 1004
/// (expired), as Kling answers. Faults answer 429 code 1302 (too fast), 429 code 1102
/// (resource pack used up), 400 code 1301 (content security) and 500 code 5000.
struct KlingAPI: SimulatedAPI {
    let simulator: ProviderSimulator
    let accessKey: String
    let secretKey: String

    static let collections = ["videos/text2video", "videos/image2video", "images/generations"]

    init(simulator: ProviderSimulator) {
        self.simulator = simulator
        let parts = simulator.key.split(separator: ":", maxSplits: 1).map(String.init)
        accessKey = parts.first ?? ""
        secretKey = parts.count > 1 ? parts[1] : ""
    }

    func register(on router: Router<BasicRequestContext>) {
        for collection in Self.collections {
            router.post("/v1/\(collection)") { request, _ in
                try await guarded(request, creates: true) { try await create(request, collection: collection) }
            }
            router.get("/v1/\(collection)") { request, _ in
                try await guarded(request) { list(request, collection: collection) }
            }
            router.get("/v1/\(collection)/:id") { request, context in
                try await guarded(request) {
                    let id = context.parameters.get("id") ?? ""
                    guard
                        let task = simulator.task(id, countingStatusCall: true, where: { Self.belongs($0, collection) })
                    else {
                        return error(.notFound, 1203, "task not found")
                    }
                    return success(view(task, base: ProviderSimulator.base(of: request)))
                }
            }
        }
    }

    /// The claims Kling checks.
    struct Claims: JWTPayload {
        var iss: IssuerClaim
        var exp: ExpirationClaim
        var nbf: NotBeforeClaim?

        func verify(using algorithm: some JWTAlgorithm) throws {}
    }

    /// Kling's answer to a call whose token it refuses, with the reason it gives; nil to go on.
    func refusal(_ request: Request) async -> Response? {
        guard let (code, message) = await authorizationFailure(request) else { return nil }
        return error(.unauthorized, code, message)
    }

    /// Why a call's token is refused (Kling's code and message), or nil.
    func authorizationFailure(_ request: Request) async -> (code: Int, message: String)? {
        guard let header = request.headers[.authorization], !header.isEmpty else {
            return (1001, "Authorization is empty")
        }
        guard header.hasPrefix("Bearer ") else { return (1002, "Authorization is invalid") }
        let token = String(header.dropFirst("Bearer ".count))
        let keys = await JWTKeyCollection().add(hmac: HMACKey(from: secretKey), digestAlgorithm: .sha256)
        guard let claims = try? await keys.verify(token, as: Claims.self), claims.iss.value == accessKey else {
            return (1002, "Authorization is invalid")
        }
        let now = Date()
        if let nbf = claims.nbf, nbf.value > now { return (1003, "Authorization is not active") }
        if claims.exp.value <= now { return (1004, "Authorization is expired") }
        return nil
    }

    func rateLimited(retryAfter seconds: Int, headers: HTTPFields) -> Response {
        error(.tooManyRequests, 1302, "The API request is too fast, please slow down", headers: headers)
    }

    func serverError() -> Response { error(.internalServerError, 5000, "Server internal error") }

    static func belongs(_ task: SimTask, _ collection: String) -> Bool { task.model.hasPrefix(collection + ":") }

    func create(_ request: Request, collection: String) async throws -> Response {
        var request = request
        let data = try await request.collectBody(upTo: 16 << 20)
        guard case .object(let body)? = try? JSONCoding.decode(JSONValue.self, from: Data(data.readableBytesView))
        else {
            return error(.badRequest, 1200, "Invalid request parameters")
        }
        let model = body["model_name"]?.stringValue ?? "kling-v1"
        guard !model.isEmpty else {
            return error(.badRequest, 1201, "model_name is invalid")
        }
        let prompt = body["prompt"]?.stringValue ?? ""
        if collection == "videos/image2video" {
            guard let image = body["image"]?.stringValue, !image.isEmpty else {
                return error(.badRequest, 1201, "image is required")
            }
        } else if prompt.isEmpty {
            return error(.badRequest, 1201, "prompt is required")
        }
        if prompt.count > 2_500 { return error(.badRequest, 1201, "prompt must be at most 2500 characters") }
        // Kling takes an image as a URL or as raw base64 (a `data:` prefix is refused).
        for field in ["image", "image_tail"] {
            guard let image = body[field]?.stringValue else { continue }
            if let refusal = await simulator.receiveImage(image, field: field, forms: ["base64", "url"]) {
                return error(.badRequest, 1201, refusal)
            }
        }
        if let duration = body["duration"], duration.stringValue == nil {
            return error(.badRequest, 1201, "duration must be a string")
        }
        var outputs = 1
        if collection == "images/generations" {
            outputs = body["n"]?.intValue ?? 1
            guard (1...9).contains(outputs) else { return error(.badRequest, 1201, "n must be 1…9") }
        }
        if Double.random(in: 0..<1) < simulator.knobs.pBalance {
            return error(.tooManyRequests, 1102, "Account balance not enough")
        }
        let reference = body["external_task_id"]?.stringValue
        let task = simulator.submit(
            reference: reference, model: "\(collection):\(model)", input: .object(body), outputs: outputs,
            isVideo: collection.hasPrefix("videos"))
        if let url = body["callback_url"]?.stringValue {
            let base = ProviderSimulator.base(of: request)
            simulator.callBack(task, url: url) { ended in (ProviderSimulator.json(view(ended, base: base)), []) }
        }
        if let lost = await simulator.lostAnswer() { return lost }
        var info: [String: JSONValue] = [:]
        if let reference { info["external_task_id"] = .string(reference) }
        let millis = JSONValue.number((task.createdAt.timeIntervalSince1970 * 1_000).rounded())
        return success(
            .object([
                "task_id": .string(task.id), "task_status": .string("submitted"), "task_info": .object(info),
                "created_at": millis, "updated_at": millis,
            ]))
    }

    func list(_ request: Request, collection: String) -> Response {
        let page = request.uri.queryParameters.get("pageNum").flatMap { Int($0) } ?? 1
        let size = request.uri.queryParameters.get("pageSize").flatMap { Int($0) } ?? 30
        guard page >= 1, (1...500).contains(size) else {
            return error(.badRequest, 1201, "pageNum must be ≥ 1 and pageSize 1…500")
        }
        let tasks = simulator.tasks { Self.belongs($0, collection) }.sorted { $0.createdAt > $1.createdAt }
        let base = ProviderSimulator.base(of: request)
        let slice = tasks.dropFirst((page - 1) * size).prefix(size)
        return success(.array(slice.map { view($0, base: base) }))
    }

    func view(_ task: SimTask, base: String) -> JSONValue {
        var info: [String: JSONValue] = [:]
        if let reference = task.reference { info["external_task_id"] = .string(reference) }
        var object: [String: JSONValue] = [
            "task_id": .string(task.id), "task_info": .object(info), "task_status_msg": .string(""),
            "created_at": .number((task.createdAt.timeIntervalSince1970 * 1_000).rounded()),
            "updated_at": .number((Date().timeIntervalSince1970 * 1_000).rounded()),
        ]
        let key = task.isVideo ? "videos" : "images"
        switch task.phase(at: Date()) {
        case .queued:
            object["task_status"] = .string("submitted")
        case .running:
            object["task_status"] = .string("processing")
        case .ended:
            switch task.fate {
            case .succeed:
                object["task_status"] = .string("succeed")
                object["final_unit_deduction"] = .string(task.isVideo ? "1" : String(task.outputs))
                let files = task.files(base: base).enumerated().map { index, url -> JSONValue in
                    task.isVideo
                        ? .object([
                            "id": .string("\(task.id)-\(index)"), "url": .string(url), "duration": .string("5.1"),
                        ])
                        : .object(["index": .number(Double(index)), "url": .string(url)])
                }
                object["task_result"] = .object([key: .array(files)])
            case .empty:
                object["task_status"] = .string("succeed")
                object["task_result"] = .object([key: .array([])])
            case .policy:
                object["task_status"] = .string("failed")
                object["task_status_msg"] = .string("Failure to pass the risk control system")
            case .stuck:
                object["task_status"] = .string("processing")
            }
        }
        return .object(object)
    }

    func success(_ data: JSONValue) -> Response {
        SimJSON.response(
            .ok,
            [
                "code": .number(0), "message": .string("SUCCEED"),
                "request_id": .string(Identifier.randomToken(count: 16)),
                "data": data,
            ])
    }

    func error(_ status: HTTPResponse.Status, _ code: Int, _ message: String, headers: HTTPFields = [:]) -> Response {
        SimJSON.response(
            status,
            [
                "code": .number(Double(code)), "message": .string(message),
                "request_id": .string(Identifier.randomToken(count: 16)),
            ], headers: headers)
    }
}
