import Foundation

/// Something that happened, as published on the event stream and kept in the store's event log.
/// The `type` doubles as the ZeroMQ topic frame, so subscribers filter by prefix
/// (`generation.`, `provider.`, `service.`).
///
/// On the wire: `{"type": …, "generation_id": …, "at": …, "payload": {…}}`, the payload's
/// fields fixed by its type (docs/EVENTS.md, checked against docs/events.schema.json by a test).
public struct Event: Codable, Sendable, Equatable {
    public var generationID: String?
    public var at: Date
    public var payload: EventPayload

    public var type: EventType { payload.type }

    public init(_ payload: EventPayload, generationID: String? = nil, at: Date = Date()) {
        self.payload = payload
        self.generationID = generationID
        self.at = at
    }

    enum CodingKeys: String, CodingKey {
        case type, at, payload
        case generationID = "generation_id"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let name = try container.decode(String.self, forKey: .type)
        guard let type = EventType(rawValue: name) else {
            throw DecodingError.dataCorruptedError(
                forKey: .type, in: container, debugDescription: "unknown event type \(name)")
        }
        generationID = try container.decodeIfPresent(String.self, forKey: .generationID)
        at = try container.decode(Date.self, forKey: .at)
        payload = try type.body.init(from: container.superDecoder(forKey: .payload)).wrapped
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(type.rawValue, forKey: .type)
        try container.encodeIfPresent(generationID, forKey: .generationID)
        try container.encode(at, forKey: .at)
        try payload.body.encode(to: container.superEncoder(forKey: .payload))
    }
}

/// The kinds of event (docs/EVENTS.md). Raw values are the public, versioned topic names.
public enum EventType: String, Codable, Sendable, CaseIterable {
    case generationCreated = "generation.created"
    case generationStarted = "generation.started"
    case generationProgress = "generation.progress"
    case generationStreamChunk = "generation.stream_chunk"
    case generationOutput = "generation.output"
    case generationRetrying = "generation.retrying"
    /// The job moved to the next model of its fallback route (`from`, `to`, `because`).
    case generationFallback = "generation.fallback"
    case generationCompleted = "generation.completed"
    case generationFailed = "generation.failed"
    case generationCancelled = "generation.cancelled"
    /// The outcome of one HTTP call to a provider: provider, model, operation, status, latency.
    case providerCall = "provider.call"
    /// A submission that may have been made twice (recovery could not rule it out).
    case providerPossibleDoubleCharge = "provider.possible_double_charge"
    /// A process stopped submitting to a provider that kept failing to answer: provider, until.
    case providerCircuitOpened = "provider.circuit_opened"
    case serviceHeartbeat = "service.heartbeat"
    /// A poller's checks since its last report: status calls and how late checks were.
    case pollerChecks = "poller.checks"

    /// The payload type of events of this type.
    public var body: any EventBody.Type {
        switch self {
        case .generationCreated: EventPayload.Created.self
        case .generationStarted: EventPayload.Started.self
        case .generationProgress: EventPayload.Progress.self
        case .generationStreamChunk: EventPayload.StreamChunk.self
        case .generationOutput: EventPayload.OutputStored.self
        case .generationRetrying: EventPayload.Retrying.self
        case .generationFallback: EventPayload.Fallback.self
        case .generationCompleted: EventPayload.Completed.self
        case .generationFailed: EventPayload.Failed.self
        case .generationCancelled: EventPayload.Cancelled.self
        case .providerCall: EventPayload.ProviderCall.self
        case .providerPossibleDoubleCharge: EventPayload.PossibleDoubleCharge.self
        case .providerCircuitOpened: EventPayload.CircuitOpened.self
        case .serviceHeartbeat: EventPayload.Heartbeat.self
        case .pollerChecks: EventPayload.PollerChecks.self
        }
    }

    /// An event that ends its generation.
    public var isTerminal: Bool {
        self == .generationCompleted || self == .generationFailed || self == .generationCancelled
    }
}

/// The payload of one event type.
public protocol EventBody: Codable, Sendable, Equatable {
    /// This payload as the event payload it is.
    var wrapped: EventPayload { get }
}

/// What an event says, one `Codable` type per event type.
public enum EventPayload: Sendable, Equatable {
    case generationCreated(Created)
    case generationStarted(Started)
    case generationProgress(Progress)
    case generationStreamChunk(StreamChunk)
    case generationOutput(OutputStored)
    case generationRetrying(Retrying)
    case generationFallback(Fallback)
    case generationCompleted(Completed)
    case generationFailed(Failed)
    case generationCancelled(Cancelled)
    case providerCall(ProviderCall)
    case providerPossibleDoubleCharge(PossibleDoubleCharge)
    case providerCircuitOpened(CircuitOpened)
    case serviceHeartbeat(Heartbeat)
    case pollerChecks(PollerChecks)

    public var body: any EventBody {
        switch self {
        case .generationCreated(let body): body
        case .generationStarted(let body): body
        case .generationProgress(let body): body
        case .generationStreamChunk(let body): body
        case .generationOutput(let body): body
        case .generationRetrying(let body): body
        case .generationFallback(let body): body
        case .generationCompleted(let body): body
        case .generationFailed(let body): body
        case .generationCancelled(let body): body
        case .providerCall(let body): body
        case .providerPossibleDoubleCharge(let body): body
        case .providerCircuitOpened(let body): body
        case .serviceHeartbeat(let body): body
        case .pollerChecks(let body): body
        }
    }

    public var type: EventType {
        switch self {
        case .generationCreated: .generationCreated
        case .generationStarted: .generationStarted
        case .generationProgress: .generationProgress
        case .generationStreamChunk: .generationStreamChunk
        case .generationOutput: .generationOutput
        case .generationRetrying: .generationRetrying
        case .generationFallback: .generationFallback
        case .generationCompleted: .generationCompleted
        case .generationFailed: .generationFailed
        case .generationCancelled: .generationCancelled
        case .providerCall: .providerCall
        case .providerPossibleDoubleCharge: .providerPossibleDoubleCharge
        case .providerCircuitOpened: .providerCircuitOpened
        case .serviceHeartbeat: .serviceHeartbeat
        case .pollerChecks: .pollerChecks
        }
    }

    /// The payload as JSON text (the form the store keeps).
    public func encoded() throws -> Data { try JSONCoding.encode(body) }

    /// A payload of `type` read from its JSON text.
    public static func decode(_ type: EventType, from data: Data) throws -> EventPayload {
        try JSONCoding.decode(type.body, from: data).wrapped
    }

    /// `generation.created`: a job was accepted (committed) with its first model.
    public struct Created: EventBody {
        public var model: String
        public var provider: String
        public var n: Int
        /// The alias asked for, when the job runs along a fallback route.
        public var alias: String?
        /// The alias's models in order, when there is one.
        public var route: [String]?
        /// The batch the job belongs to, if any.
        public var batchID: String?

        public init(
            model: String, provider: String, n: Int, alias: String? = nil, route: [String]? = nil,
            batchID: String? = nil
        ) {
            self.model = model
            self.provider = provider
            self.n = n
            self.alias = alias
            self.route = route
            self.batchID = batchID
        }

        enum CodingKeys: String, CodingKey {
            case model, provider, n, alias, route
            case batchID = "batch_id"
        }

        public var wrapped: EventPayload { .generationCreated(self) }
    }

    /// `generation.started`: a provider accepted a submission and is working on it.
    public struct Started: EventBody {
        public var attempt: Int
        public var provider: String
        public var model: String
        public var providerTaskID: String

        public init(attempt: Int, provider: String, model: String, providerTaskID: String) {
            self.attempt = attempt
            self.provider = provider
            self.model = model
            self.providerTaskID = providerTaskID
        }

        enum CodingKeys: String, CodingKey {
            case attempt, provider, model
            case providerTaskID = "provider_task_id"
        }

        public var wrapped: EventPayload { .generationStarted(self) }
    }

    /// `generation.progress`: the provider's progress (0–100), at most one per ten points.
    public struct Progress: EventBody {
        public var progress: Int

        public init(progress: Int) { self.progress = progress }

        public var wrapped: EventPayload { .generationProgress(self) }
    }

    /// `generation.stream_chunk`: a piece of generated text, as the provider streams it.
    /// Published only (not kept in the store): the whole text is the job's output.
    public struct StreamChunk: EventBody {
        /// The attempt that streams it: a retry streams its text again from index 0.
        public var attempt: Int
        /// The chunk's place in its attempt's stream, from 0.
        public var index: Int
        public var outputIndex: Int
        public var text: String

        public init(attempt: Int, index: Int, outputIndex: Int, text: String) {
            self.attempt = attempt
            self.index = index
            self.outputIndex = outputIndex
            self.text = text
        }

        enum CodingKeys: String, CodingKey {
            case attempt, index, text
            case outputIndex = "output_index"
        }

        public var wrapped: EventPayload { .generationStreamChunk(self) }
    }

    /// `generation.output`: one output is stored in object storage.
    public struct OutputStored: EventBody {
        public var index: Int
        public var contentType: String
        public var bytes: Int
        public var sha256: String
        public var url: String

        public init(index: Int, contentType: String, bytes: Int, sha256: String, url: String) {
            self.index = index
            self.contentType = contentType
            self.bytes = bytes
            self.sha256 = sha256
            self.url = url
        }

        enum CodingKeys: String, CodingKey {
            case index, bytes, sha256, url
            case contentType = "content_type"
        }

        public var wrapped: EventPayload { .generationOutput(self) }
    }

    /// `generation.retrying`: an attempt failed and another follows at `retry_at`.
    public struct Retrying: EventBody {
        public var attempt: Int
        public var retryAt: Date
        public var error: GenGateError
        /// The provider and model of the attempt that failed.
        public var provider: String?
        public var model: String?

        public init(attempt: Int, retryAt: Date, error: GenGateError, provider: String? = nil, model: String? = nil) {
            self.attempt = attempt
            self.retryAt = retryAt
            self.error = error
            self.provider = provider
            self.model = model
        }

        enum CodingKeys: String, CodingKey {
            case attempt, error, provider, model
            case retryAt = "retry_at"
        }

        public var wrapped: EventPayload { .generationRetrying(self) }
    }

    /// `generation.fallback`: the job moves to the next model of its route.
    public struct Fallback: EventBody {
        public var from: String
        public var to: String
        /// The error code that moved it, or `circuit_open` / `not_configured`.
        public var because: String

        public init(from: String, to: String, because: String) {
            self.from = from
            self.to = to
            self.because = because
        }

        public var wrapped: EventPayload { .generationFallback(self) }
    }

    /// `generation.completed`: every output is stored.
    public struct Completed: EventBody {
        public var outputs: Int
        public var attempts: Int
        public var provider: String
        public var model: String
        public var durationMs: Int

        public init(outputs: Int, attempts: Int, provider: String, model: String, durationMs: Int) {
            self.outputs = outputs
            self.attempts = attempts
            self.provider = provider
            self.model = model
            self.durationMs = durationMs
        }

        enum CodingKeys: String, CodingKey {
            case outputs, attempts, provider, model
            case durationMs = "duration_ms"
        }

        public var wrapped: EventPayload { .generationCompleted(self) }
    }

    /// `generation.failed`: the job ended without its outputs.
    /// `attempts`, `provider` and `model` are missing only when a handler kept failing on it
    /// unexpectedly and the job could not be read.
    public struct Failed: EventBody {
        public var error: GenGateError
        public var attempts: Int?
        public var provider: String?
        public var model: String?

        public init(error: GenGateError, attempts: Int?, provider: String?, model: String?) {
            self.error = error
            self.attempts = attempts
            self.provider = provider
            self.model = model
        }

        public var wrapped: EventPayload { .generationFailed(self) }
    }

    /// `generation.cancelled`: by its client (`client`) or its Cancel-After (`deadline`).
    public struct Cancelled: EventBody {
        public var previousStatus: String
        public var reason: String

        public init(previousStatus: String, reason: String) {
            self.previousStatus = previousStatus
            self.reason = reason
        }

        enum CodingKeys: String, CodingKey {
            case reason
            case previousStatus = "previous_status"
        }

        public var wrapped: EventPayload { .generationCancelled(self) }
    }

    /// `provider.call`: one HTTP call to a provider and how it went.
    public struct ProviderCall: EventBody {
        public var provider: String
        public var model: String
        /// `submit`, `status`, `task` (the task's own outcome) or `cancel`.
        public var operation: String
        public var latencyMs: Int
        /// `ok` or `error`.
        public var outcome: String
        public var errorCode: String?
        public var retryable: Bool?

        public init(
            provider: String, model: String, operation: String, latencyMs: Int, outcome: String,
            errorCode: String? = nil, retryable: Bool? = nil
        ) {
            self.provider = provider
            self.model = model
            self.operation = operation
            self.latencyMs = latencyMs
            self.outcome = outcome
            self.errorCode = errorCode
            self.retryable = retryable
        }

        enum CodingKeys: String, CodingKey {
            case provider, model, operation, outcome, retryable
            case latencyMs = "latency_ms"
            case errorCode = "error_code"
        }

        public var wrapped: EventPayload { .providerCall(self) }
    }

    /// `provider.possible_double_charge`: a submission that may have been made twice.
    public struct PossibleDoubleCharge: EventBody {
        public var provider: String
        public var model: String
        public var attempt: Int
        public var clientReference: String

        public init(provider: String, model: String, attempt: Int, clientReference: String) {
            self.provider = provider
            self.model = model
            self.attempt = attempt
            self.clientReference = clientReference
        }

        enum CodingKeys: String, CodingKey {
            case provider, model, attempt
            case clientReference = "client_reference"
        }

        public var wrapped: EventPayload { .providerPossibleDoubleCharge(self) }
    }

    /// `provider.circuit_opened`: a process stops submitting to a provider until a time.
    public struct CircuitOpened: EventBody {
        public var provider: String
        public var until: Date

        public init(provider: String, until: Date) {
            self.provider = provider
            self.until = until
        }

        public var wrapped: EventPayload { .providerCircuitOpened(self) }
    }

    /// `service.heartbeat`: a service process is alive (or, with `stopping`, leaving).
    public struct Heartbeat: EventBody {
        public var service: String
        public var instance: String
        public var pid: Int
        public var startedAt: Date
        public var stopping: Bool
        /// Messages each of its bus sockets dropped since it started.
        public var busDropped: [String: Int]

        public init(
            service: String, instance: String, pid: Int, startedAt: Date, stopping: Bool, busDropped: [String: Int]
        ) {
            self.service = service
            self.instance = instance
            self.pid = pid
            self.startedAt = startedAt
            self.stopping = stopping
            self.busDropped = busDropped
        }

        enum CodingKeys: String, CodingKey {
            case service, instance, pid, stopping
            case startedAt = "started_at"
            case busDropped = "bus_dropped"
        }

        public var wrapped: EventPayload { .serviceHeartbeat(self) }
    }

    /// `poller.checks`: a poller's status calls since its last report, and how late checks were.
    public struct PollerChecks: EventBody {
        public var statusCalls: Int
        /// Upper bounds (seconds) of the lateness buckets; `lateness_counts` has one more (the rest).
        public var latenessBounds: [Double]
        public var latenessCounts: [Int]
        public var latenessMax: Double

        public init(statusCalls: Int, latenessBounds: [Double], latenessCounts: [Int], latenessMax: Double) {
            self.statusCalls = statusCalls
            self.latenessBounds = latenessBounds
            self.latenessCounts = latenessCounts
            self.latenessMax = latenessMax
        }

        enum CodingKeys: String, CodingKey {
            case statusCalls = "status_calls"
            case latenessBounds = "lateness_bounds"
            case latenessCounts = "lateness_counts"
            case latenessMax = "lateness_max"
        }

        public var wrapped: EventPayload { .pollerChecks(self) }
    }
}
