import Foundation
import GenGateBus
import GenGateCore
import GenGateJobs
import GenGateRuntime
import GenGateStore
import Hummingbird

/// Batches: many generations in one call (`POST /v1/batches`), followed together
/// (`GET /v1/batches/{id}`) and cancelled together (`POST /v1/batches/{id}/cancel`).
struct BatchRoutes: Sendable {
    let routes: GenerationRoutes

    var store: any GenerationStore { routes.store }
    var config: GenGateConfig { routes.environment.config }

    static let priorities = ["low": -1, "normal": 0, "high": 1]
    static let knownFields: Set<String> = [
        "requests", "max_concurrency", "stop_on_error", "priority", "metadata", "estimate_only",
    ]
    /// Problems listed at most, of a batch that has many.
    static let maxDetails = 100

    func register(on group: RouterGroup<GateContext>) {
        group.post("batches") { request, context in try await create(request, context) }
        group.get("batches") { request, context in try await list(request, context) }
        group.get("batches/:id") { request, context in try await show(request, context) }
        group.post("batches/:id/cancel") { _, context in try await cancel(context) }
    }

    /// 202 with the batch, once it and all its jobs are committed (one transaction: all or none).
    /// Every request is checked as `POST /v1/generations` checks one; problems are listed with
    /// their request's place (`requests[3].prompt`).
    func create(_ request: Request, _ context: GateContext) async throws -> Response {
        let key = try context.requireKey()
        let idempotencyKey = try GenerationRoutes.idempotencyKey(request)
        let body = try await JSONBody.read(request, context: context, limit: config.batches.maxBodyBytes).value
        guard case .object(let fields) = body else {
            throw APIError.invalidRequest(
                "the body must be a JSON object", details: [.init(path: "", message: "expected an object")])
        }
        var details: [APIError.Detail] = []
        for name in fields.keys.sorted() where !Self.knownFields.contains(name) {
            details.append(.init(path: name, message: "unknown field"))
        }
        var window = config.batches.defaultMaxConcurrency
        switch fields["max_concurrency"] {
        case nil, .null?: break
        case let value?:
            if let number = value.intValue, (1...config.batches.maxConcurrency).contains(number) {
                window = number
            } else {
                details.append(
                    .init(
                        path: "max_concurrency",
                        message: "must be an integer from 1 to \(config.batches.maxConcurrency)"))
            }
        }
        var estimateOnly = false
        switch fields["estimate_only"] {
        case nil, .null?: break
        case .bool(let flag)?: estimateOnly = flag
        case let other?:
            details.append(.init(path: "estimate_only", message: "must be a boolean, got \(other.typeName)"))
        }
        var stopOnError = false
        switch fields["stop_on_error"] {
        case nil, .null?: break
        case .bool(let flag)?: stopOnError = flag
        case let other?:
            details.append(.init(path: "stop_on_error", message: "must be a boolean, got \(other.typeName)"))
        }
        var priority = 0
        switch fields["priority"] {
        case nil, .null?: break
        case .string(let name)? where Self.priorities[name] != nil: priority = Self.priorities[name]!
        case _?: details.append(.init(path: "priority", message: "must be one of low, normal, high"))
        }
        var metadata: [String: JSONValue] = [:]
        switch fields["metadata"] {
        case nil, .null?: break
        case .object(let object)?: metadata = object
        case let other?: details.append(.init(path: "metadata", message: "must be an object, got \(other.typeName)"))
        }
        if let size = try? JSONCoding.encode(JSONValue.object(metadata)).count,
            size > SubmissionValidator.maxMetadataBytes
        {
            details.append(
                .init(
                    path: "metadata", message: "must be at most \(SubmissionValidator.maxMetadataBytes) bytes of JSON"))
        }
        // Ids first: a request's images may name an earlier request's outputs (a chain), and a
        // request in an experiment is placed by its job's id when it names no subject.
        let now = Date()
        let count = fields["requests"]?.arrayValue?.count ?? 0
        let ids = (0..<min(count, config.batches.maxRequests)).map { _ in Identifier.make("gen", at: now) }
        var validated: [SubmissionValidator.Validated] = []
        switch fields["requests"] {
        case .array(let items)? where !items.isEmpty && items.count <= config.batches.maxRequests:
            let experiments = ExperimentRoutes(routes: routes)
            for (index, item) in items.enumerated() {
                do {
                    // A request naming an experiment: its subject, else the batch's key and its
                    // place (a retry repeats them), else its job's id.
                    let (body, experiment) = try await experiments.enroll(
                        item, fallbackSubject: idempotencyKey.map { "\($0)#\(index)" } ?? ids[index])
                    var one = try routes.validator.validate(body)
                    one.experiment = experiment
                    validated.append(one)
                } catch let error as APIError {
                    let inner =
                        error.details.isEmpty ? [APIError.Detail(path: "", message: error.message)] : error.details
                    for detail in inner where details.count < Self.maxDetails {
                        let path = detail.path.isEmpty ? "requests[\(index)]" : "requests[\(index)].\(detail.path)"
                        details.append(.init(path: path, message: detail.message))
                    }
                }
            }
        case .array(let items)?:
            details.append(
                .init(
                    path: "requests",
                    message: "must hold 1 to \(config.batches.maxRequests) requests, got \(items.count)"))
        case nil, .null?:
            details.append(.init(path: "requests", message: "required: an array of generation requests"))
        case let other?:
            details.append(.init(path: "requests", message: "must be an array, got \(other.typeName)"))
        }
        guard details.isEmpty else { throw APIError.invalidRequest("invalid batch", details: details) }
        if estimateOnly {
            // What the batch would cost, nothing submitted (images are checked for their form only).
            let prices = routes.environment.config.pricing.table
            var total = 0.0
            var items: [JSONValue] = []
            var unpriced: [String] = []
            for (index, item) in validated.enumerated() {
                let estimate = GenerationRoutes.estimate(item, prices: prices)
                total += estimate.amount
                if !estimate.priced, !unpriced.contains(item.model.id) { unpriced.append(item.model.id) }
                items.append(
                    .object([
                        "index": .number(Double(index)), "model": .string(item.model.id), "estimate": estimate.json,
                    ]))
            }
            return JSONResponse.make(
                status: .ok,
                [
                    "object": .string("estimate"), "currency": .string(prices.currency),
                    "total": .number(Money.rounded(total)), "requests": .array(items),
                    "unpriced_models": .array(unpriced.map(JSONValue.string)),
                ])
        }
        let siblings = GenerationRoutes.Siblings(ids: ids, requests: validated)
        for index in validated.indices where !validated[index].images.isEmpty {
            validated[index] = try await routes.resolveImages(
                validated[index], owner: key.id, path: "requests[\(index)].", position: index, siblings: siblings)
        }

        let batch = Batch(
            id: Identifier.make("bat", at: now), ownerKeyID: key.id, total: validated.count,
            maxConcurrency: window, stopOnError: stopOnError, priority: priority, metadata: metadata, createdAt: now)
        var generations: [Generation] = []
        var events: [Event] = []
        generations.reserveCapacity(validated.count)
        events.reserveCapacity(validated.count)
        for (index, item) in validated.enumerated() {
            let (generation, event) = GenerationRoutes.make(
                item, owner: key.id, now: now, defaultDeadline: config.jobs.defaultDeadlineSeconds,
                prices: config.pricing.table, batchID: batch.id, priority: priority, id: ids[index])
            generations.append(generation)
            events.append(event)
        }
        let idempotency = try idempotencyKey.map {
            IdempotencyKey(
                key: $0, requestHash: Digest.sha256Hex(try JSONCoding.encode(body)),
                window: config.http.idempotencyWindowSeconds)
        }
        let outcome: InsertOutcome
        do {
            outcome = try await store.insertBatch(
                batch, generations: generations, events: events, idempotency: idempotency)
        } catch let refusal as BudgetExceeded {
            throw APIError.budgetExceeded(refusal, currency: config.pricing.currency)
        } catch let refusal as UnpricedModel {
            throw APIError.unpriced(refusal)
        } catch {
            context.logger.error("could not commit a batch", metadata: ["error": "\(error)"])
            throw APIError.unavailable
        }
        switch outcome {
        case .inserted: break
        case .replayed(let original):
            guard let found = try await store.batch(id: original) else { throw APIError.unavailable }
            return JSONResponse.make(
                status: .accepted, try await view(found, jobsAfter: -1, jobsLimit: 0),
                headers: [.location: "/v1/batches/\(original)", GenerationRoutes.replayed: "true"])
        case .keyReused(let original):
            throw APIError(
                .idempotencyKeyReused,
                "Idempotency-Key \(idempotencyKey ?? "") was used for a different request (\(original)); use a new key for a new request"
            )
        }
        routes.environment.publish(events)
        let held = BatchRoom.held(generations, maxConcurrency: window)
        for (index, generation) in generations.enumerated() where !held[index] && generation.status != .waiting {
            routes.dispatch.send(generationID: generation.id, reason: "created in a batch")
        }
        // Steps waiting for a job outside the batch: that job may have ended between the look and
        // the commit.
        let batchIDs = Set(ids)
        for generation in generations where generation.status == .waiting {
            if let parent = generation.waitsFor, !batchIDs.contains(parent) {
                await routes.jobs.releaseWaiting(generation.id)
            }
        }
        context.logger.info(
            "batch created", metadata: ["batch": "\(batch.id)", "jobs": "\(batch.total)", "window": "\(window)"])
        return JSONResponse.make(
            status: .accepted, try await view(batch, jobsAfter: -1, jobsLimit: 0),
            headers: [.location: "/v1/batches/\(batch.id)"])
    }

    func show(_ request: Request, _ context: GateContext) async throws -> Response {
        let batch = try await owned(context)
        let query = request.uri.queryParameters
        var after = -1
        var limit = config.batches.maxRequests
        var details: [APIError.Detail] = []
        if let text = query.get("jobs_after") {
            if let value = Int(text), value >= -1 {
                after = value
            } else {
                details.append(.init(path: "jobs_after", message: "must be a job's index (an integer ≥ 0)"))
            }
        }
        if let text = query.get("jobs_limit") {
            if let value = Int(text), (0...config.batches.maxRequests).contains(value) {
                limit = value
            } else {
                details.append(
                    .init(path: "jobs_limit", message: "must be an integer from 0 to \(config.batches.maxRequests)"))
            }
        }
        guard details.isEmpty else { throw APIError.invalidRequest("invalid batch query", details: details) }
        return JSONResponse.make(status: .ok, try await view(batch, jobsAfter: after, jobsLimit: limit))
    }

    func list(_ request: Request, _ context: GateContext) async throws -> Response {
        let key = try context.requireKey()
        var details: [APIError.Detail] = []
        let (limit, cursor) = GenerationRoutes.page(request, idPrefix: "bat_", details: &details)
        guard details.isEmpty else { throw APIError.invalidRequest("invalid list query", details: details) }
        let rows = try await store.batches(ownerKeyID: key.id, after: cursor, limit: limit + 1)
        let page = Array(rows.prefix(limit))
        var data: [JSONValue] = []
        for batch in page { data.append(.object(try await view(batch, jobsAfter: -1, jobsLimit: 0))) }
        return JSONResponse.make(
            status: .ok,
            [
                "object": .string("list"), "data": .array(data),
                "next_cursor": rows.count > limit ? .string(page.last!.id) : .null,
            ])
    }

    /// Stops the batch: jobs not started are cancelled at once, running ones as soon as they can
    /// be (their provider tasks stopped where the provider allows). Finished jobs stay as they are.
    func cancel(_ context: GateContext) async throws -> Response {
        let batch = try await owned(context)
        try await routes.jobs.stopBatch(batch.id, reason: .client)
        let stopped = try await store.batch(id: batch.id) ?? batch
        return JSONResponse.make(status: .ok, try await view(stopped, jobsAfter: -1, jobsLimit: 0))
    }

    func owned(_ context: GateContext) async throws -> Batch {
        let key = try context.requireKey()
        guard let id = context.parameters.get("id"), id.count <= 64, let batch = try await store.batch(id: id),
            batch.ownerKeyID == key.id
        else {
            throw APIError.notFound("no batch \(context.parameters.get("id") ?? "") for this key")
        }
        return batch
    }

    /// A batch as the API shows it: its counts, progress and status, and its jobs in order.
    func view(_ batch: Batch, jobsAfter: Int, jobsLimit: Int) async throws -> [String: JSONValue] {
        let (counts, held) = try await store.batchCounts(id: batch.id)
        let count = { (statuses: [GenerationStatus]) in statuses.reduce(0) { $0 + (counts[$1] ?? 0) } }
        let completed = count([.completed])
        let ended = count([.completed, .failed, .cancelled])
        let status: String =
            if ended < batch.total {
                "processing"
            } else if completed == batch.total {
                "completed"
            } else if batch.stopReason == "client" {
                "cancelled"
            } else {
                completed == 0 ? "failed" : "partial_failed"
            }
        var view: [String: JSONValue] = [
            "id": .string(batch.id), "object": .string("batch"), "status": .string(status),
            "total": .number(Double(batch.total)),
            "counts": .object([
                "queued": .number(Double(held)), "waiting": .number(Double(count([.waiting]))),
                "pending": .number(Double(count([.pending]))),
                "running": .number(Double(count([.dispatching, .running, .uploading, .retryWait]))),
                "completed": .number(Double(completed)), "failed": .number(Double(count([.failed]))),
                "cancelled": .number(Double(count([.cancelled]))),
            ]),
            "progress": .number((Double(ended) * 100 / Double(max(1, batch.total))).rounded(.down)),
            "max_concurrency": .number(Double(batch.maxConcurrency)), "stop_on_error": .bool(batch.stopOnError),
            "priority": .string(Self.priorities.first { $0.value == batch.priority }?.key ?? "normal"),
            "metadata": .object(batch.metadata), "created_at": .string(Timestamp.format(batch.createdAt)),
            "stopped_at": GenerationView.time(batch.stoppedAt),
            "stop_reason": batch.stopReason.map(JSONValue.string) ?? .null,
        ]
        if jobsLimit > 0 {
            let jobs = try await store.batchJobs(id: batch.id, after: jobsAfter, limit: jobsLimit)
            view["jobs"] = .array(
                jobs.map { job in
                    var fields: [String: JSONValue] = [
                        "index": .number(Double(job.index)), "id": .string(job.generationID),
                        "status": .string(job.held && job.status == .pending ? "queued" : job.status.rawValue),
                    ]
                    if let code = job.errorCode { fields["error_code"] = .string(code) }
                    return .object(fields)
                })
        }
        return view
    }
}
