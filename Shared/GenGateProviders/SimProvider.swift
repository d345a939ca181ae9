import Foundation
import GenGateCore

/// The built-in simulated provider behind `sim/image`, `sim/video` and `sim/text`, so the default
/// configuration works with no keys and no network.
///
/// It behaves like a real asynchronous provider: submit returns a task id at once, the task runs
/// for `latency`, polling reports progress, and on success it yields outputs to fetch. Because
/// the dispatcher, pollers and uploaders are separate processes, the simulated "server state"
/// travels inside the task id (submission time, ready time, outcome), so any process, even one
/// restarted after a crash, sees the same task. Outputs are deterministic: PNG images from prompt,
/// seed and index; text likewise.
public struct SimProvider: ProviderAdapter {
    public struct Settings: Sendable, Equatable {
        /// How long a task takes from submission to success or failure.
        public var latency: Duration
        /// Share of tasks (0...1) that end in a retryable provider error.
        public var failureRate: Double
        /// How long a submission takes to be answered. The submission counts as received (and
        /// charged) when it arrives, as with a real provider, not when it is answered.
        public var submitLatency: Duration
        public var maxOutputsPerCall: Int
        /// Where every received submission is recorded, a line each (client reference, task id).
        public var ledger: URL?
        /// Whether submissions can be found by client reference (in the ledger).
        public var findsByReference: Bool

        public init(
            latency: Duration = .milliseconds(1_500), failureRate: Double = 0, submitLatency: Duration = .zero,
            maxOutputsPerCall: Int = 10, ledger: URL? = nil, findsByReference: Bool = false
        ) {
            self.latency = latency
            self.failureRate = failureRate
            self.submitLatency = submitLatency
            self.maxOutputsPerCall = maxOutputsPerCall
            self.ledger = ledger
            self.findsByReference = findsByReference && ledger != nil
        }
    }

    public let name = "sim"
    public let settings: Settings
    public var capabilities: ProviderCapabilities {
        ProviderCapabilities(
            asynchronous: true, streaming: false, cancel: true, maxOutputsPerCall: settings.maxOutputsPerCall,
            findsSubmissionByReference: settings.findsByReference)
    }
    public var models: [ModelInfo] { Self.catalogue }
    public static let catalogue = [
        ModelInfo(id: "sim/image", provider: "sim", kind: .image, maxOutputs: 10),
        ModelInfo(id: "sim/text", provider: "sim", kind: .text, maxOutputs: 10),
        // A video model as the engine sees one (checked on the video schedule); its output is
        // one PNG frame, as the sim renders no video.
        ModelInfo(id: "sim/video", provider: "sim", kind: .video, maxOutputs: 4),
    ]

    public init(settings: Settings = Settings()) {
        self.settings = settings
    }

    public func submit(_ request: ProviderRequest) async throws -> String {
        guard models.contains(where: { $0.id == request.model }) else {
            throw GenGateError(.invalidRequest, "sim does not serve model \(request.model)")
        }
        let now = Date()
        let latencyMs = Self.milliseconds(settings.latency) + Self.milliseconds(settings.submitLatency)
        // `params.sim_fail: true` makes a task fail for certain (for trying out failures).
        let fails = Double.random(in: 0..<1) < settings.failureRate || request.params["sim_fail"] == .bool(true)
        let task = SimTask(
            id: Identifier.make("simt", at: now), submittedMs: Int64(now.timeIntervalSince1970 * 1_000),
            readyMs: Int64(now.timeIntervalSince1970 * 1_000) + latencyMs, fails: fails)
        if let ledger = settings.ledger {
            try SimLedger(url: ledger).record(reference: request.clientReference, taskID: task.encoded)
        }
        if settings.submitLatency > .zero {
            try await Task.sleep(for: settings.submitLatency)
        }
        return task.encoded
    }

    public func findSubmission(clientReference: String, request: ProviderRequest) async throws -> String? {
        guard settings.findsByReference, let ledger = settings.ledger else { return nil }
        return try SimLedger(url: ledger).taskID(reference: clientReference)
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000 + duration.components.attoseconds / 1_000_000_000_000_000
    }

    public func status(taskID: String, request: ProviderRequest) async throws -> ProviderTaskState {
        guard let task = SimTask(encoded: taskID) else {
            throw GenGateError(.providerError, "sim: unknown task \(taskID)", retryable: false)
        }
        let nowMs = Int64(Date().timeIntervalSince1970 * 1_000)
        if nowMs < task.readyMs {
            let span = max(1, task.readyMs - task.submittedMs)
            // Like providers that estimate, the sim says when the task will be ready.
            return .running(
                progress: Int(min(99, max(0, (nowMs - task.submittedMs) * 100 / span))),
                eta: Double(task.readyMs - nowMs) / 1_000)
        }
        if task.fails {
            return .failed(GenGateError(.providerError, "sim: simulated provider failure", retryable: true))
        }
        let isText = request.model == "sim/text"
        let outputs = request.outputIndexes.map { index in
            Output(
                index: index, source: SimOutput(kind: isText ? .text : .image, request: request, index: index).source,
                contentType: isText ? "text/plain; charset=utf-8" : "image/png")
        }
        return .succeeded(outputs: outputs)
    }

    public func cancel(taskID: String) async throws {
        guard SimTask(encoded: taskID) != nil else {
            throw GenGateError(.providerError, "sim: unknown task \(taskID)", retryable: false)
        }
    }

    public func fetch(_ output: Output) async throws -> (data: Data, contentType: String) {
        guard let description = SimOutput(source: output.source) else {
            throw GenGateError(.uploadFailed, "sim: cannot read output source", retryable: false)
        }
        return (description.render(), description.contentType)
    }
}

/// The simulated task's state, carried in its id: `simt_<ulid>.<submitted ms>.<ready ms>.<o|f>`.
struct SimTask: Equatable {
    var id: String
    var submittedMs: Int64
    var readyMs: Int64
    var fails: Bool

    init(id: String, submittedMs: Int64, readyMs: Int64, fails: Bool) {
        self.id = id
        self.submittedMs = submittedMs
        self.readyMs = readyMs
        self.fails = fails
    }

    init?(encoded: String) {
        let parts = encoded.split(separator: ".")
        guard parts.count == 4, parts[0].hasPrefix("simt_"), let submitted = Int64(parts[1]),
            let ready = Int64(parts[2]),
            parts[3] == "o" || parts[3] == "f"
        else { return nil }
        self.init(id: String(parts[0]), submittedMs: submitted, readyMs: ready, fails: parts[3] == "f")
    }

    var encoded: String { "\(id).\(submittedMs).\(readyMs).\(fails ? "f" : "o")" }
}

/// The sim's record of the submissions it received: a line `<client reference> <task id>` each,
/// appended with one `write` (atomic for lines this short) so that several processes share it.
public struct SimLedger: Sendable {
    public let url: URL

    public init(url: URL) {
        self.url = url
    }

    func record(reference: String, taskID: String) throws {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        guard fd >= 0 else { throw GenGateError(.providerUnavailable, "sim: cannot open its ledger (errno \(errno))") }
        defer { close(fd) }
        let line = Array("\(reference) \(taskID)\n".utf8)
        guard write(fd, line, line.count) == line.count else {
            throw GenGateError(.providerUnavailable, "sim: cannot write its ledger (errno \(errno))")
        }
    }

    /// Every submission received, in order: (client reference, task id).
    public func submissions() throws -> [(reference: String, taskID: String)] {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ")
            return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
        }
    }

    func taskID(reference: String) throws -> String? {
        try submissions().last { $0.reference == reference }?.taskID
    }
}
