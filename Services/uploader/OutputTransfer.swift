import Foundation
import GenGateBus
import GenGateCore
import GenGateObjects
import GenGateProviders
import GenGateRuntime
import GenGateStore

/// Moves one generation's outputs from the provider to object storage, one at a time, each
/// checkpointed as it lands (DESIGN.md rule 5), then completes the generation.
struct OutputTransfer: Sendable {
    let environment: ServiceEnvironment

    var store: any GenerationStore { environment.store }

    /// Tries per output in one go; after that a retryable failure waits `retryLater` seconds.
    static let triesPerOutput = 3
    static let retryLater = 10.0

    func handle(_ item: WorkItem) async {
        do {
            try await transfer(item.generationID)
        } catch is CancellationError {
            return
        } catch {
            environment.logger.error("upload failed", metadata: ["generation": "\(item.generationID)", "error": "\(error)"])
        }
    }

    func transfer(_ id: String) async throws {
        let now = Date()
        guard var generation = try await store.claim(id: id, statuses: [.uploading], owner: environment.instance,
                                                     leaseUntil: environment.leaseUntil(now), now: now)
        else { return }
        let adapter = try environment.providers.adapter(generation.provider)
        let backoff = Backoff(base: 0.5, cap: 5)

        for output in generation.outputs where !output.isStored {
            var stored: StoredObject?
            var lastError = GenGateError(.uploadFailed, "not tried")
            for attempt in 1...Self.triesPerOutput {
                if Task.isCancelled {
                    await environment.releaseLease(generation)
                    return
                }
                do {
                    stored = try await environment.keepingLease(generation) {
                        let fetched = try await adapter.fetch(output)
                        let key = ObjectKey.forOutput(prefix: environment.config.objects.prefix, generationID: id,
                                                      createdAt: generation.createdAt, index: output.index,
                                                      contentType: fetched.contentType)
                        return try await environment.objects.put(key: key, data: fetched.data, contentType: fetched.contentType)
                    }
                    break
                } catch {
                    lastError = GenGateError.wrap(error)
                    if lastError.code != .uploadFailed {
                        lastError = GenGateError(.uploadFailed, "output \(output.index): \(lastError.message)", retryable: lastError.retryable)
                    }
                    environment.logger.warning("output transfer failed", metadata: [
                        "generation": "\(id)", "index": "\(output.index)", "try": "\(attempt)", "error": "\(lastError)",
                    ])
                    guard lastError.retryable, attempt < Self.triesPerOutput else { break }
                    try? await Task.sleep(for: .milliseconds(Int(backoff.delay(afterAttempt: attempt) * 1_000)))
                }
            }
            guard let stored else {
                if lastError.retryable {
                    // Object storage or the provider's file host may be down for a while: leave the
                    // job due later (the sweep re-drives it); its deadline bounds how long.
                    var later = Transition.of(generation, to: .uploading)
                    later.error = .some(lastError)
                    later.lease = .release
                    later.nextActionAt = .some(Date().addingTimeInterval(Self.retryLater))
                    _ = try await environment.apply(later)
                } else {
                    _ = try await environment.fail(generation, error: lastError)
                }
                return
            }
            var checkpoint = output
            checkpoint.objectKey = stored.key
            checkpoint.bytes = stored.bytes
            checkpoint.sha256 = stored.sha256
            checkpoint.contentType = stored.contentType
            checkpoint.storedAt = Date()
            let event = Event(.generationOutput, generationID: id, payload: [
                "index": .number(Double(output.index)), "content_type": .string(stored.contentType),
                "bytes": .number(Double(stored.bytes)), "sha256": .string(stored.sha256),
                "url": .string(OutputURL.make(base: environment.config.publicBaseURL, generationID: id, index: output.index)),
            ])
            guard try await store.recordStoredOutput(generationID: id, output: checkpoint, event: event) else {
                return  // cancelled meanwhile
            }
            environment.publish([event])
            guard try await store.renewLease(id: id, owner: environment.instance, version: generation.version,
                                             until: environment.leaseUntil()) else { return }
        }

        guard let current = try await store.generation(id: id), current.version == generation.version else { return }
        generation = current
        let missing = generation.missingOutputIndexes
        if !missing.isEmpty {
            // The provider returned fewer outputs than asked: ask again for the rest only.
            environment.logger.notice("outputs missing after upload; dispatching again", metadata: ["generation": "\(id)", "missing": "\(missing)"])
            _ = try await environment.failOrRetry(generation, error: GenGateError(.providerError, "the provider returned \(generation.request.n - missing.count) of \(generation.request.n) outputs"))
            return
        }
        var change = Transition.of(generation, to: .completed)
        change.progress = 100
        change.error = .some(nil)
        change.events = [Event(.generationCompleted, generationID: id, payload: [
            "outputs": .number(Double(generation.outputs.count)),
            "attempts": .number(Double(generation.attempts)),
            "provider": .string(generation.provider),
            "model": .string(generation.request.model),
            "duration_ms": .number((Date().timeIntervalSince(generation.createdAt) * 1_000).rounded()),
        ])]
        _ = try await environment.apply(change)
    }
}
