import Foundation
import GenGateCore
import GenGateObjects
import GenGateProviders
import GenGateStore

/// The uploader's step: moves one generation's outputs from the provider to object storage, one
/// at a time, each checkpointed as it lands (rule 5), then completes the generation, or sends it
/// back to the dispatcher when the model makes several calls for its n outputs.
public struct OutputTransfer: Sendable {
    public let context: JobContext

    public init(context: JobContext) {
        self.context = context
    }

    var store: any GenerationStore { context.store }

    /// Tries per output in one go; after that a retryable failure waits `retryLater` seconds.
    static let triesPerOutput = 3
    static let retryLater = 10.0

    /// Handles a "look at this job" hint for the upload step.
    public func handle(_ generationID: String) async {
        await context.guarding(generationID, step: .upload) { try await transfer(generationID) }
    }

    public func transfer(_ id: String) async throws {
        let now = Date()
        guard
            var generation = try await store.claim(
                id: id, statuses: Lifecycle.Step.upload.claims, owner: context.instance,
                leaseUntil: context.leaseUntil(now), now: now)
        else { return }
        let adapter = try context.providers.adapter(generation.provider)
        let backoff = Backoff(base: 0.5, cap: 5)

        for output in generation.outputs where !output.isStored {
            var stored: StoredObject?
            var lastError = GenGateError(.uploadFailed, "not tried")
            // What was downloaded is kept while object storage is tried again: the provider's
            // file is fetched once (its URL may expire, and its bytes cost the provider's egress).
            let fetched = Locked<Fetched?>(nil)
            defer { fetched.withLock { $0?.discard() } }
            for attempt in 1...Self.triesPerOutput {
                if Task.isCancelled {
                    await context.releaseLease(generation)
                    return
                }
                do {
                    let createdAt = generation.createdAt
                    stored = try await context.keepingLease(generation, stopIfLost: true) {
                        let objects = context.objects
                        func key(_ contentType: String) -> String {
                            ObjectKey.forOutput(
                                prefix: context.objectPrefix, generationID: id, createdAt: createdAt,
                                index: output.index, contentType: contentType)
                        }
                        let source: Fetched
                        if let earlier = fetched.withLock({ $0 }) {
                            source = earlier
                        } else {
                            source = try await Self.fetch(output, with: adapter, scratch: objects.scratchFile())
                            fetched.withLock { $0 = source }
                        }
                        switch source {
                        case .file(let file, let claimed):
                            return try await objects.putOutput(file: file, claimed: claimed, key: key)
                        case .data(let data, let claimed):
                            return try await objects.putOutput(data: data, claimed: claimed, key: key)
                        }
                    }
                    fetched.withLock { $0 = nil }  // a stored file was consumed
                    context.failPoints.reached(.afterStore)
                    break
                } catch {
                    if error is LeaseLost {
                        // Another worker has the job now (or it was cancelled): this one stops
                        // moving bytes for it and records nothing.
                        return
                    }
                    if error is CancellationError || Task.isCancelled {
                        // Stopping: not the output's fault. Whoever comes next takes it over.
                        await context.releaseLease(generation)
                        return
                    }
                    lastError = GenGateError.wrap(error)
                    if lastError.code != .uploadFailed {
                        // The download or its bytes were at fault (a stale link's error page):
                        // the next try fetches again; only storage's failures keep the file.
                        fetched.withLock { fetched in
                            fetched?.discard()
                            fetched = nil
                        }
                        lastError = GenGateError(
                            .uploadFailed, "output \(output.index): \(lastError.message)",
                            retryable: lastError.retryable)
                    }
                    context.logger.warning(
                        "output transfer failed",
                        metadata: [
                            "generation": "\(id)", "index": "\(output.index)", "try": "\(attempt)",
                            "error": "\(lastError)",
                        ])
                    guard lastError.retryable, attempt < Self.triesPerOutput else { break }
                    // At least a quarter second: full jitter may draw nearly nothing, and a file
                    // host's short outage should be ridden out, not met three times at once.
                    let pause = max(0.25, backoff.delay(afterAttempt: attempt))
                    try? await Task.sleep(for: .milliseconds(Int(pause * 1_000)))
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
                    _ = try await context.apply(later)
                } else {
                    _ = try await context.fail(generation, error: lastError)
                }
                return
            }
            var checkpoint = output
            checkpoint.objectKey = stored.key
            checkpoint.bytes = stored.bytes
            checkpoint.sha256 = stored.sha256
            checkpoint.contentType = stored.contentType
            checkpoint.storedAt = Date()
            let event = context.outputEvent(id, index: output.index, stored: stored)
            guard try await store.recordStoredOutput(generationID: id, output: checkpoint, event: event) else {
                return  // cancelled meanwhile
            }
            context.publish([event])
            if let position = generation.outputs.firstIndex(where: { $0.index == output.index }) {
                generation.outputs[position] = checkpoint  // as the store now has it (no version change)
            }
            if generation.outputs.contains(where: { !$0.isStored }) {
                // More to move: a fresh lease for them (the last output needs none).
                let until = context.leaseUntil()
                guard
                    try await store.renewLease(
                        id: id, owner: context.instance, version: generation.version, until: until)
                else { return }
                generation.leaseExpiresAt = until
            }
        }

        // A cancel that landed meanwhile makes the compare-and-sets below find the job moved on.
        let missing = generation.missingOutputIndexes
        if !missing.isEmpty {
            let last = try await store.attempts(generationID: id).last
            let delivered = last.map { attempt in
                attempt.state == .succeeded && attempt.outputIndexes.allSatisfy { !missing.contains($0) }
            }
            if delivered == true {
                // The provider gives fewer outputs per call than asked for: the next call asks
                // for the rest. Not a failure.
                var change = Transition.of(generation, to: .pending)
                change.lease = .release
                change.nextActionAt = .some(Date())
                change.error = .some(nil)
                change.checkFailures = 0
                if try await context.apply(change) != nil { context.notify(.submit, id, "more outputs to ask for") }
                return
            }
            // The provider returned fewer outputs than this attempt asked for: ask again for the rest only.
            context.logger.notice(
                "outputs missing after upload; dispatching again",
                metadata: ["generation": "\(id)", "missing": "\(missing)"])
            _ = try await context.failOrRetry(
                generation,
                error: GenGateError(
                    .providerError,
                    "the provider returned \(generation.request.n - missing.count) of \(generation.request.n) outputs"))
            return
        }
        _ = try await context.apply(context.completion(of: generation, outputs: generation.outputs.count))
    }

    /// An output fetched from its provider, on its way to object storage.
    enum Fetched: Sendable {
        /// Streamed to a scratch file (videos, large images).
        case file(URL, claimed: String)
        /// Held whole: a provider whose outputs come only in answers.
        case data(Data, claimed: String)

        func discard() {
            if case .file(let file, _) = self { try? FileManager.default.removeItem(at: file) }
        }
    }

    /// Streamed through a scratch file where the adapter can; whole otherwise.
    static func fetch(_ output: Output, with adapter: any ProviderAdapter, scratch: URL) async throws -> Fetched {
        do {
            if let claimed = try await adapter.download(output, to: scratch) {
                return .file(scratch, claimed: claimed)
            }
        } catch {
            try? FileManager.default.removeItem(at: scratch)
            throw error
        }
        let fetched = try await adapter.fetch(output)
        return .data(fetched.data, claimed: fetched.contentType)
    }
}
