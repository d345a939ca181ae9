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

    static let maxPromptCharacters = 4_000
    static let maxMetadataBytes = 16_384
    static let sizeRange = 16...1_024
    static let knownFields: Set<String> = [
        "model", "prompt", "n", "seed", "width", "height", "params", "deadline_seconds", "metadata", "webhook",
        "webhook_events",
    ]

    /// What a valid submission is: the request, the model it starts on, and its fallback route
    /// (the alias's usable models in order; empty for a model named directly).
    struct Validated {
        var request: GenerationRequest
        var model: ModelInfo
        var route: [String]
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

        guard details.isEmpty, let model else {
            let summary = details.map { $0.path.isEmpty ? $0.message : "\($0.path): \($0.message)" }.joined(
                separator: "; ")
            throw APIError.invalidRequest("invalid generation request: \(summary)", details: details)
        }
        let request = GenerationRequest(
            model: route.isEmpty ? model.id : name, prompt: prompt, n: n, seed: seed, width: width, height: height,
            params: params,
            deadlineSeconds: deadline ?? jobs.deadlineSeconds(model: name, kind: model.kind, route: route),
            metadata: metadata, webhook: webhook, webhookEvents: webhookEvents)
        return Validated(request: request, model: model, route: route)
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
