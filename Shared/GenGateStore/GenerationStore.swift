import Foundation
import GenGateCore

/// The durable truth about every job (docs/ARCHITECTURE.md, "The store is the truth").
///
/// Every state change is a compare-and-set on (id, expected status, version), so handlers are
/// idempotent and a duplicate message is harmless. Every non-terminal job is either leased to an
/// owner until a time, or waiting for a next-action time; `dueWork` and `claimDue` find them by
/// index. A change commits together with its attempt writes and its events, and is durable when
/// the call returns, even if the calling task was cancelled meanwhile. The store itself refuses
/// what must never happen: a terminal job changing, an attempt's submission going back, more
/// outputs than asked for.
///
/// Implementations: `SQLiteStore` (one host, shared by the services through WAL); a PostgreSQL
/// backend implements the same protocol for several hosts. All methods are safe to call
/// concurrently from any task.
public protocol GenerationStore: MonitoringStore, ImageStore, SpendStore, ExperimentStore {
    // MARK: API keys

    /// Creates a key; the secret is returned once and only its hash is kept.
    func createAPIKey(name: String, isAdmin: Bool, budgets: KeyBudgets) async throws -> (key: APIKey, secret: String)
    /// The key whose secret this is, unless unknown or revoked.
    func apiKey(secret: String) async throws -> APIKey?
    func apiKeyCount() async throws -> Int
    /// Revokes a key: from now on it authenticates nothing. False if there is no such key or it
    /// was revoked already.
    func revokeAPIKey(id: String, at: Date) async throws -> Bool

    // MARK: Generations

    /// Commits a new generation and its `generation.created` event durably. With `idempotency`,
    /// a request repeated under the same key (of the same API key) within its window is not
    /// inserted again: the original is named instead; another request under that key is refused.
    func insert(_ generation: Generation, event: Event, idempotency: IdempotencyKey?) async throws -> InsertOutcome
    func generation(id: String) async throws -> Generation?
    /// A key's generations, newest first, optionally of one status, after `cursor` (an id).
    func list(ownerKeyID: String, status: GenerationStatus?, after cursor: String?, limit: Int) async throws
        -> [Generation]

    /// Takes a lease on a generation in one of `statuses` that nobody holds (or whose lease
    /// expired) and that is due. With `heldAt`, due or not, but only while still at that version:
    /// a job held back for its provider's limits, let go as it was held. Returns it with its new
    /// version, or nil if someone else has it, it moved on, or it is not due yet.
    func claim(
        id: String, statuses: Set<GenerationStatus>, owner: String, leaseUntil: Date, now: Date, heldAt: Int?
    ) async throws -> Generation?
    /// Takes leases on up to `limit` unleased jobs in `status` that are due by `now`, earliest
    /// first, skipping `excludingProviders`; returns them with their new versions.
    func claimDue(
        status: GenerationStatus, owner: String, leaseUntil: Date, now: Date, limit: Int,
        excludingProviders: Set<String>
    ) async throws -> [Generation]
    /// When the earliest unleased job in `status` is due, if any.
    func nextDue(status: GenerationStatus) async throws -> Date?
    /// Extends a lease still held at `version`; false when lost (cancelled, expired and taken).
    func renewLease(id: String, owner: String, version: Int, until: Date) async throws -> Bool
    /// Gives up a lease still held at `version`, leaving the job due at `nextActionAt` for
    /// whoever comes next. False if the lease was already lost.
    func releaseLease(id: String, owner: String, version: Int, nextActionAt: Date) async throws -> Bool
    /// Voids every lease held by `owners` (processes known to be gone), leaving their jobs due at
    /// `dueAt`. Returns how many leases were voided.
    func releaseLeases(owners: [String], dueAt: Date) async throws -> Int
    /// Voids leases that ran out before `now` (their holder is gone or stuck), leaving the jobs
    /// due at once and bumping their versions so a late holder can write nothing. Returns them.
    func releaseExpiredLeases(now: Date, limit: Int) async throws -> [DueWork]
    /// Records that service process `instance` is alive at `at` (its heartbeat), and that it is
    /// to count as gone once `silentAfter` seconds pass without another.
    func present(instance: String, at: Date, silentAfter: Double) async throws
    /// Forgets `instance` (it stopped and let go of its leases).
    func absent(instance: String) async throws
    /// Forgets every process silent at `now` (no heartbeat for its own `silentAfter`) and voids its
    /// leases on steps that are free to repeat (status checks, uploads), leaving those jobs due at
    /// `dueAt`; in one transaction, so a process that beats again in between keeps its leases.
    /// Leases on jobs `pending` or `dispatching` are left to run out: a process taken for gone
    /// may be alive and mid-submission, and voiding its lease could pay for the job twice.
    /// Returns the processes and how many leases were voided.
    func releaseLeasesOfSilentInstances(now: Date, dueAt: Date) async throws -> (instances: [String], leases: Int)
    /// Everyone holding a lease now.
    func leaseOwners() async throws -> [String]
    /// Applies `change` if the generation is still at (`from`, `version`) and its attempt update,
    /// if any, still finds the attempt in an expected state; nil otherwise (nothing written).
    func transition(_ change: Transition) async throws -> Generation?
    /// Counts one unexpected handler failure on a generation that `owner` holds, and lets go of
    /// it; at `limit` failures it fails the generation with `internal_error` (and `event`).
    /// Returns the count, or nil if `owner` does not hold it (or it ended).
    func recordHandlerFailure(id: String, owner: String, message: String, limit: Int, event: Event, at: Date)
        async throws -> Int?

    /// Takes a named lease that only one process holds at a time (e.g. the sweep's), or renews it.
    func lead(_ name: String, owner: String, until: Date, now: Date) async throws -> Bool

    // MARK: Attempts and outputs

    /// Records a submission before the provider call is made (normally part of a `Transition`).
    func recordAttempt(_ attempt: Attempt) async throws
    /// Applies `update` alone, if the attempt is still in one of its expected states.
    func updateAttempt(_ update: AttemptUpdate) async throws -> Bool
    func attempts(generationID: String) async throws -> [Attempt]
    /// Checkpoints one stored output (rule 5 of docs/ARCHITECTURE.md) while the generation is uploading,
    /// with its `generation.output` event. False if the generation is no longer uploading.
    func recordStoredOutput(generationID: String, output: Output, event: Event) async throws -> Bool
    /// A provider said that the task of attempt `attempt` ended: if that is the job's current
    /// attempt and the job is running, its next check is made due now and its check schedule
    /// starts again (a status API may lag its callback by a moment), unless a worker holds it
    /// (it is being checked) or it is due already. Changes nothing else.
    func nudgeCheck(generationID: String, attempt: Int, now: Date) async throws -> NudgeResult

    // MARK: Recovery

    /// Non-terminal generations whose lease expired, or that are unleased and were due before
    /// `staleBefore` (so their message was probably lost), or in `retry_wait` and due by `now`.
    /// Running generations are not in it unless their lease expired: pollers find due checks
    /// themselves (`claimDue`).
    func dueWork(now: Date, staleBefore: Date, limit: Int) async throws -> [DueWork]
    /// Attempts whose provider task may still be running while their generation has ended
    /// (cancelled, or failed at its deadline, with nobody left to stop the task): submitted
    /// ones, and submitting ones made before `submittingBefore` (whose worker is surely gone).
    func openAttemptsOfEndedGenerations(submittingBefore: Date, limit: Int) async throws -> [Attempt]
    /// Deletes up to `limit` events older than `eventsBefore` (and ended webhook deliveries made
    /// before then, with their attempts) and idempotency keys older than `keysBefore`, oldest
    /// first. Returns how many rows went. (Attempts and outputs stay: an
    /// attempt per submission is bounded by the retry policy, and outputs are what was bought.)
    func expire(eventsBefore: Date, keysBefore: Date, limit: Int) async throws -> Int
    /// Each provider's open tasks and current (adaptive) limits, for those that have either.
    func providerLimits() async throws -> [ProviderLimitState]
    /// How many generations are in each non-terminal state now.
    func activeCounts() async throws -> [GenerationStatus: Int]
    /// Non-terminal generations past their deadline.
    func pastDeadline(now: Date, limit: Int) async throws -> [Generation]

    /// How many pending jobs come before `generation` in the order the dispatchers take them;
    /// nil when it is not waiting to be dispatched (or waits for its batch's window, not the queue).
    func queuePosition(of generation: Generation) async throws -> Int?

    // MARK: Events

    /// Up to `limit` events of one generation with a sequence number above `seq`, oldest first.
    func events(generationID: String, after seq: Int64, limit: Int) async throws -> [StoredEvent]
    /// Up to `limit` events of `ownerKeyID`'s generations with a sequence number above `seq`,
    /// oldest first, looking at no more than `scan` events of the log past `seq`; and the
    /// sequence number it looked through (where the next call starts).
    ///
    /// A backend must hand out sequence numbers in commit order, so that a reader that saw
    /// number n never later finds a smaller one committed: SQLite's single writer does; a
    /// backend with concurrent writers must hold back numbers not yet safe to read past.
    func events(ownerKeyID: String, after seq: Int64, limit: Int, scan: Int) async throws
        -> (events: [StoredEvent], through: Int64)
    /// The sequence number of the newest event (0 when there is none).
    func lastEventSeq() async throws -> Int64

    // MARK: Batches

    /// Commits a batch and its generations (each with its event in `events`) in one transaction:
    /// the first `maxConcurrency` due at once, the rest held until released. With `idempotency`,
    /// as `insert` (the idempotency key then names the batch).
    func insertBatch(_ batch: Batch, generations: [Generation], events: [Event], idempotency: IdempotencyKey?)
        async throws -> InsertOutcome
    func batch(id: String) async throws -> Batch?
    /// A key's batches, newest first, after `cursor` (an id).
    func batches(ownerKeyID: String, after cursor: String?, limit: Int) async throws -> [Batch]
    /// Up to `limit` of a batch's jobs after position `index`, in order.
    func batchJobs(id: String, after index: Int, limit: Int) async throws -> [BatchJob]
    /// A batch's jobs by status, and how many of its pending ones are still held.
    func batchCounts(id: String) async throws -> (byStatus: [GenerationStatus: Int], held: Int)
    /// Releases held jobs of one batch (or of every batch holding some) while fewer than its
    /// `maxConcurrency` are unfinished: each becomes due now, its deadline counted from now.
    /// Returns the jobs released, for the dispatchers to be told.
    func releaseBatchJobs(batchID: String?, now: Date) async throws -> [String]
    /// Stops a batch (`reason`: `client` or `error`): nothing more is released, and its held jobs
    /// are cancelled with their events. Idempotent. Returns how many held jobs it cancelled;
    /// released ones still unfinished are for the caller to cancel (`unfinishedJobsOfStoppedBatches`).
    func stopBatch(id: String, reason: String, at: Date) async throws -> Int
    /// Batches with `stopOnError` that have a failed job and are not stopped yet.
    func batchesToStop(limit: Int) async throws -> [String]
    /// Released jobs still unfinished in batches stopped (in the last week).
    func unfinishedJobsOfStoppedBatches(limit: Int) async throws -> [String]

    // MARK: Webhooks

    // Deliveries are made by the store itself, in the transaction that records an event, for
    // each generation whose request has a `webhook` and lists the event's `WebhookEvent` in
    // `webhook_events`.

    /// An API key's signing secrets, if it has any.
    func webhookSecrets(keyID: String) async throws -> WebhookSecrets?
    /// Keeps `sealed` as the key's secret unless it has one already; returns the secrets it has.
    func createWebhookSecret(keyID: String, sealed: Data, at: Date) async throws -> WebhookSecrets
    /// Makes `sealed` the key's secret; the current one stays valid until `previousUntil`.
    func rotateWebhookSecret(keyID: String, sealed: Data, previousUntil: Date, at: Date) async throws
        -> WebhookSecrets
    /// Leases up to `limit` deliveries that are due, each the earliest pending one of its job
    /// (a job's deliveries go out in order).
    func claimWebhookDeliveries(owner: String, leaseUntil: Date, now: Date, limit: Int) async throws
        -> [WebhookDelivery]
    /// Records an attempt and what follows it; false (nothing written) if `owner` lost the lease.
    func recordWebhookAttempt(_ outcome: WebhookOutcome) async throws -> Bool
    /// A job's deliveries, oldest first, with their attempts.
    func webhookDeliveries(generationID: String) async throws -> [WebhookDelivery]
    /// Makes a delivery of `generationID` due now again (another round of attempts, the same
    /// `webhook-id`); false if there is no such delivery.
    func redeliverWebhook(id: String, generationID: String, now: Date) async throws -> Bool
}

/// What a nudge found.
public enum NudgeResult: Sendable, Equatable {
    /// The check is due now.
    case nudged
    /// Its check was due already.
    case alreadyDue
    /// A worker holds the job (a check is being made, or the submission's answer is being
    /// recorded): try again shortly.
    case busy
    /// The job is not running that attempt (or does not exist): nothing to do.
    case notRunning
}

extension GenerationStore {
    public func createAPIKey(name: String, isAdmin: Bool) async throws -> (key: APIKey, secret: String) {
        try await createAPIKey(name: name, isAdmin: isAdmin, budgets: KeyBudgets())
    }

    /// Takes a lease on a generation that is due (see the requirement).
    public func claim(id: String, statuses: Set<GenerationStatus>, owner: String, leaseUntil: Date, now: Date)
        async throws -> Generation?
    {
        try await claim(id: id, statuses: statuses, owner: owner, leaseUntil: leaseUntil, now: now, heldAt: nil)
    }

    /// The whole event log of one generation, oldest first.
    public func events(generationID: String) async throws -> [Event] {
        try await events(generationID: generationID, after: 0, limit: 1_000_000).map(\.event)
    }

    /// Commits a new generation with no idempotency key.
    public func insert(_ generation: Generation, event: Event) async throws {
        _ = try await insert(generation, event: event, idempotency: nil)
    }
}

/// An event as the store's log keeps it: with its place in the log (`seq`, increasing).
public struct StoredEvent: Sendable, Equatable {
    public var seq: Int64
    public var event: Event

    public init(seq: Int64, event: Event) {
        self.seq = seq
        self.event = event
    }
}

/// An application's `Idempotency-Key` for one submission.
public struct IdempotencyKey: Sendable, Equatable {
    public var key: String
    /// A digest of the request as validated: a repeat must match it.
    public var requestHash: String
    /// How long a key is remembered.
    public var window: TimeInterval

    public init(key: String, requestHash: String, window: TimeInterval) {
        self.key = key
        self.requestHash = requestHash
        self.window = window
    }
}

/// What `insert` did.
public enum InsertOutcome: Sendable, Equatable {
    case inserted
    /// The same request was made under this key before: this is its generation.
    case replayed(generationID: String)
    /// Another request was made under this key: this is its generation.
    case keyReused(generationID: String)
}

/// An application's API key (the secret itself is never stored).
public struct APIKey: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var isAdmin: Bool
    public var createdAt: Date
    public var budgets: KeyBudgets
    public var revokedAt: Date?

    public init(
        id: String, name: String, isAdmin: Bool, createdAt: Date, budgets: KeyBudgets = KeyBudgets(),
        revokedAt: Date? = nil
    ) {
        self.budgets = budgets
        self.revokedAt = revokedAt
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

/// Store failures that callers act on.
public enum StoreError: Error, CustomStringConvertible, Equatable {

    /// The database's schema is not the one this build expects.
    case schemaMismatch(String)
    case duplicateID(String)
    /// The store cannot be reached or is busy right now, and the call wrote nothing: trying again
    /// shortly is right.
    case unavailable(String)

    public var description: String {
        switch self {
        case .schemaMismatch(let detail): return "store schema mismatch: \(detail)"
        case .duplicateID(let id): return "a generation with id \(id) already exists"
        case .unavailable(let detail): return "store unavailable: \(detail)"
        }
    }
}
