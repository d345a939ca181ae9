import Foundation

/// An A/B experiment: requests that name it instead of a model are shared among its variants
/// (each a model, parameter overrides and an optional prompt template) in the percentages it
/// sets, by a hash of the experiment and the caller's subject, and its results compare the
/// variants on the metrics it names.
public struct Experiment: Sendable, Equatable {
    public enum Status: String, Sendable, CaseIterable {
        case draft, running, paused, completed
    }

    public struct Variant: Sendable, Equatable {
        public var name: String
        public var model: String
        /// Merged over the request's `params` (the variant's win).
        public var params: [String: JSONValue]
        /// The prompt sent, with `{prompt}` standing for the request's; nil: the request's.
        public var promptTemplate: String?
        /// Percent of the experiment's requests.
        public var traffic: Double

        public init(
            name: String, model: String, params: [String: JSONValue] = [:], promptTemplate: String? = nil,
            traffic: Double
        ) {
            self.name = name
            self.model = model
            self.params = params
            self.promptTemplate = promptTemplate
            self.traffic = traffic
        }

        /// The prompt this variant sends for `prompt`.
        public func prompt(for prompt: String) -> String {
            promptTemplate.map { $0.replacingOccurrences(of: "{prompt}", with: prompt) } ?? prompt
        }
    }

    public enum MetricKind: String, Sendable, CaseIterable {
        case successRate = "success_rate"
        case duration
        case cost
        case rating

        /// The better direction when a metric does not say.
        public var naturalGoal: Goal {
            switch self {
            case .successRate, .rating: return .maximize
            case .duration, .cost: return .minimize
            }
        }
    }

    public enum Goal: String, Sendable {
        case maximize, minimize
    }

    public struct Metric: Sendable, Equatable {
        public var kind: MetricKind
        public var goal: Goal
        public var primary: Bool

        public init(kind: MetricKind, goal: Goal? = nil, primary: Bool = false) {
            self.kind = kind
            self.goal = goal ?? kind.naturalGoal
            self.primary = primary
        }
    }

    public var id: String
    /// What requests name it by: lower-case letters, digits, `.`, `_` and `-`.
    public var name: String
    public var description: String
    public var status: Status
    public var variants: [Variant]
    public var metrics: [Metric]
    public var createdAt: Date
    public var updatedAt: Date
    public var startedAt: Date?
    public var endedAt: Date?

    public init(
        id: String, name: String, description: String = "", status: Status = .draft, variants: [Variant],
        metrics: [Metric], createdAt: Date, updatedAt: Date? = nil, startedAt: Date? = nil, endedAt: Date? = nil
    ) {
        self.id = id
        self.name = name
        self.description = description
        self.status = status
        self.variants = variants
        self.metrics = metrics
        self.createdAt = createdAt
        self.updatedAt = updatedAt ?? createdAt
        self.startedAt = startedAt
        self.endedAt = endedAt
    }

    public var primaryMetric: Metric { metrics.first(where: \.primary) ?? Metric(kind: .successRate, primary: true) }

    /// The metrics compared when an experiment names none: success rate first (primary), then
    /// duration, cost and rating.
    public static let defaultMetrics = [
        Metric(kind: .successRate, primary: true), Metric(kind: .duration), Metric(kind: .cost),
        Metric(kind: .rating),
    ]

    /// The variant a subject gets: the first 64 bits of SHA-256(`id`, `subject`) as a fraction of
    /// 2⁶⁴, placed on the variants' cumulative percentages. The same subject gets the same
    /// variant for as long as the variants stay as they are.
    public func variantIndex(subject: String) -> Int {
        let digest = Digest.sha256(Data("\(id)\u{0}\(subject)".utf8))
        var bits: UInt64 = 0
        for byte in digest.prefix(8) { bits = bits << 8 | UInt64(byte) }
        let point = Double(bits >> 11) / Double(1 << 53) * 100
        var cumulative = 0.0
        for (index, variant) in variants.enumerated() {
            cumulative += variant.traffic
            if point < cumulative { return index }
        }
        // Rounding at the very top: the last variant with traffic.
        return variants.lastIndex { $0.traffic > 0 } ?? 0
    }

    /// What may be asked of an experiment's definition, as the API and the store spell it.
    public var definitionJSON: JSONValue {
        .object([
            "variants": .array(
                variants.map { variant in
                    var fields: [String: JSONValue] = [
                        "name": .string(variant.name), "model": .string(variant.model),
                        "params": .object(variant.params), "traffic": .number(variant.traffic),
                    ]
                    fields["prompt_template"] = variant.promptTemplate.map(JSONValue.string) ?? .null
                    return .object(fields)
                }),
            "metrics": .array(
                metrics.map {
                    .object([
                        "name": .string($0.kind.rawValue), "goal": .string($0.goal.rawValue),
                        "primary": .bool($0.primary),
                    ])
                }),
        ])
    }

    /// Names requests use: 1 to 64 of lower-case letters, digits, `.`, `_`, `-`, starting with a
    /// letter or digit (so never mistaken for an id, which has an underscore after three letters).
    public static func nameProblem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        guard (1...64).contains(bytes.count),
            bytes.allSatisfy({
                (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || [0x2E, 0x5F, 0x2D].contains($0)
            }),
            let first = bytes.first, (0x61...0x7A).contains(first) || (0x30...0x39).contains(first)
        else { return "must be 1 to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit" }
        if name.hasPrefix("exp_") { return "must not start with exp_ (experiment ids do)" }
        return nil
    }

    /// Reads `variants` and `metrics` from a definition; problems are listed by path. Models are
    /// checked by `knownModel` (nil: known).
    public static func parseDefinition(
        _ fields: [String: JSONValue], knownModel: (String) -> String?
    ) -> (variants: [Variant], metrics: [Metric], problems: [(path: String, message: String)]) {
        var problems: [(path: String, message: String)] = []
        var variants: [Variant] = []
        switch fields["variants"] {
        case .array(let items)? where (2...10).contains(items.count):
            for (index, item) in items.enumerated() {
                let path = "variants[\(index)]"
                guard case .object(let entry) = item else {
                    problems.append((path, "must be an object"))
                    continue
                }
                for key in entry.keys.sorted()
                where !["name", "model", "params", "prompt_template", "traffic"].contains(key) {
                    problems.append(("\(path).\(key)", "unknown field"))
                }
                let name = entry["name"]?.stringValue ?? ""
                if name.trimmingCharacters(in: .whitespaces).isEmpty || name.count > 100 {
                    problems.append(("\(path).name", "required: a string of 1 to 100 characters"))
                } else if variants.contains(where: { $0.name == name }) {
                    problems.append(("\(path).name", "another variant is named \(name)"))
                }
                let model = entry["model"]?.stringValue ?? ""
                if model.isEmpty {
                    problems.append(("\(path).model", "required: a model id"))
                } else if let problem = knownModel(model) {
                    problems.append(("\(path).model", problem))
                }
                var params: [String: JSONValue] = [:]
                switch entry["params"] {
                case nil, .null?: break
                case .object(let given)?: params = given
                case let other?: problems.append(("\(path).params", "must be an object, got \(other.typeName)"))
                }
                var template: String?
                switch entry["prompt_template"] {
                case nil, .null?: break
                case .string(let text)? where text.contains("{prompt}") && text.utf8.count <= 10_000:
                    template = text
                default:
                    problems.append(
                        ("\(path).prompt_template", "must be a string holding {prompt}, at most 10000 bytes"))
                }
                var traffic = 0.0
                switch entry["traffic"] {
                case .number(let percent)? where percent.isFinite && percent >= 0 && percent <= 100:
                    traffic = percent
                default:
                    problems.append(("\(path).traffic", "required: a percentage from 0 to 100"))
                }
                variants.append(
                    Variant(name: name, model: model, params: params, promptTemplate: template, traffic: traffic))
            }
            let total = variants.reduce(0) { $0 + $1.traffic }
            if problems.isEmpty, abs(total - 100) > 1e-6 {
                problems.append(("variants", "the traffic percentages must add up to 100, not \(total)"))
            }
        case .array(let items)?:
            problems.append(("variants", "must hold 2 to 10 variants, got \(items.count)"))
        case nil, .null?:
            problems.append(("variants", "required: 2 to 10 variants"))
        case let other?:
            problems.append(("variants", "must be an array, got \(other.typeName)"))
        }
        var metrics: [Metric] = []
        switch fields["metrics"] {
        case nil, .null?:
            metrics = defaultMetrics
        case .array(let items)? where !items.isEmpty && items.count <= MetricKind.allCases.count:
            for (index, item) in items.enumerated() {
                let path = "metrics[\(index)]"
                guard case .object(let entry) = item else {
                    problems.append((path, "must be an object"))
                    continue
                }
                for key in entry.keys.sorted() where !["name", "goal", "primary"].contains(key) {
                    problems.append(("\(path).\(key)", "unknown field"))
                }
                guard let kind = entry["name"]?.stringValue.flatMap(MetricKind.init) else {
                    problems.append(
                        (
                            "\(path).name",
                            "must be one of \(MetricKind.allCases.map(\.rawValue).joined(separator: ", "))"
                        ))
                    continue
                }
                if metrics.contains(where: { $0.kind == kind }) {
                    problems.append(("\(path).name", "\(kind.rawValue) is named twice"))
                }
                var goal: Goal?
                if let text = entry["goal"] {
                    goal = text.stringValue.flatMap(Goal.init)
                    if goal == nil { problems.append(("\(path).goal", "must be maximize or minimize")) }
                }
                var primary = false
                switch entry["primary"] {
                case nil: break
                case .bool(let flag)?: primary = flag
                case let other?: problems.append(("\(path).primary", "must be a boolean, got \(other.typeName)"))
                }
                metrics.append(Metric(kind: kind, goal: goal, primary: primary))
            }
            let primaries = metrics.filter(\.primary).count
            if primaries > 1 {
                problems.append(("metrics", "one metric is primary, not \(primaries)"))
            } else if primaries == 0, !metrics.isEmpty {
                metrics[0].primary = true  // the first named leads
            }
        case .array?:
            problems.append(("metrics", "must hold 1 to \(MetricKind.allCases.count) metrics"))
        case let other?:
            problems.append(("metrics", "must be an array, got \(other.typeName)"))
        }
        return (variants, metrics, problems)
    }

    /// Reads back what `definitionJSON` wrote.
    public static func decodeDefinition(_ json: JSONValue) -> (variants: [Variant], metrics: [Metric]) {
        guard case .object(let fields) = json else { return ([], []) }
        let parsed = parseDefinition(fields, knownModel: { _ in nil })
        return (parsed.variants, parsed.metrics)
    }
}

/// Which experiment a job is in, and which of its variants it got.
public struct ExperimentAssignment: Codable, Sendable, Equatable {
    public var experimentID: String
    public var variant: String

    public init(experimentID: String, variant: String) {
        self.experimentID = experimentID
        self.variant = variant
    }
}
