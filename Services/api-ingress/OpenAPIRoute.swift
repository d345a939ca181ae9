import Foundation
import GenGateCore
import GenGateProviders
import GenGateRuntime
import Hummingbird

/// `GET /openapi.json`: the API's OpenAPI 3.1 document (docs/openapi.json), made this
/// deployment's own: its address as the server, and the models it serves as each `model`
/// field's choices (all of them for submissions and batches, by kind for the OpenAI endpoints).
enum OpenAPIRoute {
    static func document(providers: ProviderRegistry, config: GenGateConfig) throws -> Data {
        let baseURL = config.publicBaseURL
        var document = try JSONCoding.decode(JSONValue.self, from: Data(OpenAPIDocument.json.utf8))
        let usable = providers.models.values
        func choices(_ kinds: Set<ModelInfo.Kind>?) -> JSONValue {
            var names = usable.filter { kinds?.contains($0.kind) ?? true }.map(\.id)
            for (alias, _) in providers.aliases {
                guard let kind = providers.route(alias)?.first?.kind, kinds?.contains(kind) ?? true else { continue }
                names.append(alias)
            }
            return .object([
                "type": .string("string"), "enum": .array(names.sorted().map(JSONValue.string)),
                "description": .string("A model or fallback alias this deployment serves (`GET /v1/models`)."),
            ])
        }
        document = set(document, ["servers"], to: .array([.object(["url": .string(baseURL)])]))
        let request = ["components", "schemas", "GenerationRequest"]
        document = set(document, request + ["properties", "model"], to: choices(nil))
        document = set(
            document, request + ["properties", "deadline_seconds", "maximum"],
            to: .number(Double(config.jobs.maxDeadlineSeconds)))
        // What depends on the model: how many outputs it makes, and whether it takes a size.
        var rules: [JSONValue] = []
        func when(_ models: [String], then: [String: JSONValue]) {
            guard !models.isEmpty else { return }
            rules.append(
                .object([
                    "if": .object([
                        "properties": .object([
                            "model": .object(["enum": .array(models.sorted().map(JSONValue.string))])
                        ]),
                        "required": .array([.string("model")]),
                    ]),
                    "then": .object(["properties": .object(then)]),
                ]))
        }
        var byMax: [Int: [String]] = [:]
        for model in usable { byMax[model.maxOutputs, default: []].append(model.id) }
        for alias in providers.aliases.keys {
            if let route = providers.route(alias), let least = route.map(\.maxOutputs).min() {
                byMax[least, default: []].append(alias)
            }
        }
        for (most, models) in byMax.sorted(by: { $0.key < $1.key }) where most < 10 {
            when(models, then: ["n": .object(["maximum": .number(Double(most))])])
        }
        let texts =
            usable.filter { $0.kind == .text }.map(\.id)
            + providers.aliases.keys.filter { providers.route($0)?.first?.kind == .text }
        when(texts, then: ["width": .bool(false), "height": .bool(false)])
        document = set(document, request + ["allOf"], to: .array(rules))
        let batch = ["components", "schemas", "BatchRequest", "properties"]
        document = set(
            document, batch + ["requests", "maxItems"], to: .number(Double(config.batches.maxRequests)))
        document = set(
            document, batch + ["max_concurrency", "maximum"], to: .number(Double(config.batches.maxConcurrency)))
        let body = ["requestBody", "content", "application/json", "schema", "properties", "model"]
        document = set(document, ["paths", "/v1/images/generations", "post"] + body, to: choices([.image]))
        document = set(document, ["paths", "/v1/chat/completions", "post"] + body, to: choices([.text]))
        return try JSONCoding.encode(document)
    }

    /// `value` with the object member at `path` set to `new` (objects on the way must exist).
    static func set(_ value: JSONValue, _ path: [String], to new: JSONValue) -> JSONValue {
        guard let first = path.first else { return new }
        guard case .object(var fields) = value, let inner = fields[first] ?? (path.count == 1 ? .null : nil) else {
            return value
        }
        fields[first] = set(inner, Array(path.dropFirst()), to: new)
        return .object(fields)
    }
}
