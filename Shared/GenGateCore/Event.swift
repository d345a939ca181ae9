import Foundation

/// Something that happened, as published on the event stream and kept in the store's event log.
/// The `type` doubles as the ZeroMQ topic frame, so subscribers filter by prefix
/// (`generation.`, `provider.`, `service.`).
public struct Event: Codable, Sendable, Equatable {
    public var type: EventType
    public var generationID: String?
    public var at: Date
    public var payload: [String: JSONValue]

    public init(_ type: EventType, generationID: String? = nil, at: Date = Date(), payload: [String: JSONValue] = [:]) {
        self.type = type
        self.generationID = generationID
        self.at = at
        self.payload = payload
    }

    enum CodingKeys: String, CodingKey {
        case type, at, payload
        case generationID = "generation_id"
    }
}

/// The kinds of event (docs/ARCHITECTURE.md, "Channels"). Raw values are the public, versioned topic names.
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
}
