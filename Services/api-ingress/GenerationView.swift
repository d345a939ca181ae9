import Foundation
import GenGateCore
import GenGateJobs
import GenGateRuntime
import GenGateStore

/// A generation as the API shows it. Internal bookkeeping (leases, versions, sources) stays out.
enum GenerationView {
    static func time(_ date: Date?) -> JSONValue { date.map { .string(Timestamp.format($0)) } ?? .null }

    /// Every submission of a job to a provider, in order: which provider, what it was asked,
    /// how it ended and when; so every retry is visible on the job.
    static func render(_ attempts: [Attempt]) -> JSONValue {
        .array(
            attempts.map { attempt in
                .object([
                    "number": .number(Double(attempt.number)), "provider": .string(attempt.provider),
                    "model": attempt.model.map(JSONValue.string) ?? .null,
                    "state": .string(attempt.state.rawValue),
                    "outputs": .array(attempt.outputIndexes.map { .number(Double($0)) }),
                    "error": error(attempt.error), "started_at": time(attempt.createdAt),
                    "ended_at": time(attempt.finishedAt),
                    "possible_double_charge": .bool(attempt.possibleDoubleCharge),
                    "cost": attempt.cost.map { .number(Money.rounded($0)) } ?? .null,
                    "charged": .bool(attempt.charged),
                    "reported_charge": attempt.charge.map(\.json) ?? .null,
                ])
            })
    }

    static func error(_ error: GenGateError?) -> JSONValue {
        guard let error else { return .null }
        var fields: [String: JSONValue] = [
            "code": .string(error.code.rawValue), "message": .string(error.message),
            "retryable": .bool(error.retryable),
        ]
        if let code = error.providerCode { fields["provider_code"] = .string(code) }
        if let reason = error.reason { fields["reason"] = .string(reason) }
        return .object(fields)
    }

    /// The job; with its `attempts`, each output also says which provider and model made it
    /// (the attempt that delivered it). `link` is where an output is fetched from.
    static func render(_ generation: Generation, link: (Output) -> String, attempts: [Attempt] = []) -> [String:
        JSONValue]
    {
        let request = generation.request
        var makers: [Int: Attempt] = [:]
        for attempt in attempts where attempt.state == .succeeded {
            for index in attempt.outputIndexes { makers[index] = attempt }
        }
        var view: [String: JSONValue] = [
            "id": .string(generation.id),
            "object": .string("generation"),
            "status": .string(generation.status.rawValue),
            "model": .string(request.model),
            "provider": .string(generation.provider),
            "prompt": .string(request.prompt),
            "n": .number(Double(request.n)),
            "progress": .number(Double(generation.progress)),
            "attempts": .number(Double(generation.attempts)),
            "created_at": time(generation.createdAt),
            "updated_at": time(generation.updatedAt),
            "deadline_at": time(generation.deadlineAt),
            "metadata": .object(request.metadata),
            "error": error(generation.error),
            "outputs": .array(
                generation.outputs.filter(\.isStored).map { output in
                    var fields: [String: JSONValue] = [
                        "index": .number(Double(output.index)),
                        "url": .string(link(output)),
                        "content_type": .string(output.contentType),
                        "bytes": .number(Double(output.bytes ?? 0)),
                        "sha256": .string(output.sha256 ?? ""),
                    ]
                    if let maker = makers[output.index] {
                        fields["provider"] = .string(maker.provider)
                        fields["model"] = .string(maker.model ?? (generation.route.isEmpty ? request.model : ""))
                    }
                    return .object(fields)
                }),
        ]
        for status in GenerationStatus.allCases where status != .pending && status != .waiting {
            view["\(status.rawValue)_at"] = time(generation.phaseTimes[status])
        }
        if let seed = request.seed { view["seed"] = .number(Double(seed)) }
        if let cancelAt = generation.cancelAt { view["cancel_at"] = time(cancelAt) }
        if !generation.route.isEmpty {
            // A fallback alias: its models in order, and the one the job is on now.
            view["route"] = .array(generation.route.map(JSONValue.string))
            view["current_model"] = .string(generation.model)
        }
        if generation.status == .retryWait { view["next_attempt_at"] = time(generation.nextActionAt) }
        if let batch = generation.batchID { view["batch_id"] = .string(batch) }
        if let experiment = generation.experiment {
            view["experiment"] = .object([
                "id": .string(experiment.experimentID), "variant": .string(experiment.variant),
            ])
        }
        if let images = request.images, !images.isEmpty {
            view["images"] = json(images)
            if let preprocess = request.preprocess { view["preprocess"] = preprocess.json }
            // What was done to each image for the provider it last went to.
            view["inputs"] = json(generation.inputs)
        }
        if let webhook = request.webhook {
            view["webhook"] = .string(webhook)
            view["webhook_events"] = .array((request.webhookEvents ?? []).map { .string($0.rawValue) })
        }
        return view
    }

    /// A value as its JSON.
    static func json(_ value: some Encodable) -> JSONValue {
        (try? JSONValue(encoding: value)) ?? .null
    }

    /// A webhook delivery and its attempts, as the API shows them.
    static func render(_ delivery: WebhookDelivery) -> JSONValue {
        .object([
            "id": .string(delivery.id), "event": .string(delivery.eventType.rawValue), "url": .string(delivery.url),
            "status": .string(delivery.state.rawValue), "attempts": .number(Double(delivery.attempts)),
            "created_at": time(delivery.createdAt), "delivered_at": time(delivery.deliveredAt),
            "next_attempt_at": delivery.state == .pending ? time(delivery.nextAttemptAt) : .null,
            "attempt_history": .array(
                delivery.history.map { attempt in
                    .object([
                        "number": .number(Double(attempt.number)), "at": time(attempt.at),
                        "status_code": attempt.statusCode.map { .number(Double($0)) } ?? .null,
                        "error": attempt.error.map(JSONValue.string) ?? .null,
                        "duration_ms": .number(Double(attempt.durationMs)),
                    ])
                }),
        ])
    }
}
