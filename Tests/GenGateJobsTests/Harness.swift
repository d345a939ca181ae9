import Foundation
import GenGateCore
import GenGateJobs
import GenGateObjects
import GenGateProviders
@testable import GenGateStore
import Logging
import Synchronization
import XCTest

/// A provider for engine tests: counts what it is asked, answers submissions after `submitDelay`,
/// answers status checks from a script (then "running"), and finds submissions by reference when
/// `findsByReference`.
final class ScriptedProvider: ProviderAdapter, Sendable {
    struct State {
        var submissions: [String] = []
        var statusCalls = 0
        var cancelled: [String] = []
        var script: [ProviderTaskState] = []
        var statusError: GenGateError?
        var fetchDelay: Duration = .zero
        var fetches = 0
        /// Errors the next submissions throw, in order: the provider got the call (it is counted
        /// as received) and the answer is this error.
        var submitErrors: [GenGateError] = []
        /// Run inside a synchronous call, after the provider got it and before it answers.
        var duringGenerate: (@Sendable () async throws -> Void)?
    }

    let name: String
    let capabilities: ProviderCapabilities
    let models: [ModelInfo]
    let submitDelay: Duration
    let state = Mutex(State())

    init(
        submitDelay: Duration = .zero, findsByReference: Bool = false, maxOutputsPerCall: Int = 10,
        synchronous: Bool = false, referenceSettleSeconds: Double = 0, name: String = "scripted"
    ) {
        self.name = name
        models = [ModelInfo(id: "\(name)/image", provider: name, kind: .image, maxOutputs: 10)]
        self.submitDelay = submitDelay
        capabilities = ProviderCapabilities(
            asynchronous: !synchronous, streaming: false, cancel: !synchronous, maxOutputsPerCall: maxOutputsPerCall,
            findsSubmissionByReference: findsByReference,
            referenceSettleSeconds: referenceSettleSeconds)
    }

    /// A synchronous call: counted as received, `duringGenerate` run, then one small PNG-headed
    /// file an output.
    /// Outputs begin like PNG files: the store tells an output's type by its bytes.
    static let pngSignature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    func generate(_ request: ProviderRequest, into sink: GenerationSink) async throws -> [GeneratedOutput] {
        let during = state.withLock { state -> (@Sendable () async throws -> Void)? in
            state.submissions.append(request.clientReference)
            return state.duringGenerate
        }
        try await during?()
        return try request.outputIndexes.map { index in
            let file = try sink.scratchFile()
            try Data(Self.pngSignature + Array("output \(index) of \(request.clientReference)".utf8))
                .write(to: file)
            return GeneratedOutput(index: index, file: file, contentType: "image/png")
        }
    }

    var submissions: [String] { state.withLock { $0.submissions } }
    var cancelled: [String] { state.withLock { $0.cancelled } }
    var statusCalls: Int { state.withLock { $0.statusCalls } }

    func script(_ states: ProviderTaskState...) { state.withLock { $0.script.append(contentsOf: states) } }

    func submit(_ request: ProviderRequest) async throws -> String {
        let failure = state.withLock { state -> GenGateError? in
            state.submissions.append(request.clientReference)  // received, and charged
            return state.submitErrors.isEmpty ? nil : state.submitErrors.removeFirst()
        }
        if let failure { throw failure }
        if submitDelay > .zero {
            // As with an HTTP client, cancelling the caller abandons the call (it throws), while
            // the provider, which already has the submission, goes on with it.
            try await Task.sleep(for: submitDelay)
        }
        return "task-\(request.clientReference)"
    }

    func status(taskID: String, request: ProviderRequest) async throws -> ProviderTaskState {
        let answer = state.withLock { state -> Result<ProviderTaskState, GenGateError> in
            state.statusCalls += 1
            if let error = state.statusError { return .failure(error) }
            return .success(state.script.isEmpty ? .running(progress: nil) : state.script.removeFirst())
        }
        return try answer.get()
    }

    func cancel(taskID: String) async throws { state.withLock { $0.cancelled.append(taskID) } }

    func findSubmission(clientReference: String, request: ProviderRequest) async throws -> String? {
        submissions.contains(clientReference) ? "task-\(clientReference)" : nil
    }

    func fetch(_ output: Output) async throws -> (data: Data, contentType: String) {
        let delay = state.withLock { state in
            state.fetches += 1
            return state.fetchDelay
        }
        if delay > .zero { try await Task.sleep(for: delay) }  // throws when cancelled, as a download does
        return (Data(Self.pngSignature + Array("bytes of \(output.source)".utf8)), output.contentType)
    }

    static func outputs(_ indexes: [Int]) -> [Output] {
        indexes.map { Output(index: $0, source: "src-\($0)", contentType: "image/png") }
    }
}

/// A temporary store, object directory and engine context around one provider.
final class Harness: Sendable {
    let directory: URL
    let store: SQLiteStore
    let provider: ScriptedProvider
    let owner: APIKey
    let notices = Notices()
    let policy: JobPolicy

    init(provider: ScriptedProvider = ScriptedProvider(), policy: JobPolicy = JobPolicy(leaseSeconds: 30)) async throws
    {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "gg-jobs-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        store = try SQLiteStore(path: directory.appendingPathComponent("gengate.sqlite").path, migrate: true)
        self.provider = provider
        self.policy = policy
        owner = try await store.createAPIKey(name: "test", isAdmin: false).key
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    func context(
        _ instance: String = "worker-a", policy: JobPolicy? = nil, limits: ProviderLimits? = nil,
        also: [ScriptedProvider] = [], aliases: [String: [String]] = [:], objects: (any ObjectStore)? = nil,
        prices: PriceTable = PriceTable()
    ) throws -> JobContext {
        JobContext(
            instance: instance, store: store,
            providers: ProviderRegistry(
                adapters: [provider] + also, limits: limits.map { ["scripted": $0] } ?? [:], aliases: aliases),
            objects: try objects ?? LocalObjectStore(root: directory.appendingPathComponent("objects")),
            policy: policy ?? self.policy,
            logger: Logger(label: "test"),
            notify: { [notices] step, id, _ in notices.list.withLock { $0.append((step, id)) } }, prices: prices)
    }

    func noticed(_ step: Lifecycle.Step) -> [String] { notices.list.withLock { $0.filter { $0.0 == step }.map(\.1) } }

    /// Takes up to `limit` due checks for `owner`, as a poller does.
    func claimDue(owner: String = "poller-a", limit: Int = 100) async throws -> [Generation] {
        try await store.claimDue(
            status: .running, owner: owner, leaseUntil: Date() + 30, now: Date(), limit: limit,
            excludingProviders: [])
    }

    /// A new pending job, committed.
    func submit(
        n: Int = 1, deadline: TimeInterval = 600, created: Date = Date(), route: [String] = [],
        reserved: Double? = nil
    ) async throws -> Generation {
        let generation = Generation(
            id: Identifier.make("gen", at: created), ownerKeyID: owner.id,
            request: GenerationRequest(model: route.isEmpty ? "scripted/image" : "alias", prompt: "a test", n: n),
            provider: "scripted",
            status: .pending,
            version: 1, progress: 0, attempts: 0, error: nil, providerTaskID: nil, leaseOwner: nil, leaseExpiresAt: nil,
            nextActionAt: created, deadlineAt: created.addingTimeInterval(deadline), createdAt: created,
            updatedAt: created,
            phaseTimes: [.pending: created], outputs: [], route: route, reservedCost: reserved)
        try await store.insert(
            generation,
            event: Event(
                .generationCreated(.init(model: "sim/image", provider: "sim", n: 1)), generationID: generation.id,
                at: created))
        return generation
    }

    func job(_ id: String) async throws -> Generation {
        let found = try await store.generation(id: id)
        return try XCTUnwrap(found, "no generation \(id)")
    }

    /// Makes a job's next action (a check, a retry) due now.
    func makeCheckDue(_ id: String) async throws {
        try await store.pool.write { db in
            try db.execute(
                sql: "UPDATE generations SET next_action_at = ? WHERE id = ?",
                arguments: [Date().timeIntervalSince1970 - 1, id])
        }
    }

    /// Waits until `condition` holds, for up to `timeout`.
    func until(_ timeout: Duration = .seconds(5), _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        XCTFail("condition not met within \(timeout)")
    }
}

/// The hints the engine sent, in order.
final class Notices: Sendable {
    let list = Mutex<[(Lifecycle.Step, String)]>([])
}
