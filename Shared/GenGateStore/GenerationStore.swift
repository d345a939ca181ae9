import Foundation
import GenGateCore

/// The durable truth about every job (DESIGN.md "The store is the truth; messages are hints").
///
/// Every state change is a compare-and-set on (id, expected status, version), so handlers are
/// idempotent and a duplicate message is harmless. Every non-terminal job is either leased to an
/// owner until a time, or waiting for a next-action time; `dueWork` finds the ones nobody is
/// looking after. Events of a change are written in the same transaction as the change.
///
/// Implementations: `SQLiteStore` (one host, shared by the services through WAL); a PostgreSQL
/// backend implements the same protocol for several hosts. All methods are safe to call
/// concurrently from any task.
public protocol GenerationStore: Sendable {
    // MARK: API keys

    /// Creates a key; the secret is returned once and only its hash is kept.
    func createAPIKey(name: String, isAdmin: Bool) async throws -> (key: APIKey, secret: String)
    /// The key whose secret this is, unless unknown or revoked.
    func apiKey(secret: String) async throws -> APIKey?
    func apiKeyCount() async throws -> Int

    // MARK: Generations

    /// Commits a new generation and its `generation.created` event durably.
    func insert(_ generation: Generation, event: Event) async throws
    func generation(id: String) async throws -> Generation?
    /// A key's generations, newest first, optionally of one status, after `cursor` (an id).
    func list(ownerKeyID: String, status: GenerationStatus?, after cursor: String?, limit: Int) async throws -> [Generation]

    /// Takes a lease on a generation in one of `statuses` that nobody holds (or whose lease
    /// expired) and that is due. Returns it with its new version, or nil if someone else has it,
    /// it moved on, or it is not due yet.
    func claim(id: String, statuses: Set<GenerationStatus>, owner: String, leaseUntil: Date, now: Date) async throws -> Generation?
    /// Extends a lease still held at `version`; false when lost (cancelled, expired and taken).
    func renewLease(id: String, owner: String, version: Int, until: Date) async throws -> Bool
    /// Gives up a lease still held at `version`, leaving the job due at `nextActionAt` for
    /// whoever comes next. False if the lease was already lost.
    func releaseLease(id: String, owner: String, version: Int, nextActionAt: Date) async throws -> Bool
    /// Applies `change` if the generation is still at (`from`, `version`); nil otherwise.
    func transition(_ change: Transition) async throws -> Generation?

    // MARK: Attempts and outputs

    /// Records a submission before the provider call is made.
    func recordAttempt(_ attempt: Attempt) async throws
    func updateAttempt(generationID: String, number: Int, state: Attempt.State, providerTaskID: String?, error: GenGateError?, at: Date) async throws
    func attempts(generationID: String) async throws -> [Attempt]
    /// Checkpoints one stored output (DESIGN.md rule 5) while the generation is uploading,
    /// with its `generation.output` event. False if the generation is no longer uploading.
    func recordStoredOutput(generationID: String, output: Output, event: Event) async throws -> Bool

    // MARK: Recovery

    /// Non-terminal generations whose lease expired, or that are unleased and were due before
    /// `staleBefore` (so their message was probably lost), or in `retry_wait` and due by `now`.
    func dueWork(now: Date, staleBefore: Date, limit: Int) async throws -> [DueWork]
    /// How many generations are in each non-terminal state now.
    func activeCounts() async throws -> [GenerationStatus: Int]
    /// Non-terminal generations past their deadline.
    func pastDeadline(now: Date, limit: Int) async throws -> [Generation]

    // MARK: Events

    /// The event log of one generation, oldest first.
    func events(generationID: String) async throws -> [Event]
}

/// An application's API key (the secret itself is never stored).
public struct APIKey: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var isAdmin: Bool
    public var createdAt: Date

    public init(id: String, name: String, isAdmin: Bool, createdAt: Date) {
        self.id = id
        self.name = name
        self.isAdmin = isAdmin
        self.createdAt = createdAt
    }
}

/// A generation that needs someone to look at it, and why.
public struct DueWork: Sendable, Equatable {
    public var id: String
    public var status: GenerationStatus
    public var leaseExpired: Bool

    public init(id: String, status: GenerationStatus, leaseExpired: Bool) {
        self.id = id
        self.status = status
        self.leaseExpired = leaseExpired
    }
}

/// A compare-and-set change of one generation: applied only if it is still at (`from`, `version`).
/// Fields left nil keep their value.
public struct Transition: Sendable {
    public enum LeaseChange: Sendable, Equatable {
        case keep
        case release
        case hold(owner: String, until: Date)
    }

    public var id: String
    public var from: GenerationStatus
    public var version: Int
    public var to: GenerationStatus
    public var at: Date
    public var progress: Int?
    public var attempts: Int?
    /// `.some(nil)` clears the error.
    public var error: GenGateError??
    public var providerTaskID: String??
    public var lease: LeaseChange
    /// `.some(nil)` clears it.
    public var nextActionAt: Date??
    /// Outputs the provider produced, recorded if not yet known (by index).
    public var newOutputs: [Output]
    /// Written with the change, in the same transaction.
    public var events: [Event]

    public init(id: String, from: GenerationStatus, version: Int, to: GenerationStatus, at: Date = Date(),
                progress: Int? = nil, attempts: Int? = nil, error: GenGateError?? = nil, providerTaskID: String?? = nil,
                lease: LeaseChange = .keep, nextActionAt: Date?? = nil, newOutputs: [Output] = [], events: [Event] = []) {
        self.id = id
        self.from = from
        self.version = version
        self.to = to
        self.at = at
        self.progress = progress
        self.attempts = attempts
        self.error = error
        self.providerTaskID = providerTaskID
        self.lease = lease
        self.nextActionAt = nextActionAt
        self.newOutputs = newOutputs
        self.events = events
    }

    /// A change of `generation` as last read.
    public static func of(_ generation: Generation, to: GenerationStatus, at: Date = Date()) -> Transition {
        Transition(id: generation.id, from: generation.status, version: generation.version, to: to, at: at)
    }
}

/// Store failures that callers act on.
public enum StoreError: Error, CustomStringConvertible, Equatable {
    /// The database's schema is not the one this build expects.
    case schemaMismatch(String)
    case duplicateID(String)

    public var description: String {
        switch self {
        case .schemaMismatch(let detail): return "store schema mismatch: \(detail)"
        case .duplicateID(let id): return "a generation with id \(id) already exists"
        }
    }
}
