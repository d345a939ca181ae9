import Foundation
import GenGateCore
import GenGateStore
import Hummingbird

/// A/B experiments: made, listed, changed while drafts, started, paused and completed by an
/// admin (`/v1/admin/experiments`); requests that name one instead of a model are enrolled in it
/// (`enroll`); applications rate jobs (`POST /v1/generations/{id}/rating`); and the results say
/// whether a variant wins.
struct ExperimentRoutes: Sendable {
    let routes: GenerationRoutes

    var store: any GenerationStore { routes.store }

    func register(on group: RouterGroup<GateContext>) {
        group.post("admin/experiments") { request, context in try await create(request, context) }
        group.get("admin/experiments") { request, context in try await list(request, context) }
        group.get("admin/experiments/:id") { _, context in try await show(context) }
        group.patch("admin/experiments/:id") { request, context in try await update(request, context) }
        group.delete("admin/experiments/:id") { _, context in try await delete(context) }
        group.post("admin/experiments/:id/start") { _, context in
            try await move(context, to: .running, from: [.draft, .paused])
        }
        group.post("admin/experiments/:id/pause") { _, context in
            try await move(context, to: .paused, from: [.running])
        }
        group.post("admin/experiments/:id/complete") { _, context in
            try await move(context, to: .completed, from: [.running, .paused])
        }
        group.get("admin/experiments/:id/results") { _, context in try await results(context) }
        group.post("generations/:id/rating") { request, context in try await rate(request, context) }
    }

    // MARK: Admin

    func view(_ experiment: Experiment) -> [String: JSONValue] {
        var fields: [String: JSONValue] = [
            "id": .string(experiment.id), "object": .string("experiment"), "name": .string(experiment.name),
            "description": .string(experiment.description), "status": .string(experiment.status.rawValue),
            "created_at": .string(Timestamp.format(experiment.createdAt)),
            "updated_at": .string(Timestamp.format(experiment.updatedAt)),
            "started_at": experiment.startedAt.map { .string(Timestamp.format($0)) } ?? .null,
            "ended_at": experiment.endedAt.map { .string(Timestamp.format($0)) } ?? .null,
        ]
        if case .object(let definition) = experiment.definitionJSON {
            for (name, value) in definition { fields[name] = value }
        }
        return fields
    }

    /// The variants and metrics of a body, checked, with every problem listed.
    func definition(_ fields: [String: JSONValue]) -> (
        variants: [Experiment.Variant], metrics: [Experiment.Metric], details: [APIError.Detail]
    ) {
        let providers = routes.environment.providers
        let parsed = Experiment.parseDefinition(fields) { model in
            providers.route(model) != nil || providers.knownModel(model) != nil ? nil : "unknown model \(model)"
        }
        let details = parsed.problems.map { APIError.Detail(path: $0.path, message: $0.message) }
        return (parsed.variants, parsed.metrics, details)
    }

    func body(_ request: Request, _ context: GateContext) async throws -> [String: JSONValue] {
        let body = try await JSONBody.read(
            request, context: context, limit: routes.environment.config.http.maxBodyBytes
        ).value
        guard case .object(let fields) = body else { throw APIError.invalidRequest("the body must be a JSON object") }
        return fields
    }

    func description(_ fields: [String: JSONValue], details: inout [APIError.Detail]) -> String? {
        switch fields["description"] {
        case nil: return nil
        case .null?: return ""
        case .string(let text)? where text.utf8.count <= 2_000: return text
        default:
            details.append(.init(path: "description", message: "must be a string of at most 2000 bytes"))
            return nil
        }
    }

    func create(_ request: Request, _ context: GateContext) async throws -> Response {
        _ = try context.requireAdmin()
        let fields = try await body(request, context)
        var details: [APIError.Detail] = []
        for name in fields.keys.sorted() where !["name", "description", "variants", "metrics"].contains(name) {
            details.append(.init(path: name, message: "unknown field"))
        }
        let name = fields["name"]?.stringValue ?? ""
        if let problem = Experiment.nameProblem(name) { details.append(.init(path: "name", message: problem)) }
        let text = description(fields, details: &details) ?? ""
        let (variants, metrics, problems) = definition(fields)
        details += problems
        guard details.isEmpty else { throw APIError.invalidRequest("invalid experiment", details: details) }
        let now = Date()
        let experiment = Experiment(
            id: Identifier.make("exp", at: now), name: name, description: text, variants: variants, metrics: metrics,
            createdAt: now)
        guard try await store.createExperiment(experiment) else {
            throw APIError.conflict("an experiment named \(name) exists already")
        }
        context.logger.notice("experiment made", metadata: ["experiment": "\(experiment.id)", "name": "\(name)"])
        return JSONResponse.make(
            status: .created, view(experiment), headers: [.location: "/v1/admin/experiments/\(experiment.id)"])
    }

    func list(_ request: Request, _ context: GateContext) async throws -> Response {
        _ = try context.requireAdmin()
        var details: [APIError.Detail] = []
        let (limit, cursor) = GenerationRoutes.page(request, idPrefix: "exp_", details: &details)
        guard details.isEmpty else { throw APIError.invalidRequest("invalid query", details: details) }
        let rows = try await store.experiments(after: cursor, limit: limit + 1)
        return AlertRoutes.page(rows, limit: limit, id: \.id, json: view)
    }

    func found(_ context: GateContext) async throws -> Experiment {
        guard let id = context.parameters.get("id"), id.count <= 64,
            let experiment = try await store.experiment(id)
        else { throw APIError.notFound("no such experiment") }
        return experiment
    }

    func show(_ context: GateContext) async throws -> Response {
        _ = try context.requireAdmin()
        return JSONResponse.make(status: .ok, view(try await found(context)))
    }

    /// A draft's description, variants and metrics may change; a started experiment's
    /// description only (its variants are what its jobs were shared by).
    func update(_ request: Request, _ context: GateContext) async throws -> Response {
        _ = try context.requireAdmin()
        var experiment = try await found(context)
        let fields = try await body(request, context)
        var details: [APIError.Detail] = []
        for name in fields.keys.sorted() where !["description", "variants", "metrics"].contains(name) {
            details.append(
                .init(path: name, message: "unknown field (description, variants and metrics can be changed)"))
        }
        if let text = description(fields, details: &details) { experiment.description = text }
        let changesDefinition = fields["variants"] != nil || fields["metrics"] != nil
        if changesDefinition {
            guard experiment.status == .draft else {
                throw APIError.conflict(
                    "experiment \(experiment.name) is \(experiment.status.rawValue): only a draft's variants and metrics can change"
                )
            }
            var merged = fields
            if case .object(let current) = experiment.definitionJSON {
                for (name, value) in current where merged[name] == nil { merged[name] = value }
            }
            let (variants, metrics, problems) = definition(merged)
            details += problems
            experiment.variants = variants
            experiment.metrics = metrics
        }
        guard details.isEmpty else { throw APIError.invalidRequest("invalid experiment", details: details) }
        experiment.updatedAt = Date()
        // Only from the status read: a start, pause or completion meanwhile is never undone.
        guard let updated = try await store.updateExperiment(experiment, from: [experiment.status]) else {
            throw APIError.conflict("experiment \(experiment.name) changed meanwhile; read it again")
        }
        return JSONResponse.make(status: .ok, view(updated))
    }

    func delete(_ context: GateContext) async throws -> Response {
        _ = try context.requireAdmin()
        let experiment = try await found(context)
        guard try await store.deleteExperiment(id: experiment.id) else {
            throw APIError.conflict(
                "experiment \(experiment.name) is \(experiment.status.rawValue): only a draft no job was sent to can be deleted; complete it instead"
            )
        }
        return JSONResponse.make(status: .ok, ["id": .string(experiment.id), "deleted": .bool(true)])
    }

    func move(_ context: GateContext, to status: Experiment.Status, from: Set<Experiment.Status>) async throws
        -> Response
    {
        _ = try context.requireAdmin()
        var experiment = try await found(context)
        if experiment.status == status { return JSONResponse.make(status: .ok, view(experiment)) }
        guard from.contains(experiment.status) else {
            throw APIError.conflict(
                "experiment \(experiment.name) is \(experiment.status.rawValue); it cannot be moved to \(status.rawValue)"
            )
        }
        let now = Date()
        let before = experiment.status
        experiment.status = status
        experiment.updatedAt = now
        if status == .running, experiment.startedAt == nil { experiment.startedAt = now }
        if status == .completed { experiment.endedAt = now }
        guard let moved = try await store.updateExperiment(experiment, from: [before]) else {
            throw APIError.conflict("experiment \(experiment.name) changed meanwhile; read it again")
        }
        context.logger.notice(
            "experiment moved", metadata: ["experiment": "\(moved.id)", "status": "\(status.rawValue)"])
        return JSONResponse.make(status: .ok, view(moved))
    }

    func results(_ context: GateContext) async throws -> Response {
        _ = try context.requireAdmin()
        let experiment = try await found(context)
        let samples = try await store.experimentSamples(id: experiment.id)
        let results = ExperimentResults(experiment, samples: samples)
        guard case .object(let answer) = results.json(currency: routes.environment.config.pricing.currency, now: Date())
        else { throw APIError.internalError }
        return JSONResponse.make(status: .ok, answer)
    }

    // MARK: Requests

    /// A request that names an `experiment` (by name or id) instead of a `model`, turned into the
    /// request its variant makes: the variant's model, its params over the request's, its prompt
    /// template around the request's prompt. The variant is the one the request's `subject`
    /// gets (else its Idempotency-Key's, else the job's id: `fallbackSubject`). A paused or
    /// completed experiment sends requests to its first variant (the control), not enrolled; a
    /// draft refuses them. Requests without `experiment` are returned as they are.
    func enroll(_ body: JSONValue, fallbackSubject: String, path: String = "") async throws -> (
        JSONValue, ExperimentAssignment?
    ) {
        guard case .object(var fields) = body, fields["experiment"] != nil || fields["subject"] != nil else {
            return (body, nil)
        }
        var details: [APIError.Detail] = []
        var subject = fallbackSubject
        switch fields["subject"] {
        case nil: break
        case .string(let text)? where !text.isEmpty && text.utf8.count <= 200: subject = text
        default: details.append(.init(path: path + "subject", message: "must be a string of 1 to 200 bytes"))
        }
        guard case .string(let name)? = fields["experiment"], !name.isEmpty, name.count <= 64 else {
            details.append(
                .init(
                    path: path + "experiment",
                    message: fields["experiment"] == nil
                        ? "required with subject: the experiment (name or id) to take part in"
                        : "must be an experiment's name or id"))
            throw APIError.invalidRequest("invalid request", details: details)
        }
        if fields["model"] != nil {
            details.append(.init(path: path + "model", message: "name a model or an experiment, not both"))
        }
        guard details.isEmpty else { throw APIError.invalidRequest("invalid request", details: details) }
        guard let experiment = try await store.experiment(name) else {
            throw APIError.invalidRequest(
                "no experiment \(name)", details: [.init(path: path + "experiment", message: "no such experiment")])
        }
        let assignment: ExperimentAssignment?
        let variant: Experiment.Variant
        switch experiment.status {
        case .draft:
            throw APIError.conflict("experiment \(experiment.name) has not started; start it first")
        case .running:
            variant = experiment.variants[experiment.variantIndex(subject: subject)]
            assignment = ExperimentAssignment(experimentID: experiment.id, variant: variant.name)
        case .paused, .completed:
            guard let control = experiment.variants.first else {
                throw APIError.conflict("experiment \(experiment.name) has no variants")
            }
            variant = control
            assignment = nil
        }
        fields["experiment"] = nil
        fields["subject"] = nil
        fields["model"] = .string(variant.model)
        // Params that are not an object are left for the validator to refuse.
        switch fields["params"] {
        case nil, .null?, .object?:
            guard !variant.params.isEmpty else { break }
            var params: [String: JSONValue] = [:]
            if case .object(let given)? = fields["params"] { params = given }
            for (key, value) in variant.params { params[key] = value }
            fields["params"] = .object(params)
        default:
            break
        }
        if case .string(let prompt)? = fields["prompt"] { fields["prompt"] = .string(variant.prompt(for: prompt)) }
        return (.object(fields), assignment)
    }

    /// `POST /v1/generations/{id}/rating {"rating": 1–5, "feedback"?}`: what the application
    /// (or its user) thought of a completed job; a second rating replaces the first.
    func rate(_ request: Request, _ context: GateContext) async throws -> Response {
        let key = try context.requireKey()
        let generation = try await routes.owned(context)
        let fields = try await body(request, context)
        var details: [APIError.Detail] = []
        for name in fields.keys.sorted() where !["rating", "feedback"].contains(name) {
            details.append(.init(path: name, message: "unknown field"))
        }
        var value = 0
        switch fields["rating"] {
        case .number(let number)? where number == number.rounded() && (1...5).contains(number): value = Int(number)
        default: details.append(.init(path: "rating", message: "required: a whole number from 1 to 5"))
        }
        var feedback: String?
        switch fields["feedback"] {
        case nil, .null?: break
        case .string(let text)? where text.utf8.count <= 2_000: feedback = text
        default: details.append(.init(path: "feedback", message: "must be a string of at most 2000 bytes"))
        }
        guard details.isEmpty else { throw APIError.invalidRequest("invalid rating", details: details) }
        guard generation.status == .completed else {
            throw APIError.conflict(
                "generation \(generation.id) is \(generation.status.rawValue): only a completed one can be rated")
        }
        let rating = Rating(
            generationID: generation.id, ownerKeyID: key.id, value: value, feedback: feedback, ratedAt: Date())
        guard try await store.rate(rating) else { throw APIError.notFound("no such generation") }
        return JSONResponse.make(status: .ok, Self.view(rating))
    }

    static func view(_ rating: Rating) -> [String: JSONValue] {
        [
            "generation_id": .string(rating.generationID), "rating": .number(Double(rating.value)),
            "feedback": rating.feedback.map(JSONValue.string) ?? .null,
            "rated_at": .string(Timestamp.format(rating.ratedAt)),
        ]
    }
}
