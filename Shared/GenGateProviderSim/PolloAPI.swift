import Foundation
import GenGateCore
import HTTPTypes
import Hummingbird
import NIOCore

/// Pollo AI's generation API at its real paths: `POST /api/platform/generation/{brand}/{model}`
/// with the key in `x-api-key`, answering `{data: {taskId, status}}`; `GET
/// /api/platform/generation/{taskId}/status` answering `{data: {taskId, credit, generations:
/// [{id, status, failMsg, url, mediaType}]}}` with `waiting`, `processing`, `succeed`, `failed`.
/// Pollo does not document its error answers; the simulator answers `{code, message}` with 401,
/// 402 ("Not enough credits"), 429 and 500, as its adapter expects them.
struct PolloAPI: KeyCheckedAPI {
    let simulator: ProviderSimulator

    func register(on router: Router<BasicRequestContext>) {
        let api = router.group("api/platform/generation")
        // `{taskId}/status` and `{brand}/{model}` share a shape; the router wants one set of names.
        api.get(":brand/:model") { request, context in
            try await guarded(request) {
                guard context.parameters.get("model") == "status" else {
                    return error(.notFound, "NOT_FOUND", "Not found")
                }
                let id = context.parameters.get("brand") ?? ""
                guard let task = simulator.task(id, countingStatusCall: true) else {
                    return error(.notFound, "NOT_FOUND", "Task not found")
                }
                return SimJSON.response(.ok, ["data": status(task, base: ProviderSimulator.base(of: request))])
            }
        }
        api.post(":brand/:model") { request, context in
            try await guarded(request, creates: true) {
                try await create(
                    request, model: "\(context.parameters.get("brand") ?? "")/\(context.parameters.get("model") ?? "")")
            }
        }
    }

    func isAuthorized(_ request: Request) -> Bool {
        request.headers[HTTPField.Name("x-api-key")!] == simulator.key
    }

    func unauthorized() -> Response { error(.unauthorized, "UNAUTHORIZED", "Invalid API key") }

    func rateLimited(retryAfter seconds: Int, headers: HTTPFields) -> Response {
        SimJSON.response(
            .tooManyRequests, ["code": .string("TOO_MANY_REQUESTS"), "message": .string("Too many requests")],
            headers: headers)
    }

    func serverError() -> Response { error(.internalServerError, "INTERNAL_ERROR", "Internal server error") }

    func create(_ request: Request, model: String) async throws -> Response {
        var request = request
        let data = try await request.collectBody(upTo: 1 << 20)
        guard case .object(let body)? = try? JSONCoding.decode(JSONValue.self, from: Data(data.readableBytesView)),
            case .object(let input)? = body["input"]
        else {
            return error(.badRequest, "BAD_REQUEST", "input is required")
        }
        guard let prompt = input["prompt"]?.stringValue, !prompt.isEmpty else {
            return error(.badRequest, "BAD_REQUEST", "input.prompt is required")
        }
        // Pollo takes images only as URLs, which it fetches.
        for field in ["image", "imageTail"] {
            guard let image = input[field]?.stringValue else { continue }
            if let refusal = await simulator.receiveImage(image, field: field, forms: ["url"]) {
                return error(.badRequest, "BAD_REQUEST", "input.\(refusal)")
            }
        }
        if Double.random(in: 0..<1) < simulator.knobs.pBalance {
            return error(.init(code: 402, reasonPhrase: "Payment Required"), "NOT_ENOUGH_CREDITS", "Not enough credits")
        }
        let task = simulator.submit(
            reference: request.headers[HTTPField.Name("X-GenGate-Reference")!], model: model, input: .object(body),
            outputs: 1, isVideo: true)
        if let url = body["webhookUrl"]?.stringValue {
            let base = ProviderSimulator.base(of: request)
            simulator.callBack(task, url: url) { ended in (ProviderSimulator.json(status(ended, base: base)), []) }
        }
        if let lost = await simulator.lostAnswer() { return lost }
        return SimJSON.response(.ok, ["data": .object(["taskId": .string(task.id), "status": .string("waiting")])])
    }

    func status(_ task: SimTask, base: String) -> JSONValue {
        var generation: [String: JSONValue] = [
            "id": .string(task.id + "-0"), "mediaType": .string("video"),
            "createdDate": .string(Timestamp.format(task.createdAt)),
        ]
        switch task.phase(at: Date()) {
        case .queued: generation["status"] = .string("waiting")
        case .running: generation["status"] = .string("processing")
        case .ended:
            switch task.fate {
            case .succeed:
                generation["status"] = .string("succeed")
                generation["url"] = .string(task.files(base: base)[0])
            case .empty:
                generation["status"] = .string("succeed")
            case .policy:
                generation["status"] = .string("failed")
                generation["failMsg"] = .string("The prompt contains sensitive content")
            case .stuck:
                generation["status"] = .string("processing")
            }
        }
        return .object([
            "taskId": .string(task.id), "credit": .number(10), "generations": .array([.object(generation)]),
        ])
    }

    func error(_ status: HTTPResponse.Status, _ code: String, _ message: String) -> Response {
        SimJSON.response(status, ["code": .string(code), "message": .string(message)])
    }
}
