import Foundation
import GenGateBus
import GenGateCore
import AsyncHTTPClient
import GenGateJobs
import GenGateObjects
import GenGateProviders
import GenGateRuntime
import GenGateStore
import HTTPTypes
import Hummingbird
import NIOCore

/// The application-facing API: submit, read, list, cancel, and fetch outputs. A key sees only
/// its own generations; anyone else's are answered 404, as if they did not exist.
struct GenerationRoutes: Sendable {
    let environment: ServiceEnvironment
    let dispatch: WorkProducer
    let validator: SubmissionValidator
    let jobs: JobContext
    let hub: EventHub
    let uploads: UploadRoutes
    let fileIO = FileIO()

    var store: any GenerationStore { environment.store }
    var baseURL: String { environment.config.publicBaseURL }

    func register(on group: RouterGroup<GateContext>) {
        group.post("generations") { request, context in try await create(request, context) }
        group.get("generations") { request, context in try await list(request, context) }
        group.get("generations/:id") { _, context in try await show(context) }
        EventStreamRoutes(routes: self, hub: hub).register(on: group)
        BatchRoutes(routes: self).register(on: group)
        AlertRoutes(routes: self).register(on: group)
        SpendRoutes(routes: self).register(on: group)
        ExperimentRoutes(routes: self).register(on: group)
        group.get("models") { _, _ in models() }
        group.post("generations/:id/cancel") { _, context in try await cancel(context) }
        group.get("generations/:id/outputs/:index") { request, context in try await output(request, context) }
        group.post("admin/keys") { request, context in try await createKey(request, context) }
        group.delete("admin/keys/:id") { _, context in try await revokeKey(context) }
    }

    /// 202 `{id, status}`, sent only after the generation is committed. With an
    /// `Idempotency-Key`, a repeat of the same request (same key, same body, within the window)
    /// answers the original generation instead of making another; the key with another body is
    /// a 409. With `Prefer: wait=N`, the answer waits up to N seconds for the job to end, and is
    /// then the whole job (200).
    func create(_ request: Request, _ context: GateContext) async throws -> Response {
        let key = try context.requireKey()
        let idempotencyKey = try Self.idempotencyKey(request)
        let wait = try Self.preferWait(request)
        let cancelAfter = try Self.cancelAfter(request, max: environment.config.jobs.maxDeadlineSeconds)
        // A request naming an experiment becomes its variant's; the job's id is its subject when
        // it gives none (and no Idempotency-Key, which a retry repeats).
        let newID = Identifier.make("gen", at: Date())
        let sent = try await JSONBody.read(request, context: context, limit: Self.bodyLimit(environment.config)).value
        let (body, experiment) = try await ExperimentRoutes(routes: self).enroll(
            sent, fallbackSubject: idempotencyKey ?? newID)
        if try Self.dryRun(request) {
            // What it would cost, nothing submitted (images are checked for their form only).
            let validated = try validator.validate(body)
            let estimate = Self.estimate(validated, prices: environment.config.pricing.table)
            var answer: [String: JSONValue] = [
                "object": .string("estimate"), "model": .string(validated.model.id),
                "n": .number(Double(validated.request.n)), "estimate": estimate.json,
            ]
            if !validated.route.isEmpty { answer["route"] = .array(validated.route.map(JSONValue.string)) }
            return JSONResponse.make(status: .ok, answer)
        }
        var validated = try await resolveImages(try validator.validate(body), owner: key.id)
        validated.experiment = experiment
        if body != sent { validated.sentBody = sent }
        let committed = try await commit(
            validated, owner: key.id, idempotencyKey: idempotencyKey, cancelAfter: cancelAfter,
            watching: wait == nil ? nil : .end,
            context: context, id: newID)
        defer { committed.watch.map(hub.unwatch) }
        let id = committed.generation.id
        if let wait, let watch = committed.watch, let ended = try await waitForEnd(id, upTo: wait, watch: watch) {
            var response = try await finished(ended)
            if committed.replayed {
                response.headers[Self.replayed] = "true"
            } else {
                response.headers[Self.preferenceApplied] = "wait=\(Int(wait.components.seconds))"
            }
            return response
        }
        var headers: HTTPFields = [.location: "/v1/generations/\(id)"]
        if committed.replayed { headers[Self.replayed] = "true" }
        return JSONResponse.make(
            status: .accepted, ["id": .string(id), "status": .string(committed.generation.status.rawValue)],
            headers: headers)
    }

    /// `?dry_run=true`: estimate only.
    static func dryRun(_ request: Request) throws -> Bool {
        switch request.uri.queryParameters.get("dry_run") {
        case nil, "false"?: return false
        case "true"?: return true
        case let other?:
            throw APIError.invalidRequest(
                "dry_run must be true or false", details: [.init(path: "dry_run", message: "got \(other)")])
        }
    }

    /// What a validated request is expected to cost: the model it starts on (an alias's first).
    static func estimate(_ validated: SubmissionValidator.Validated, prices: PriceTable) -> CostEstimate {
        let request = validated.request
        return prices.estimate(
            model: validated.model.id, n: request.n, width: request.width, height: request.height,
            prompt: request.prompt, params: request.params)
    }

    /// The largest submission body: `http.max_body_bytes`, and room for one `data:` URL of
    /// `images.max_data_url_bytes` (base64 is 4/3 of the bytes).
    static func bodyLimit(_ config: GenGateConfig) -> Int {
        config.http.maxBodyBytes + config.images.maxDataUrlBytes / 3 * 4 + 4
    }

    /// A job just committed, or the one an `Idempotency-Key` repeat names, and a watch on it.
    struct Committed {
        var generation: Generation
        var replayed: Bool
        var watch: EventHub.Watch?
    }

    /// Commits a new job for `validated` and tells the dispatchers; with an `Idempotency-Key`
    /// used before for the same request, the first job instead (as it is now), and for another
    /// request a 409. With `watching`, a watch on the job (woken as that says) made before the
    /// commit (it may end before the caller looks); the caller lets go of it.
    func commit(
        _ validated: SubmissionValidator.Validated, owner: String, idempotencyKey: String?,
        cancelAfter: Double? = nil, watching: EventHub.Wake?, context: GateContext, id: String? = nil
    ) async throws -> Committed {
        let prices = environment.config.pricing.table
        let (generation, event) = Self.make(
            validated, owner: owner, now: Date(), cancelAfter: cancelAfter,
            defaultDeadline: environment.config.jobs.defaultDeadlineSeconds, prices: prices, id: id)
        let idempotency = try idempotencyKey.map {
            IdempotencyKey(
                key: $0,
                requestHash: Digest.sha256Hex(
                    try validated.sentBody.map { try JSONCoding.encode($0) }
                        ?? JSONCoding.encode(validated.hashBasis ?? validated.request)),
                window: environment.config.http.idempotencyWindowSeconds)
        }
        let watch = watching.map { hub.watch(generation.id, waking: $0) }
        let outcome: InsertOutcome
        do {
            outcome = try await store.insert(generation, event: event, idempotency: idempotency)
        } catch let refusal as BudgetExceeded {
            watch.map(hub.unwatch)
            throw APIError.budgetExceeded(refusal, currency: prices.currency)
        } catch let refusal as UnpricedModel {
            watch.map(hub.unwatch)
            throw APIError.unpriced(refusal)
        } catch {
            watch.map(hub.unwatch)
            context.logger.error("could not commit a generation", metadata: ["error": "\(error)"])
            throw APIError.unavailable
        }
        switch outcome {
        case .inserted:
            environment.publish([event])
            if generation.status == .waiting {
                // Its input's job may have ended between the look and the commit.
                await jobs.releaseWaiting(generation.id)
            } else {
                dispatch.send(generationID: generation.id, reason: "created")
            }
            return Committed(generation: generation, replayed: false, watch: watch)
        case .replayed(let original):
            watch.map(hub.unwatch)
            let again = watching.map { hub.watch(original, waking: $0) }
            guard let first = try await store.generation(id: original) else {
                again.map(hub.unwatch)
                throw APIError.unavailable
            }
            return Committed(generation: first, replayed: true, watch: again)
        case .keyReused(let original):
            watch.map(hub.unwatch)
            throw APIError(
                .idempotencyKeyReused,
                "Idempotency-Key \(idempotencyKey ?? "") was used for a different request (generation \(original)); use a new key for a new request"
            )
        }
    }

    /// A new pending generation of a validated request, and its `generation.created` event.
    static func make(
        _ validated: SubmissionValidator.Validated, owner: String, now: Date, cancelAfter: Double? = nil,
        defaultDeadline: Int, prices: PriceTable, batchID: String? = nil, priority: Int = 0, id: String? = nil
    ) -> (Generation, Event) {
        let (request, model) = (validated.request, validated.model)
        let ownDeadline = now.addingTimeInterval(Double(request.deadlineSeconds ?? defaultDeadline))
        let cancelAt = cancelAfter.map { now.addingTimeInterval($0) }
        // A job whose input is another's output still to come waits for it, due for nothing; its
        // deadline then is that job's and its own time after it (or, in a batch, none until it is
        // let go, as for held jobs), and its own time is counted again from its release.
        let waiting = validated.waitsFor != nil
        let deadline =
            waiting ? (validated.waitingDeadline ?? now.addingTimeInterval(400 * 86_400)) : ownDeadline
        let made = Generation(
            id: id ?? Identifier.make("gen", at: now), ownerKeyID: owner, request: request, provider: model.provider,
            status: waiting ? .waiting : .pending, version: 1, progress: 0, attempts: 0, error: nil,
            providerTaskID: nil, leaseOwner: nil, leaseExpiresAt: nil, nextActionAt: waiting ? nil : now,
            deadlineAt: min(deadline, cancelAt ?? deadline), createdAt: now, updatedAt: now,
            phaseTimes: [.pending: now], outputs: [], cancelAt: cancelAt, route: validated.route, batchID: batchID,
            priority: priority, waitsFor: validated.waitsFor,
            reservedCost: prices.reservation(
                models: validated.route.isEmpty ? [model.id] : validated.route, n: request.n, width: request.width,
                height: request.height, prompt: request.prompt, params: request.params),
            experiment: validated.experiment)
        var generation = made
        generation.unpricedModel = (validated.route.isEmpty ? [model.id] : validated.route).first {
            prices.price(of: $0) == nil
        }
        let aliased = !validated.route.isEmpty
        let event = Event(
            .generationCreated(
                .init(
                    model: model.id, provider: model.provider, n: request.n, alias: aliased ? request.model : nil,
                    route: aliased ? validated.route : nil, batchID: batchID)),
            generationID: generation.id, at: now)
        return (generation, event)
    }

    /// The generation once it has ended, if it does within `limit`; nil if not (or if this
    /// process is stopping). Hints from the event stream wake it, and it looks anyway every second.
    func waitForEnd(_ id: String, upTo limit: Duration, watch: EventHub.Watch) async throws -> Generation? {
        let deadline = ContinuousClock.now + limit
        while true {
            if let generation = try await store.generation(id: id), generation.status.isTerminal { return generation }
            let left = deadline - .now
            guard left > .zero, !hub.isClosed, !Task.isCancelled else { return nil }
            await watch.doorbell.wait(upTo: min(left, .seconds(1)))
        }
    }

    /// A 200 with the whole job, as `GET /v1/generations/{id}` shows it.
    func finished(_ generation: Generation) async throws -> Response {
        JSONResponse.make(
            status: .ok, try await fullView(generation), headers: [.location: "/v1/generations/\(generation.id)"])
    }

    static let preferHeader = HTTPField.Name("Prefer")!
    static let preferenceApplied = HTTPField.Name("Preference-Applied")!
    /// The longest `Prefer: wait` honoured.
    static let maxWait = 60

    /// The request's `Prefer: wait=N` (RFC 7240; `wait` alone is the most, 60 s), or nil.
    /// Other preferences beside it are ignored, as the RFC says.
    static func preferWait(_ request: Request) throws -> Duration? {
        let preferences = request.headers[values: preferHeader].flatMap { $0.split(separator: ",") }
        for preference in preferences {
            let parts = preference.split(separator: "=", maxSplits: 1).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard let name = parts.first, name.lowercased() == "wait" else { continue }
            guard parts.count == 2 else { return .seconds(maxWait) }
            guard let seconds = Int(parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))),
                (1...maxWait).contains(seconds)
            else {
                throw APIError.invalidRequest(
                    "invalid Prefer: wait",
                    details: [
                        .init(
                            path: "Prefer",
                            message:
                                "wait must be a whole number of seconds from 1 to \(maxWait), got \"\(parts[1].prefix(20))\""
                        )
                    ])
            }
            return .seconds(seconds)
        }
        return nil
    }

    static let cancelAfterHeader = HTTPField.Name("Cancel-After")!

    /// The request's `Cancel-After` in seconds, or none: a duration as Replicate takes it
    /// (`90`, `45s`, `5m`, `1h30m`, `1.5h`, `500ms`), at least 1 s and at most `max`.
    static func cancelAfter(_ request: Request, max: Int) throws -> Double? {
        guard let text = request.headers[cancelAfterHeader] else { return nil }
        guard let seconds = Duration.seconds(parsing: text), seconds >= 1, seconds <= Double(max) else {
            throw APIError.invalidRequest(
                "invalid Cancel-After",
                details: [
                    .init(
                        path: "Cancel-After",
                        message:
                            "must be a duration from 1s to \(max)s: seconds (90) or units (45s, 5m, 1h30m, 500ms), got \"\(text.prefix(40))\""
                    )
                ])
        }
        return seconds
    }

    static let idempotencyHeader = HTTPField.Name("Idempotency-Key")!
    static let replayed = HTTPField.Name("Idempotent-Replayed")!

    /// The request's `Idempotency-Key`: 1 to 255 visible ASCII characters, or none.
    static func idempotencyKey(_ request: Request) throws -> String? {
        guard let value = request.headers[idempotencyHeader] else { return nil }
        guard (1...255).contains(value.utf8.count), value.utf8.allSatisfy({ (0x21...0x7e).contains($0) }) else {
            throw APIError.invalidRequest(
                "invalid Idempotency-Key",
                details: [
                    .init(
                        path: "Idempotency-Key",
                        message: "must be 1 to 255 visible ASCII characters (a UUID is a good choice)")
                ])
        }
        return value
    }

    /// Every model this deployment knows, with its kind, limits, provider and whether that
    /// provider is configured (and if not, what it needs).
    func models() -> Response {
        let providers = environment.providers
        let prices = environment.config.pricing.table
        // OpenAI's field: when the model was made; here, when this deployment started.
        let created = JSONValue.number(Double(Int(environment.startedAt.timeIntervalSince1970)))
        func entry(_ model: ModelInfo, missing: String?) -> JSONValue {
            var fields: [String: JSONValue] = [
                "id": .string(model.id), "object": .string("model"), "provider": .string(model.provider),
                "owned_by": .string(model.provider), "created": created,
                "kind": .string(model.kind.rawValue), "max_outputs": .number(Double(model.maxOutputs)),
                "available": .bool(missing == nil),
            ]
            if let missing { fields["unavailable_because"] = .string(missing) }
            if let intake = model.images { fields["images"] = Self.view(intake) }
            if let (price, isDefault) = prices.price(of: model.id), case .object(var shown) = price.json {
                shown["currency"] = .string(prices.currency)
                shown["default"] = .bool(isDefault)
                fields["price"] = .object(shown)
            }
            return .object(fields)
        }
        var data = providers.models.values.map { entry($0, missing: nil) }
        for provider in providers.unavailable.values {
            data += provider.models.map { entry($0, missing: provider.missing) }
        }
        for (name, route) in providers.aliases {
            // An alias is available while any of its models is.
            let usable = providers.route(name) ?? []
            let kind = route.lazy.compactMap(providers.knownModel).first?.kind ?? .image
            var fields: [String: JSONValue] = [
                "id": .string(name), "object": .string("model"), "kind": .string(kind.rawValue),
                "owned_by": .string("gengate"), "created": created,
                "fallbacks": .array(route.map(JSONValue.string)), "available": .bool(!usable.isEmpty),
                "max_outputs": .number(Double(usable.map(\.maxOutputs).min() ?? 0)),
            ]
            if usable.isEmpty { fields["unavailable_because"] = .string("none of its models is configured") }
            data.append(.object(fields))
        }
        data.sort { ($0["id"]?.stringValue ?? "") < ($1["id"]?.stringValue ?? "") }
        return JSONResponse.make(status: .ok, ["object": .string("list"), "data": .array(data)])
    }

    /// What a model takes in images, as `GET /v1/models` says it.
    static func view(_ intake: ImageIntake) -> JSONValue {
        .object([
            "max": .number(Double(intake.maxImages)), "min": .number(Double(intake.minImages)),
            "purpose": .string(intake.purpose),
            "limits": GenerationView.json(intake.limits),
            "delivery": .array(intake.delivery.map { .string($0.rawValue) }),
            "preprocess": intake.pipeline.json,
        ])
    }

    func show(_ context: GateContext) async throws -> Response {
        JSONResponse.make(status: .ok, try await fullView(try await owned(context)))
    }

    /// Where an output is fetched from: its public URL in object storage if it has one; else,
    /// unless the link must last (kept in a webhook body, read hours later), a presigned one;
    /// else GenGate's own route, for the job's owner.
    func link(_ generation: Generation, _ output: Output, lasting: Bool = false) -> String {
        if let key = output.objectKey {
            if let url = environment.objects.publicURL(key: key) { return url }
            if !lasting, let url = environment.objects.temporaryURL(key: key, now: Date()) { return url }
        }
        return OutputURL.make(base: baseURL, generationID: generation.id, index: output.index)
    }

    /// A generation with its attempts, as `GET /v1/generations/{id}` shows it (`lasting`: with
    /// links that do not expire).
    func fullView(_ generation: Generation, lasting: Bool = false) async throws -> [String: JSONValue] {
        let attempts = try await store.attempts(generationID: generation.id)
        var view = GenerationView.render(
            generation, link: { link(generation, $0, lasting: lasting) }, attempts: attempts)
        view["attempt_history"] = GenerationView.render(attempts)
        // What it cost so far; while it runs, what its key's budget holds back for it.
        var cost = JobCost(attempts, currency: environment.config.pricing.currency).json
        if case .object(var fields) = cost, let reserved = generation.reservedCost, !generation.status.isTerminal {
            fields["reserved"] = .number(Money.rounded(reserved))
            cost = .object(fields)
        }
        view["cost"] = cost
        if let rating = try await store.rating(generationID: generation.id) {
            view["rating"] = .object(ExperimentRoutes.view(rating))
        }
        if generation.request.webhook != nil {
            view["webhook_deliveries"] = .array(
                try await store.webhookDeliveries(generationID: generation.id).map(GenerationView.render))
        }
        return view
    }

    func list(_ request: Request, _ context: GateContext) async throws -> Response {
        let key = try context.requireKey()
        let query = request.uri.queryParameters
        var details: [APIError.Detail] = []
        var status: GenerationStatus?
        if let text = query.get("status") {
            status = GenerationStatus(rawValue: text)
            if status == nil {
                details.append(
                    .init(
                        path: "status",
                        message: "must be one of \(GenerationStatus.allCases.map(\.rawValue).joined(separator: ", "))"))
            }
        }
        let (limit, cursor) = Self.page(request, idPrefix: "gen_", details: &details)
        guard details.isEmpty else { throw APIError.invalidRequest("invalid list query", details: details) }
        // One extra row says whether another page exists.
        let rows = try await store.list(ownerKeyID: key.id, status: status, after: cursor, limit: limit + 1)
        let page = Array(rows.prefix(limit))
        let next: JSONValue = rows.count > limit ? .string(page.last!.id) : .null
        return JSONResponse.make(
            status: .ok,
            [
                "object": .string("list"),
                "data": .array(
                    page.map { generation in
                        .object(GenerationView.render(generation, link: { link(generation, $0) }))
                    }),
                "next_cursor": next,
            ])
    }

    /// A list's `limit` (1–100, default 20) and `cursor` (an id with `idPrefix`, as a page gave it).
    static func page(_ request: Request, idPrefix: String, details: inout [APIError.Detail]) -> (
        limit: Int, cursor: String?
    ) {
        let query = request.uri.queryParameters
        var limit = 20
        if let text = query.get("limit") {
            if let value = Int(text), (1...100).contains(value) {
                limit = value
            } else {
                details.append(.init(path: "limit", message: "must be an integer between 1 and 100"))
            }
        }
        let cursor = query.get("cursor")
        if let cursor,
            !cursor.hasPrefix(idPrefix) || cursor.count > 64
                || !cursor.unicodeScalars.allSatisfy({
                    $0.isASCII && ($0 == "_" || $0.properties.isAlphabetic || ("0"..."9").contains($0))
                })
        {
            details.append(.init(path: "cursor", message: "not a cursor returned by this endpoint"))
        }
        return (limit, cursor)
    }

    /// Cancels a generation that has not ended; cancelling a cancelled one again is fine, while a
    /// completed or failed one answers 409.
    func cancel(_ context: GateContext) async throws -> Response {
        switch try await jobs.cancel(try await owned(context)) {
        case .cancelled(let generation):
            return JSONResponse.make(
                status: .ok, GenerationView.render(generation, link: { link(generation, $0) }))
        case .ended(let generation):
            throw APIError.conflict(
                "generation \(generation.id) is \(generation.status.rawValue) and can no longer be cancelled")
        case .busy(let generation):
            throw APIError.conflict("generation \(generation.id) is changing too fast to cancel; try again")
        }
    }

    /// The bytes of one stored output, to its owner.
    func output(_ request: Request, _ context: GateContext) async throws -> Response {
        let generation = try await owned(context)
        guard let text = context.parameters.get("index"), let index = Int(text) else {
            throw APIError.notFound("no such output")
        }
        return try await serve(generation, index: index, request, context)
    }

    /// The bytes of one stored output through a signed link (`OutputLinks`), with no API key.
    func linkedOutput(_ request: Request, _ context: GateContext, links: OutputLinks) async throws -> Response {
        let query = request.uri.queryParameters
        guard let id = context.parameters.get("id"), id.count <= 64, let text = context.parameters.get("index"),
            let index = Int(text),
            links.isValid(
                generationID: id, index: index, expires: query.get("expires"), signature: query.get("signature"))
        else {
            throw APIError(.forbidden, "this link is not valid, or it expired; ask the API for a new one")
        }
        guard let generation = try await store.generation(id: id) else { throw APIError.notFound("no such output") }
        // Cached no longer than the link works.
        let left = max(0, Int((Double(query.get("expires") ?? "") ?? 0) - Date().timeIntervalSince1970))
        return try await serve(generation, index: index, request, context, cacheControl: "private, max-age=\(left)")
    }

    /// One stored output's bytes, streamed from its file, whole or a range.
    func serve(
        _ generation: Generation, index: Int, _ request: Request, _ context: GateContext,
        cacheControl: String = "private, max-age=31536000, immutable"
    ) async throws -> Response {
        guard let output = generation.outputs.first(where: { $0.index == index }), output.isStored,
            let key = output.objectKey
        else {
            throw APIError.notFound("output \(index) of \(generation.id) is not stored (yet)")
        }
        let found: (path: String, size: Int)?
        do {
            found = try await environment.objects.localFile(key: key)
        } catch let error as GenGateError where error.code == .invalidRequest {
            found = nil  // a key no object can have (a prefix configured since): nothing there
        }
        if found == nil,
            let url = environment.objects.temporaryURL(key: key, now: Date()) ?? environment.objects.publicURL(key: key)
        {
            return try await relay(url, output: output, request, context, cacheControl: cacheControl)
        }
        guard let file = found else {
            context.logger.error("stored output is missing from object storage", metadata: ["key": "\(key)"])
            throw APIError.notFound("output \(index) of \(generation.id) is missing from object storage")
        }
        // Streamed from the file in chunks (flat memory whatever its size), whole or one range.
        var headers: HTTPFields = [
            .contentType: output.contentType, .cacheControl: cacheControl,
            .acceptRanges: "bytes",
        ]
        if let sha = output.sha256 { headers[.eTag] = "\"\(sha)\"" }
        switch ByteRange.parse(request.headers[.range], size: file.size) {
        case .whole:
            headers[.contentLength] = "\(file.size)"
            return Response(
                status: .ok, headers: headers, body: try await fileIO.loadFile(path: file.path, context: context))
        case .part(let range):
            headers[.contentLength] = "\(range.count)"
            headers[.contentRange] = "bytes \(range.lowerBound)-\(range.upperBound)/\(file.size)"
            return Response(
                status: .partialContent, headers: headers,
                body: try await fileIO.loadFile(path: file.path, range: range, context: context))
        case .unsatisfiable:
            throw APIError(
                .rangeNotSatisfiable,
                "output \(index) has \(file.size) bytes; the requested range lies outside them",
                headers: [.contentRange: "bytes */\(file.size)"])
        }
    }

    /// Streams an output from object storage (`url` needs no credentials), whole or the range
    /// asked for, chunk by chunk as it arrives: flat memory whatever its size.
    func relay(
        _ url: String, output: Output, _ request: Request, _ context: GateContext, cacheControl: String
    ) async throws -> Response {
        var upstream = HTTPClientRequest(url: url)
        if let range = request.headers[.range] { upstream.headers.add(name: "Range", value: range) }
        let response: HTTPClientResponse
        do {
            response = try await Self.objectClient.execute(upstream, timeout: .hours(6))
        } catch {
            context.logger.error(
                "object storage did not answer", metadata: ["error": "\(HTTPFailure.describe(error))"])
            throw APIError(
                .unavailable, "object storage is not answering; try again shortly", headers: [.retryAfter: "5"])
        }
        var headers: HTTPFields = [
            .contentType: output.contentType, .cacheControl: cacheControl, .acceptRanges: "bytes",
        ]
        if let sha = output.sha256 { headers[.eTag] = "\"\(sha)\"" }
        for (name, field) in [("Content-Length", HTTPField.Name.contentLength), ("Content-Range", .contentRange)] {
            if let value = response.headers.first(name: name) { headers[field] = value }
        }
        switch response.status {
        case .ok, .partialContent:
            return Response(
                status: .init(code: Int(response.status.code)), headers: headers,
                body: ResponseBody(asyncSequence: response.body))
        case .rangeNotSatisfiable:
            throw APIError(
                .rangeNotSatisfiable,
                "output \(output.index) has \(output.bytes ?? 0) bytes; the requested range lies outside them",
                headers: [.contentRange: "bytes */\(output.bytes ?? 0)"])
        case .notFound:
            context.logger.error(
                "stored output is missing from object storage", metadata: ["key": "\(output.objectKey ?? "")"])
            throw APIError.notFound("output \(output.index) is missing from object storage")
        default:
            context.logger.error(
                "object storage refused to serve an output",
                metadata: ["key": "\(output.objectKey ?? "")", "status": "\(response.status.code)"])
            throw APIError(
                .unavailable, "object storage answered HTTP \(response.status.code); try again shortly",
                headers: [.retryAfter: "5"])
        }
    }

    /// For outputs relayed from object storage: read timeouts end a stalled transfer, a whole
    /// one may take as long as its size needs.
    static let objectClient = HTTPClient(
        eventLoopGroup: .singletonMultiThreadedEventLoopGroup,
        configuration: .init(timeout: .init(connect: .seconds(10), read: .seconds(60))))

    /// Admin only: creates an API key and shows its secret, once.
    func createKey(_ request: Request, _ context: GateContext) async throws -> Response {
        _ = try context.requireAdmin()
        let body = try await JSONBody.read(request, context: context, limit: environment.config.http.maxBodyBytes).value
        guard case .object(let fields) = body else { throw APIError.invalidRequest("the body must be a JSON object") }
        var details: [APIError.Detail] = []
        for name in fields.keys.sorted() where !["name", "admin", "budget_daily", "budget_monthly"].contains(name) {
            details.append(.init(path: name, message: "unknown field"))
        }
        let name = fields["name"]?.stringValue ?? ""
        if name.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty || name.unicodeScalars.count > 200 {
            details.append(.init(path: "name", message: "required: a string of 1 to 200 characters"))
        }
        var admin = false
        if let value = fields["admin"] {
            guard case .bool(let flag) = value else {
                throw APIError.invalidRequest(
                    "invalid key request", details: details + [.init(path: "admin", message: "must be a boolean")])
            }
            admin = flag
        }
        let budgets = SpendRoutes.budgets(fields, clearing: false, details: &details)
        guard details.isEmpty else { throw APIError.invalidRequest("invalid key request", details: details) }
        let (key, secret) = try await store.createAPIKey(
            name: name, isAdmin: admin,
            budgets: KeyBudgets(daily: budgets.daily ?? nil, monthly: budgets.monthly ?? nil))
        return JSONResponse.make(
            status: .created,
            [
                "id": .string(key.id), "name": .string(key.name), "admin": .bool(key.isAdmin), "key": .string(secret),
                "created_at": .string(Timestamp.format(key.createdAt)),
                "budget_daily": key.budgets.daily.map(JSONValue.number) ?? .null,
                "budget_monthly": key.budgets.monthly.map(JSONValue.number) ?? .null,
            ])
    }

    /// Admin only: revokes a key. Every api-ingress stops accepting it within a second (its
    /// key cache holds an entry that long). A key cannot revoke itself.
    func revokeKey(_ context: GateContext) async throws -> Response {
        let caller = try context.requireAdmin()
        guard let id = context.parameters.get("id"), id.count <= 64 else { throw APIError.notFound("no such key") }
        guard id != caller.id else {
            throw APIError.conflict("a key cannot revoke itself; revoke it with another admin key")
        }
        let now = Date()
        guard try await store.revokeAPIKey(id: id, at: now) else {
            throw APIError.notFound("no key \(id), or it is revoked already")
        }
        context.logger.notice("API key revoked", metadata: ["revoked": "\(id)"])
        return JSONResponse.make(
            status: .ok, ["id": .string(id), "revoked": .bool(true), "revoked_at": .string(Timestamp.format(now))])
    }

    /// The generation named in the path, if the caller's key owns it.
    func owned(_ context: GateContext) async throws -> Generation {
        let key = try context.requireKey()
        guard let id = context.parameters.get("id"), id.count <= 64,
            let generation = try await store.generation(id: id), generation.ownerKeyID == key.id
        else {
            throw APIError.notFound("no generation \(context.parameters.get("id") ?? "") for this key")
        }
        return generation
    }
}

/// Reads a JSON request body, bounded in size.
enum JSONBody {
    /// The Content-Type is not checked: `curl -d` says form-urlencoded while sending JSON, and a
    /// body that is not JSON gets a clear `invalid_json` either way.
    static func read(_ request: Request, context: GateContext, limit: Int) async throws -> (
        value: JSONValue, bytes: ByteBuffer
    ) {
        let buffer = try await RequestBodyReader.collect(request, context: context, limit: limit)
        guard buffer.readableBytes > 0 else {
            throw APIError.invalidJSON("the request body is empty; send a JSON object")
        }
        do {
            return (try JSONCoding.decode(JSONValue.self, from: Data(buffer.readableBytesView)), buffer)
        } catch {
            throw APIError.invalidJSON("the request body is not valid JSON")
        }
    }
}
