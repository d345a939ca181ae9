import Foundation
import GenGateCore
import HTTPTypes
import Hummingbird
import NIOCore

/// Black Forest Labs' Flux API at its real paths: `POST /v1/{model}` with the key in `x-key`,
/// answering `{id, polling_url, cost}`; `GET /v1/get_result?id=` answering `{id, status,
/// result: {sample, prompt, seed}, progress, details}` with the status names `Pending`, `Ready`,
/// `Error`, `Request Moderated`, `Content Moderated`, `Task not found`; FastAPI-style 422 bodies
/// (`{"detail": [{"loc", "msg", "type"}]}`), 402 for credits, 429 with `Retry-After` for too many
/// active tasks. One image per task; FLUX.1 sizes must be multiples of 32 in 256…1440.
struct FluxAPI: KeyCheckedAPI {
    let simulator: ProviderSimulator

    func register(on router: Router<BasicRequestContext>) {
        router.get("/v1/get_result") { request, _ in
            try await guarded(request) {
                let id = request.uri.queryParameters.get("id") ?? ""
                let base = ProviderSimulator.base(of: request)
                guard let task = simulator.task(id, countingStatusCall: true) else {
                    return SimJSON.response(.ok, ["id": .string(id), "status": .string("Task not found")])
                }
                return SimJSON.response(.ok, result(task, base: base))
            }
        }
        router.post("/v1/:model") { request, context in
            try await guarded(request, creates: true) {
                try await create(request, model: context.parameters.get("model") ?? "")
            }
        }
    }

    func isAuthorized(_ request: Request) -> Bool {
        request.headers[HTTPField.Name("x-key")!] == simulator.key
    }

    func unauthorized() -> Response {
        SimJSON.response(.forbidden, ["detail": .string("Not authenticated - Invalid Authentication")])
    }

    func rateLimited(retryAfter seconds: Int, headers: HTTPFields) -> Response {
        SimJSON.response(
            .tooManyRequests, ["detail": .string("You have exceeded the number of active tasks")], headers: headers)
    }

    func serverError() -> Response {
        SimJSON.response(.internalServerError, ["detail": .string("Internal Server Error")])
    }

    func create(_ request: Request, model: String) async throws -> Response {
        var request = request
        let data = try await request.collectBody(upTo: 64 << 20)
        guard case .object(let body)? = try? JSONCoding.decode(JSONValue.self, from: Data(data.readableBytesView))
        else {
            return invalid("body", "Input should be a valid dictionary", type: "dict_type")
        }
        guard let prompt = body["prompt"]?.stringValue, !prompt.isEmpty else {
            return invalid("prompt", "Field required", type: "missing")
        }
        // Input images: a URL or base64, which the simulator reads as BFL would.
        for field in ["image_prompt", "input_image"] + (2...8).map({ "input_image_\($0)" }) {
            guard let image = body[field]?.stringValue else { continue }
            if let refusal = await simulator.receiveImage(image, field: field, forms: ["base64", "url", "data_url"]) {
                return invalid(field, refusal, type: "value_error")
            }
        }
        if model.hasPrefix("flux-pro") || model == "flux-dev" {
            for field in ["width", "height"] {
                guard let value = body[field] else { continue }
                guard let pixels = value.intValue, (256...1440).contains(pixels), pixels % 32 == 0 else {
                    return invalid(field, "Input should be a multiple of 32 between 256 and 1440", type: "value_error")
                }
            }
        }
        if Double.random(in: 0..<1) < simulator.knobs.pBalance {
            return SimJSON.response(
                .init(code: 402, reasonPhrase: "Payment Required"),
                ["detail": .string("Insufficient credits. Please add credits at https://dashboard.bfl.ai")])
        }
        let task = simulator.submit(
            reference: request.headers[HTTPField.Name("X-GenGate-Reference")!], model: model, input: .object(body),
            outputs: 1, isVideo: false)
        let base = ProviderSimulator.base(of: request)
        if let url = body["webhook_url"]?.stringValue {
            let secret = body["webhook_secret"]?.stringValue
            simulator.callBack(task, url: url) { ended in
                (ProviderSimulator.json(result(ended, base: base)), secret.map { [("X-Webhook-Secret", $0)] } ?? [])
            }
        }
        if let lost = await simulator.lostAnswer() { return lost }
        return SimJSON.response(
            .ok,
            [
                "id": .string(task.id), "polling_url": .string("\(base)/v1/get_result?id=\(task.id)"),
                "cost": .number(4),
            ])
    }

    func result(_ task: SimTask, base: String) -> JSONValue {
        let now = Date()
        var object: [String: JSONValue] = [
            "id": .string(task.id), "result": .null, "details": .null, "progress": .null,
        ]
        switch task.phase(at: now) {
        case .queued, .running:
            object["status"] = .string("Pending")
            let span = max(0.001, task.endsAt.timeIntervalSince(task.createdAt))
            object["progress"] = .number(min(0.99, max(0, now.timeIntervalSince(task.createdAt) / span)))
        case .ended:
            switch task.fate {
            case .succeed:
                object["status"] = .string("Ready")
                object["result"] = .object([
                    "sample": .string(task.files(base: base)[0]),
                    "prompt": task.input["prompt"] ?? .null, "seed": task.input["seed"] ?? .number(0),
                ])
            case .empty:
                object["status"] = .string("Ready")
                object["result"] = .object(["sample": .null])
            case .policy:
                object["status"] = .string("Content Moderated")
                object["details"] = .object(["moderation_reasons": .array([.string("Derivative Works Filter")])])
            case .stuck:
                object["status"] = .string("Pending")
            }
        }
        return .object(object)
    }

    func invalid(_ field: String, _ message: String, type: String) -> Response {
        SimJSON.response(
            .unprocessableContent,
            [
                "detail": .array([
                    .object([
                        "loc": .array([.string("body"), .string(field)]), "msg": .string(message),
                        "type": .string(type),
                    ])
                ])
            ])
    }
}
