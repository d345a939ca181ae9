import Foundation
import GenGateCore
import HTTPTypes
import Hummingbird
import NIOCore

/// Alibaba Cloud DashScope's asynchronous image synthesis at its real paths, faithful enough for
/// the official Python SDK (`dashscope` on PyPI, `ImageSynthesis.async_call/fetch/wait/cancel`):
/// `POST /api/v1/services/aigc/text2image/image-synthesis` (bearer key, `X-DashScope-Async:
/// enable` required, else 403 `AccessDenied`), `GET /api/v1/tasks/{id}` with the status names
/// `PENDING`, `RUNNING`, `SUCCEEDED`, `FAILED`, `CANCELED`, `UNKNOWN` (an unknown task),
/// `POST /api/v1/tasks/{id}/cancel` (only while `PENDING`); errors as
/// `{request_id, code, message}`: `InvalidApiKey`, `InvalidParameter`, `Arrearage`,
/// `DataInspectionFailed` (a task failure), `Throttling.RateQuota` (429, no Retry-After, as the
/// real service), `InternalError`.
struct DashScopeAPI: KeyCheckedAPI {
    let simulator: ProviderSimulator

    func register(on router: Router<BasicRequestContext>) {
        let api = router.group("api/v1")
        api.post("services/aigc/text2image/image-synthesis") { request, _ in
            try await guarded(request, creates: true) { try await create(request) }
        }
        api.post("services/aigc/video-generation/video-synthesis") { request, _ in
            try await guarded(request, creates: true) { try await create(request, video: true) }
        }
        api.get("tasks/:id") { request, context in
            try await guarded(request) {
                let id = context.parameters.get("id") ?? ""
                return SimJSON.response(
                    .ok,
                    task(
                        simulator.task(id, countingStatusCall: true), id: id, base: ProviderSimulator.base(of: request))
                )
            }
        }
        api.post("tasks/:id/cancel") { request, context in
            try await guarded(request) {
                let id = context.parameters.get("id") ?? ""
                guard let current = simulator.task(id, countingStatusCall: false) else {
                    return error(.notFound, "InvalidParameter", "The task \(id) does not exist.")
                }
                guard current.phase(at: Date()) == .queued else {
                    return error(
                        .badRequest, "UnsupportedOperation",
                        "Failed to cancel the task, please confirm if the task is in PENDING status.")
                }
                _ = simulator.cancel(id)
                return SimJSON.response(.ok, ["request_id": .string(UUID().uuidString.lowercased())])
            }
        }
    }

    func isAuthorized(_ request: Request) -> Bool {
        request.headers[.authorization] == "Bearer \(simulator.key)"
    }

    func unauthorized() -> Response {
        error(.unauthorized, "InvalidApiKey", "Invalid API-key provided.")
    }

    func rateLimited(retryAfter seconds: Int, headers: HTTPFields) -> Response {
        // DashScope documents no Retry-After; the simulator sends none either.
        error(.tooManyRequests, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
    }

    func serverError() -> Response {
        error(.internalServerError, "InternalError", "An internal error has occured, please try again later.")
    }

    func create(_ request: Request, video: Bool = false) async throws -> Response {
        guard request.headers[HTTPField.Name("X-DashScope-Async")!] == "enable" else {
            return error(.forbidden, "AccessDenied", "current user api does not support synchronous calls")
        }
        var request = request
        let data = try await request.collectBody(upTo: 1 << 20)
        guard case .object(let body)? = try? JSONCoding.decode(JSONValue.self, from: Data(data.readableBytesView))
        else {
            return error(.badRequest, "InvalidParameter", "The request body is not valid JSON.")
        }
        guard let model = body["model"]?.stringValue, !model.isEmpty else {
            return error(.badRequest, "BadRequest.EmptyModel", "Required parameter(model) missing or invalid.")
        }
        guard let prompt = body["input"]?["prompt"]?.stringValue, !prompt.isEmpty else {
            return error(.badRequest, "InvalidParameter", "Field required: input.prompt")
        }
        if video {
            // Image-to-video: the first frame, a URL the service fetches.
            guard let image = body["input"]?["img_url"]?.stringValue, !image.isEmpty else {
                return error(.badRequest, "InvalidParameter", "Field required: input.img_url")
            }
            if let refusal = await simulator.receiveImage(image, field: "img_url", forms: ["url"]) {
                return error(.badRequest, "InvalidParameter.DataInspection", "The image is not usable: \(refusal)")
            }
        }
        let parameters = body["parameters"]
        let count = video ? 1 : parameters?["n"]?.intValue ?? 1
        guard (1...4).contains(count) else {
            return error(.badRequest, "InvalidParameter", "The n parameter must be between 1 and 4.")
        }
        if let size = parameters?["size"]?.stringValue {
            let sides = size.split(separator: "*").compactMap { Int($0) }
            guard sides.count == 2, sides.allSatisfy({ (512...1440).contains($0) }) else {
                return error(.badRequest, "InvalidParameter", "The size must be width*height, each 512 to 1440.")
            }
        }
        if Double.random(in: 0..<1) < simulator.knobs.pBalance {
            return error(
                .badRequest, "Arrearage", "Access denied, please make sure your account is in good standing.")
        }
        let task = simulator.submit(
            reference: request.headers[HTTPField.Name("X-GenGate-Reference")!], model: model, input: .object(body),
            outputs: count, isVideo: video)
        if let lost = await simulator.lostAnswer() { return lost }
        return SimJSON.response(
            .ok,
            [
                "output": .object(["task_status": .string("PENDING"), "task_id": .string(task.id)]),
                "request_id": .string(UUID().uuidString.lowercased()),
            ])
    }

    func task(_ task: SimTask?, id: String, base: String) -> JSONValue {
        var output: [String: JSONValue] = ["task_id": .string(id)]
        guard let task else {
            output["task_status"] = .string("UNKNOWN")
            return .object(["request_id": .string(UUID().uuidString.lowercased()), "output": .object(output)])
        }
        output["submit_time"] = .string(Self.time(task.createdAt))
        var answer: [String: JSONValue] = ["request_id": .string(UUID().uuidString.lowercased())]
        switch task.phase(at: Date()) {
        case .queued:
            output["task_status"] = .string("PENDING")
        case .running:
            output["task_status"] = .string("RUNNING")
            output["scheduled_time"] = .string(Self.time(task.createdAt))
        case .ended:
            output["end_time"] = .string(Self.time(task.cancelledAt ?? task.endsAt))
            if task.cancelledAt != nil {
                output["task_status"] = .string("CANCELED")
            } else if task.fate == .policy {
                output["task_status"] = .string("FAILED")
                output["code"] = .string("DataInspectionFailed")
                output["message"] = .string("Output data may contain inappropriate content.")
            } else {
                let files = task.files(base: base)
                output["task_status"] = .string("SUCCEEDED")
                let prompt = task.input["input"]?["prompt"] ?? .null
                if task.isVideo {
                    output["video_url"] = files.first.map(JSONValue.string) ?? .null
                } else {
                    output["results"] = .array(
                        files.map { .object(["url": .string($0), "orig_prompt": prompt, "actual_prompt": prompt]) })
                }
                output["task_metrics"] = .object([
                    "TOTAL": .number(Double(files.count)), "SUCCEEDED": .number(Double(files.count)),
                    "FAILED": .number(0),
                ])
                answer["usage"] = .object(["image_count": .number(Double(files.count))])
            }
        }
        answer["output"] = .object(output)
        return .object(answer)
    }

    /// DashScope's own timestamp form: `2025-01-08 16:03:59.840`.
    static func time(_ date: Date) -> String {
        let text = Timestamp.format(date)
        return text.prefix(10) + " " + text.dropFirst(11).dropLast()
    }

    func error(_ status: HTTPResponse.Status, _ code: String, _ message: String) -> Response {
        SimJSON.response(
            status,
            [
                "request_id": .string(UUID().uuidString.lowercased()), "code": .string(code),
                "message": .string(message),
            ])
    }
}
