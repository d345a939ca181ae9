import Foundation
import GenGateCore
import HTTPTypes
import Hummingbird
import NIOCore

/// Replicate's predictions API at its real paths, faithful enough for the official Python client
/// (`replicate` on PyPI) to create, wait for (by polling or `Prefer: wait`), read and cancel
/// predictions: bearer (or legacy `Token`) auth, RFC 7807 error bodies, 201 on create, the
/// prediction object with `urls`, the status names, 429 with `Retry-After`, 402 "Billing
/// required", 422 for invalid input. Models are not checked against a catalogue: any
/// `owner/name` runs; a name with `video` in it makes one MP4, others `num_outputs` PNGs.
struct ReplicateAPI: KeyCheckedAPI {
    let simulator: ProviderSimulator

    func register(on router: Router<BasicRequestContext>) {
        let v1 = router.group("v1")
        v1.post("models/:owner/:name/predictions") { request, context in
            let model = "\(context.parameters.get("owner") ?? "")/\(context.parameters.get("name") ?? "")"
            return try await guarded(request, creates: true) {
                try await create(request, model: model, versioned: false)
            }
        }
        v1.post("predictions") { request, _ in
            try await guarded(request, creates: true) { try await create(request, model: nil, versioned: true) }
        }
        v1.get("predictions/:id") { request, context in
            try await guarded(request) {
                let id = context.parameters.get("id") ?? ""
                guard let task = simulator.task(id, countingStatusCall: true) else { return notFound() }
                return SimJSON.response(.ok, prediction(task, base: ProviderSimulator.base(of: request)))
            }
        }
        v1.post("predictions/:id/cancel") { request, context in
            try await guarded(request) {
                guard let task = simulator.cancel(context.parameters.get("id") ?? "") else { return notFound() }
                return SimJSON.response(.ok, prediction(task, base: ProviderSimulator.base(of: request)))
            }
        }
        v1.get("webhooks/default/secret") { request, _ in
            try await guarded(request) {
                SimJSON.response(.ok, ["key": .string("whsec_" + Data(webhookKey).base64EncodedString())])
            }
        }
        v1.get("predictions") { request, _ in
            try await guarded(request) {
                let base = ProviderSimulator.base(of: request)
                let tasks = simulator.state.withLock { Array($0.tasks.values) }
                    .sorted { $0.createdAt > $1.createdAt }.prefix(100)
                return SimJSON.response(
                    .ok,
                    ["next": .null, "previous": .null, "results": .array(tasks.map { prediction($0, base: base) })])
            }
        }
    }

    /// The account's webhook signing key, derived from the simulator's token.
    var webhookKey: [UInt8] { Digest.sha256(Data("replicate webhooks \(simulator.key)".utf8)) }

    func isAuthorized(_ request: Request) -> Bool {
        let authorization = request.headers[.authorization] ?? ""
        return authorization == "Bearer \(simulator.key)" || authorization == "Token \(simulator.key)"
    }

    func unauthorized() -> Response {
        problem(.unauthorized, title: "Unauthenticated", detail: "You did not pass a valid authentication token")
    }

    func rateLimited(retryAfter seconds: Int, headers: HTTPFields) -> Response {
        SimJSON.response(
            .tooManyRequests,
            [
                "title": .string("Request was throttled"), "status": .number(429),
                "detail": .string("Request was throttled. Expected available in \(seconds) second."),
            ], headers: headers)
    }

    func serverError() -> Response {
        problem(.serviceUnavailable, title: "Service Unavailable", detail: "Please retry the request.")
    }

    func create(_ request: Request, model: String?, versioned: Bool) async throws -> Response {
        var request = request
        let data = try await request.collectBody(upTo: 64 << 20)
        guard case .object(let body)? = try? JSONCoding.decode(JSONValue.self, from: Data(data.readableBytesView))
        else {
            return problem(.badRequest, title: "Invalid JSON", detail: "The request body is not a JSON object.")
        }
        var model = model ?? ""
        var version = "hidden"
        if versioned {
            guard let given = body["version"]?.stringValue, !given.isEmpty else {
                return problem(
                    .unprocessableContent, title: "Input validation failed", detail: "- version: version is required")
            }
            let parts = given.split(separator: ":", maxSplits: 1).map(String.init)
            if parts.count == 2 {
                (model, version) = (parts[0], parts[1])
            } else if given.count == 64, given.allSatisfy(\.isHexDigit) {
                (model, version) = ("unknown/model", given)
            } else {
                model = given
            }
        }
        guard case .object(let input)? = body["input"] else {
            return problem(
                .unprocessableContent, title: "Input validation failed", detail: "- input: input is required")
        }
        guard let prompt = input["prompt"]?.stringValue, !prompt.isEmpty else {
            return problem(
                .unprocessableContent, title: "Input validation failed", detail: "- input.prompt: prompt is required")
        }
        // File inputs: a URL Replicate fetches, or a data URL.
        for field in ["image", "input_image", "first_frame_image"] {
            guard let image = input[field]?.stringValue else { continue }
            if let refusal = await simulator.receiveImage(image, field: field, forms: ["url", "data_url"]) {
                return problem(
                    .unprocessableContent, title: "Input validation failed", detail: "- input.\(refusal)")
            }
        }
        let count = input["num_outputs"]?.intValue ?? 1
        guard (1...4).contains(count) else {
            return problem(
                .unprocessableContent, title: "Input validation failed",
                detail: "- input.num_outputs: must be between 1 and 4")
        }
        if Double.random(in: 0..<1) < simulator.knobs.pBalance {
            return problem(
                .init(code: 402, reasonPhrase: "Payment Required"), title: "Billing required",
                detail: "You need to set up billing to run this model. Go to https://replicate.com/account/billing")
        }
        let isVideo = model.lowercased().contains("video")
        var task = simulator.submit(
            reference: request.headers[HTTPField.Name("X-GenGate-Reference")!], model: model,
            input: .object(input), outputs: isVideo ? 1 : count, isVideo: isVideo, version: version)
        if let after = request.headers[HTTPField.Name("Cancel-After")!] {
            guard let seconds = Self.duration(after), seconds >= 5 else {
                return problem(
                    .unprocessableContent, title: "Invalid Cancel-After",
                    detail: "Cancel-After must be a duration of at least 5s, like 30s, 5m or 1h30m")
            }
            simulator.stop(task.id, at: task.createdAt.addingTimeInterval(seconds))
        }
        if let url = body["webhook"]?.stringValue {
            let base = ProviderSimulator.base(of: request)
            let key = webhookKey
            simulator.callBack(task, url: url) { ended in
                let data = ProviderSimulator.json(prediction(ended, base: base))
                let id = "msg_" + Identifier.randomToken(count: 20)
                let now = Int(Date().timeIntervalSince1970)
                return (
                    data,
                    [
                        ("webhook-id", id), ("webhook-timestamp", String(now)),
                        ("webhook-signature", StandardWebhooks.sign(key: key, id: id, timestamp: now, body: data)),
                    ]
                )
            }
        }
        if let lost = await simulator.lostAnswer() { return lost }
        if let seconds = Self.preferWait(request.headers[HTTPField.Name("Prefer")!]) {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline,
                let current = simulator.task(task.id, countingStatusCall: false), current.phase(at: Date()) != .ended
            {
                try await Task.sleep(for: .milliseconds(50))
            }
            task = simulator.task(task.id, countingStatusCall: false) ?? task
        }
        var headers = HTTPFields()
        headers[.location] = "\(ProviderSimulator.base(of: request))/v1/predictions/\(task.id)"
        return SimJSON.response(.created, prediction(task, base: ProviderSimulator.base(of: request)), headers: headers)
    }

    /// A `Cancel-After` duration in seconds: `30`, `30s`, `5m`, `1h30m45s`; nil when malformed.
    static func duration(_ text: String) -> Double? {
        if let seconds = Double(text) { return seconds }
        var total = 0.0
        var number = ""
        for character in text {
            if character.isNumber || character == "." {
                number.append(character)
                continue
            }
            guard let value = Double(number), let unit = ["h": 3_600.0, "m": 60, "s": 1][String(character)] else {
                return nil
            }
            total += value * unit
            number = ""
        }
        return number.isEmpty && !text.isEmpty ? total : nil
    }

    /// `Prefer: wait` or `wait=N` (1…60): seconds to hold the answer; nil when absent or malformed.
    static func preferWait(_ value: String?) -> Double? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), value.hasPrefix("wait") else { return nil }
        if value == "wait" { return 60 }
        guard value.hasPrefix("wait="), let seconds = Int(value.dropFirst(5)), (1...60).contains(seconds) else {
            return nil
        }
        return Double(seconds)
    }

    func prediction(_ task: SimTask, base: String) -> JSONValue {
        let now = Date()
        var object: [String: JSONValue] = [
            "id": .string(task.id), "model": .string(task.model), "version": .string(task.version ?? "hidden"),
            "input": task.input, "logs": .string(""), "output": .null, "error": .null, "data_removed": .bool(false),
            "source": .string("api"), "created_at": .string(Timestamp.format(task.createdAt)),
            "urls": .object([
                "get": .string("\(base)/v1/predictions/\(task.id)"),
                "cancel": .string("\(base)/v1/predictions/\(task.id)/cancel"),
                "web": .string("https://replicate.com/p/\(task.id)"),
            ]),
        ]
        switch task.phase(at: now) {
        case .queued:
            object["status"] = .string("starting")
        case .running:
            object["status"] = .string("processing")
            object["started_at"] = .string(Timestamp.format(task.createdAt))
        case .ended:
            object["started_at"] = .string(Timestamp.format(task.createdAt))
            object["completed_at"] = .string(Timestamp.format(task.cancelledAt ?? task.endsAt))
            object["metrics"] = .object(["predict_time": .number(task.endsAt.timeIntervalSince(task.createdAt))])
            if task.cancelledAt != nil {
                object["status"] = .string("canceled")
            } else {
                switch task.fate {
                case .succeed:
                    object["status"] = .string("succeeded")
                    let files = task.files(base: base).map { JSONValue.string($0) }
                    object["output"] = task.isVideo ? files[0] : .array(files)
                case .empty:
                    object["status"] = .string("succeeded")
                    object["output"] = .array([])
                case .policy:
                    object["status"] = .string("failed")
                    object["error"] = .string(
                        "NSFW content detected. Try running it again, or try a different prompt.")
                case .stuck:
                    object["status"] = .string("processing")
                }
            }
        }
        return .object(object)
    }

    func notFound() -> Response {
        problem(.notFound, title: "Not found", detail: "Not found.")
    }

    func problem(_ status: HTTPResponse.Status, title: String, detail: String) -> Response {
        SimJSON.response(
            status, ["title": .string(title), "detail": .string(detail), "status": .number(Double(status.code))])
    }
}
