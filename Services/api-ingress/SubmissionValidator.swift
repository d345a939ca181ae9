import Foundation
import GenGateCore
import GenGateProviders
import GenGateRuntime

/// Checks a submission body and turns it into a `GenerationRequest`, collecting every problem
/// with the path of the field at fault, so a client fixes them all in one round.
struct SubmissionValidator: Sendable {
    let providers: ProviderRegistry
    /// Deadlines: the defaults by model and kind, and the longest allowed.
    let jobs: GenGateConfig.Jobs
    /// Which webhook URLs are allowed.
    let webhookPolicy: OutboundURLPolicy
    /// Input images: which URLs are allowed, and how large a data URL may be.
    let images: GenGateConfig.Images
    var imagePolicy: OutboundURLPolicy { OutboundURLPolicy(allowPrivate: images.allowPrivateUrls) }

    static let maxPromptCharacters = 4_000
    static let maxMetadataBytes = 16_384
    static let sizeRange = 16...1_024
    static let knownFields: Set<String> = [
        "model", "prompt", "n", "seed", "width", "height", "params", "deadline_seconds", "metadata", "webhook",
        "webhook_events", "images", "preprocess",
    ]

    /// What a valid submission is: the request, the model it starts on, and its fallback route
    /// (the alias's usable models in order; empty for a model named directly).
    struct Validated {
        var request: GenerationRequest
        var model: ModelInfo
        var route: [String]
        /// The input images as given, in order: those given inline are stored (as uploads)
        /// before the job is committed, and the request then names them.
        var images: [GivenImage] = []
        /// What an `Idempotency-Key` compares: the request, images given inline standing as their
        /// hashes (each stored as a new upload, whose id differs from one try to the next).
        var hashBasis: GenerationRequest?
        /// A job whose input is another's output not there yet: the one it waits for.
        var waitsFor: String?
        /// While it waits, its deadline: that job's, and its own time after it (nil: no deadline
        /// until it is let go, as for a batch's held jobs).
        var waitingDeadline: Date?
        /// The experiment the request was enrolled in (see `ExperimentRoutes.enroll`).
        var experiment: ExperimentAssignment?
        /// What an `Idempotency-Key` compares for a request that named an experiment: the body as
        /// sent (a retry may be sent to another variant, if the experiment was paused meanwhile).
        var sentBody: JSONValue?
    }

    /// An input image as a submission gave it.
    enum GivenImage: Sendable {
        case input(ImageInput)
        /// A `data:` URL's bytes.
        case inline(Data)
        /// In a batch: an output of the batch's request at this position.
        case sibling(request: Int, output: Int)
    }

    func validate(_ body: JSONValue) throws -> Validated {
        guard case .object(let fields) = body else {
            throw APIError.invalidRequest(
                "the body must be a JSON object",
                details: [.init(path: "", message: "expected an object, got \(body.typeName)")])
        }
        var details: [APIError.Detail] = []
        for name in fields.keys.sorted() where !Self.knownFields.contains(name) {
            details.append(.init(path: name, message: "unknown field"))
        }

        var model: ModelInfo?
        var name = ""
        var route: [String] = []
        switch fields["model"] {
        case nil, .null?:
            details.append(.init(path: "model", message: "required"))
        case .string(let given)?:
            name = given
            if let usable = providers.route(name) {
                guard let first = usable.first else {
                    let reasons = (providers.aliases[name] ?? []).compactMap { providers.unavailableReason(model: $0) }
                    throw APIError(
                        .providerNotConfigured,
                        "none of the models of \(name) can be used here: \(reasons.joined(separator: "; "))",
                        details: [.init(path: "model", message: "no model of this alias is configured")])
                }
                // An alias asks as much of each model as the least of them allows.
                model = first
                model?.maxOutputs = usable.map(\.maxOutputs).min() ?? first.maxOutputs
                model?.images = ImageIntake.common(usable.map(\.images))
                route = usable.map(\.id)
                break
            }
            model = providers.model(name)
            if model == nil, let reason = providers.unavailableReason(model: name) {
                throw APIError(
                    .providerNotConfigured, reason,
                    details: [.init(path: "model", message: "its provider is not configured")])
            }
            if model == nil {
                let known = (Array(providers.models.keys) + Array(providers.aliases.keys)).sorted().joined(
                    separator: ", ")
                throw APIError(
                    .unknownModel,
                    "unknown model \"\(name)\"; available: \(known)",
                    details: [.init(path: "model", message: "unknown model")])
            }
        case let other?:
            details.append(.init(path: "model", message: "must be a string, got \(other.typeName)"))
        }

        var prompt = ""
        switch fields["prompt"] {
        case nil, .null?:
            details.append(.init(path: "prompt", message: "required"))
        case .string(let text)?:
            if text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                details.append(.init(path: "prompt", message: "must not be empty"))
            } else if text.unicodeScalars.count > Self.maxPromptCharacters {
                // Counted as JSON Schema counts (code points), so the OpenAPI document's limit holds.
                details.append(
                    .init(
                        path: "prompt",
                        message:
                            "must be at most \(Self.maxPromptCharacters) characters, got \(text.unicodeScalars.count)"))
            } else if text.unicodeScalars.contains(where: { $0.value == 0 }) {
                details.append(.init(path: "prompt", message: "must not contain NUL characters"))
            }
            prompt = text
        case let other?:
            details.append(.init(path: "prompt", message: "must be a string, got \(other.typeName)"))
        }

        let maxOutputs = model?.maxOutputs ?? 10
        let n = integer(fields["n"], path: "n", range: 1...maxOutputs, details: &details) ?? 1
        let seed = integer(fields["seed"], path: "seed", range: 0...Int(Int32.max), details: &details)
        var width: Int?
        var height: Int?
        if model?.kind == .text {
            for name in ["width", "height"] where fields[name] != nil && fields[name] != .null {
                details.append(.init(path: name, message: "not supported by text models"))
            }
        } else {
            width = integer(fields["width"], path: "width", range: Self.sizeRange, details: &details)
            height = integer(fields["height"], path: "height", range: Self.sizeRange, details: &details)
        }
        let deadline = integer(
            fields["deadline_seconds"], path: "deadline_seconds", range: 10...jobs.maxDeadlineSeconds,
            details: &details)
        let params = object(fields["params"], path: "params", details: &details)
        let metadata = object(fields["metadata"], path: "metadata", details: &details)
        if let size = try? JSONCoding.encode(JSONValue.object(metadata)).count, size > Self.maxMetadataBytes {
            details.append(
                .init(path: "metadata", message: "must be at most \(Self.maxMetadataBytes) bytes of JSON, got \(size)"))
        }

        let (webhook, webhookEvents) = webhookFields(fields, details: &details)
        let given = imageFields(fields, model: model, details: &details)
        if let model, let least = model.images?.minImages, given.count < least, details.isEmpty {
            details.append(.init(path: "images", message: "\(model.id) needs at least \(least) image(s)"))
        }
        var preprocess: ImagePipeline?
        if let value = fields["preprocess"], value != .null {
            let (pipeline, problems) = ImagePipeline.parse(value, path: "preprocess")
            details += problems.map { .init(path: $0.0, message: $0.1) }
            preprocess = pipeline
            if given.isEmpty { details.append(.init(path: "preprocess", message: "needs images to preprocess")) }
        }

        guard details.isEmpty, let model else {
            let summary = details.map { $0.path.isEmpty ? $0.message : "\($0.path): \($0.message)" }.joined(
                separator: "; ")
            throw APIError.invalidRequest("invalid generation request: \(summary)", details: details)
        }
        let request = GenerationRequest(
            model: route.isEmpty ? model.id : name, prompt: prompt, n: n, seed: seed, width: width, height: height,
            params: params,
            deadlineSeconds: deadline ?? jobs.deadlineSeconds(model: name, kind: model.kind, route: route),
            metadata: metadata, webhook: webhook, webhookEvents: webhookEvents, preprocess: preprocess)
        return Validated(request: request, model: model, route: route, images: given)
    }

    /// The most images one request may give, whatever the model.
    static let maxImages = 16

    /// `images`: each an http(s) URL, a `data:` URL (base64), an upload's id, or one of those as
    /// `{"url": …}` / `{"upload": …}`; only for models that take images, and no more than they do.
    private func imageFields(_ fields: [String: JSONValue], model: ModelInfo?, details: inout [APIError.Detail])
        -> [GivenImage]
    {
        guard let value = fields["images"], value != .null else { return [] }
        guard case .array(let items) = value else {
            details.append(.init(path: "images", message: "must be an array, got \(value.typeName)"))
            return []
        }
        if let model {
            if let intake = model.images {
                if items.count > intake.maxImages {
                    details.append(
                        .init(
                            path: "images",
                            message: "\(model.id) takes at most \(intake.maxImages) image(s), got \(items.count)"))
                }
            } else if !items.isEmpty {
                let takers = providers.models.values.filter { $0.images != nil }.map(\.id).sorted()
                details.append(
                    .init(
                        path: "images",
                        message:
                            "\(model.id) takes no input images; models that do: \(takers.isEmpty ? "none configured" : takers.joined(separator: ", "))"
                    ))
                return []
            }
        }
        guard items.count <= Self.maxImages else {
            details.append(.init(path: "images", message: "must hold at most \(Self.maxImages) images"))
            return []
        }
        var given: [GivenImage] = []
        for (index, item) in items.enumerated() {
            let path = "images[\(index)]"
            var text: String?
            var kind: String?
            switch item {
            case .string(let string):
                text = string
            case .object(let object) where object.count == 1:
                if let url = object["url"]?.stringValue {
                    (text, kind) = (url, "url")
                } else if let id = object["upload"]?.stringValue {
                    (text, kind) = (id, "upload")
                }
            case .object(let object) where object.count == 2 && object["output"] != nil:
                // Another job's output (a chain): by id, or in a batch by the request's position.
                guard let output = object["output"]?.intValue, (0..<10).contains(output) else {
                    details.append(.init(path: "\(path).output", message: "must be an output index from 0 to 9"))
                    continue
                }
                if let id = object["generation"]?.stringValue, id.hasPrefix("gen_"), id.count <= 64 {
                    given.append(.input(.output(generation: id, index: output)))
                } else if let position = object["request"]?.intValue, position >= 0 {
                    given.append(.sibling(request: position, output: output))
                } else {
                    details.append(
                        .init(
                            path: path,
                            message:
                                "an output is {\"generation\": \"gen_…\", \"output\": n}, or in a batch {\"request\": i, \"output\": n}"
                        ))
                }
                continue
            default:
                break
            }
            guard let text else {
                details.append(
                    .init(
                        path: path,
                        message:
                            "must be an image URL, a data: URL, an upload id, {\"url\": …}, {\"upload\": …} or another job's output {\"generation\": …, \"output\": n}"
                    ))
                continue
            }
            if kind != "url", text.hasPrefix("upl_") || kind == "upload" {
                guard text.hasPrefix("upl_"), text.count <= 64 else {
                    details.append(.init(path: path, message: "is not an upload id (upl_…)"))
                    continue
                }
                given.append(.input(.upload(text)))
            } else if kind == nil, text.hasPrefix("data:") {
                switch Self.dataURL(text, limit: images.maxDataUrlBytes) {
                case .success(let data): given.append(.inline(data))
                case .failure(let problem): details.append(.init(path: path, message: problem.message))
                }
            } else if let problem = imagePolicy.problem(with: text) {
                details.append(.init(path: path, message: "the image URL \(problem)"))
            } else {
                given.append(.input(.url(text)))
            }
        }
        return given
    }

    struct Problem: Error {
        var message: String
    }

    /// The bytes of a base64 `data:` URL (its declared type is not trusted: the bytes are sniffed).
    static func dataURL(_ text: String, limit: Int) -> Result<Data, Problem> {
        guard let comma = text.firstIndex(of: ",") else {
            return .failure(Problem(message: "is not a data: URL (no comma before the data)"))
        }
        let header = text[text.index(text.startIndex, offsetBy: 5)..<comma].lowercased()
        guard header.split(separator: ";").contains("base64") else {
            return .failure(Problem(message: "a data: URL must be base64 (data:image/png;base64,…)"))
        }
        let encoded = text[text.index(after: comma)...]
        guard encoded.utf8.count / 4 * 3 <= limit + 3 else {
            return .failure(
                Problem(
                    message:
                        "the data: URL holds about \(encoded.utf8.count / 4 * 3) bytes, over the limit of \(limit); upload it (POST /v1/uploads) instead"
                ))
        }
        guard let data = Data(base64Encoded: String(encoded), options: .ignoreUnknownCharacters), !data.isEmpty
        else {
            return .failure(Problem(message: "the data: URL's base64 does not decode"))
        }
        guard data.count <= limit else {
            return .failure(Problem(message: "the data: URL holds \(data.count) bytes, over the limit of \(limit)"))
        }
        return .success(data)
    }

    /// `webhook` (an http(s) URL the policy allows) and `webhook_events` (a non-empty list of
    /// `start`, `progress`, `output`, `completed`; default output and completed). The events
    /// without a webhook are an error: they would say nothing.
    private func webhookFields(_ fields: [String: JSONValue], details: inout [APIError.Detail]) -> (
        String?, [WebhookEvent]?
    ) {
        var url: String?
        switch fields["webhook"] {
        case nil, .null?: break
        case .string(let text)?:
            if let problem = webhookPolicy.problem(with: text) {
                details.append(.init(path: "webhook", message: problem))
            } else {
                url = text
            }
        case let other?:
            details.append(
                .init(path: "webhook", message: "must be a string (an http or https URL), got \(other.typeName)"))
        }
        var events: [WebhookEvent]?
        switch fields["webhook_events"] {
        case nil, .null?: break
        case .array(let items)?:
            let names = WebhookEvent.allCases.map(\.rawValue).joined(separator: ", ")
            var chosen: [WebhookEvent] = []
            for (index, item) in items.enumerated() {
                guard let name = item.stringValue, let event = WebhookEvent(rawValue: name) else {
                    details.append(.init(path: "webhook_events[\(index)]", message: "must be one of \(names)"))
                    continue
                }
                if !chosen.contains(event) { chosen.append(event) }
            }
            if items.isEmpty {
                details.append(.init(path: "webhook_events", message: "must name at least one of \(names)"))
            }
            events = chosen
            if fields["webhook"] == nil || fields["webhook"] == .null {
                details.append(.init(path: "webhook_events", message: "needs a webhook to deliver them to"))
            }
        case let other?:
            details.append(.init(path: "webhook_events", message: "must be an array, got \(other.typeName)"))
        }
        guard let url else { return (nil, nil) }
        return (url, events ?? WebhookEvent.defaults)
    }

    private func integer(_ value: JSONValue?, path: String, range: ClosedRange<Int>, details: inout [APIError.Detail])
        -> Int?
    {
        guard let value, value != .null else { return nil }
        guard let number = value.intValue else {
            details.append(
                .init(
                    path: path,
                    message: "must be an integer, got \(value.typeName == "number" ? "a fraction" : value.typeName)"))
            return nil
        }
        guard range.contains(number) else {
            details.append(
                .init(path: path, message: "must be between \(range.lowerBound) and \(range.upperBound), got \(number)")
            )
            return nil
        }
        return number
    }

    private func object(_ value: JSONValue?, path: String, details: inout [APIError.Detail]) -> [String: JSONValue] {
        switch value {
        case nil, .null?: return [:]
        case .object(let fields)?: return fields
        case let other?:
            details.append(.init(path: path, message: "must be an object, got \(other.typeName)"))
            return [:]
        }
    }
}
