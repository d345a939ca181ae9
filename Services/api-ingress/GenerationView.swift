import Foundation
import GenGateCore
import GenGateJobs
import GenGateRuntime

/// A generation as the API shows it. Internal bookkeeping (leases, versions, sources) stays out.
enum GenerationView {
    static func render(_ generation: Generation, baseURL: String) -> [String: JSONValue] {
        func time(_ date: Date?) -> JSONValue { date.map { .string(Timestamp.format($0)) } ?? .null }
        let request = generation.request
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
            "error": generation.error.map { error in
                var fields: [String: JSONValue] = [
                    "code": .string(error.code.rawValue), "message": .string(error.message),
                    "retryable": .bool(error.retryable),
                ]
                if let code = error.providerCode { fields["provider_code"] = .string(code) }
                return .object(fields)
            } ?? .null,
            "outputs": .array(
                generation.outputs.filter(\.isStored).map { output in
                    .object([
                        "index": .number(Double(output.index)),
                        "url": .string(OutputURL.make(base: baseURL, generationID: generation.id, index: output.index)),
                        "content_type": .string(output.contentType),
                        "bytes": .number(Double(output.bytes ?? 0)),
                        "sha256": .string(output.sha256 ?? ""),
                    ])
                }),
        ]
        for status in GenerationStatus.allCases where status != .pending {
            view["\(status.rawValue)_at"] = time(generation.phaseTimes[status])
        }
        if let seed = request.seed { view["seed"] = .number(Double(seed)) }
        if generation.status == .retryWait { view["next_attempt_at"] = time(generation.nextActionAt) }
        return view
    }
}
