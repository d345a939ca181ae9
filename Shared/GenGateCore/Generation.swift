import Foundation

/// One generation job as the store holds it: the request, where it is in its lifecycle, who owns
/// it (lease) or when it is next due, and what it produced. A value: read it, decide, then ask the
/// store to compare-and-set on (`id`, `status`, `version`).
public struct Generation: Codable, Sendable, Equatable {
    public var id: String
    /// The API key that created it; only that key can see it.
    public var ownerKeyID: String
    public var request: GenerationRequest
    public var provider: String
    public var status: GenerationStatus
    /// Bumped by every state change; the token of compare-and-set.
    public var version: Int
    public var progress: Int
    /// Provider submissions made so far.
    public var attempts: Int
    public var error: GenGateError?
    /// The provider's id for the current attempt's task, once it is known.
    public var providerTaskID: String?
    public var leaseOwner: String?
    public var leaseExpiresAt: Date?
    /// When the job is next due for work when nobody holds it.
    public var nextActionAt: Date?
    public var deadlineAt: Date
    public var createdAt: Date
    public var updatedAt: Date
    /// The time each state was last entered.
    public var phaseTimes: [GenerationStatus: Date]
    public var outputs: [Output]
    /// Status checks of the current provider task so far, and how many failed in a row.
    public var checks: Int
    public var checkFailures: Int
    /// When the job is cancelled if still unfinished (the client's `Cancel-After`); `deadlineAt`
    /// is never later.
    public var cancelAt: Date?
    /// The models to try in order (a fallback alias's); empty: just `request.model`.
    public var route: [String]
    /// Which of `route` the job is on.
    public var routeIndex: Int
    /// The batch it belongs to, if any.
    public var batchID: String?
    /// Dispatch order against other pending jobs: higher first (a batch's `priority`).
    public var priority: Int
    /// What was done to each input image for the provider it was last sent to, recorded with
    /// that submission's attempt.
    public var inputs: [PreparedInput]
    /// While `waiting`: the job whose output it waits for (the first of its inputs' jobs not
    /// completed yet).
    public var waitsFor: String?
    /// What its key's budget holds back for it while it runs (the most it is expected to cost on
    /// its route); when it ends, its charged attempts count instead. Nil: nothing held (jobs
    /// made before budgets).
    public var reservedCost: Double?
    /// The experiment it was enrolled in and the variant it got; nil: none.
    public var experiment: ExperimentAssignment?
    /// A model of its route without a price, when it has one: a key with a budget is refused
    /// such a job (what it spent could not be counted). Set at submission, checked by the store
    /// after an Idempotency-Key's replay; not stored.
    public var unpricedModel: String?

    public init(
        id: String, ownerKeyID: String, request: GenerationRequest, provider: String, status: GenerationStatus,
        version: Int, progress: Int, attempts: Int, error: GenGateError?, providerTaskID: String?,
        leaseOwner: String?, leaseExpiresAt: Date?, nextActionAt: Date?, deadlineAt: Date, createdAt: Date,
        updatedAt: Date, phaseTimes: [GenerationStatus: Date], outputs: [Output], checks: Int = 0,
        checkFailures: Int = 0, cancelAt: Date? = nil, route: [String] = [], routeIndex: Int = 0,
        batchID: String? = nil, priority: Int = 0, inputs: [PreparedInput] = [], waitsFor: String? = nil,
        reservedCost: Double? = nil, experiment: ExperimentAssignment? = nil
    ) {
        self.inputs = inputs
        self.waitsFor = waitsFor
        self.reservedCost = reservedCost
        self.experiment = experiment
        self.batchID = batchID
        self.priority = priority
        self.cancelAt = cancelAt
        self.route = route
        self.routeIndex = routeIndex
        self.id = id
        self.ownerKeyID = ownerKeyID
        self.request = request
        self.provider = provider
        self.status = status
        self.version = version
        self.progress = progress
        self.attempts = attempts
        self.error = error
        self.providerTaskID = providerTaskID
        self.leaseOwner = leaseOwner
        self.leaseExpiresAt = leaseExpiresAt
        self.nextActionAt = nextActionAt
        self.deadlineAt = deadlineAt
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.phaseTimes = phaseTimes
        self.outputs = outputs
        self.checks = checks
        self.checkFailures = checkFailures
    }

    /// The jobs whose outputs are its input images, in order, each once.
    public var parents: [String] {
        var seen: [String] = []
        for case .output(let parent, _) in request.images ?? [] where !seen.contains(parent) { seen.append(parent) }
        return seen
    }

    /// The model the job is on now: its route's current one, else the one asked for.
    public var model: String { route.indices.contains(routeIndex) ? route[routeIndex] : request.model }

    /// Whether reaching `deadlineAt` cancels the job (its Cancel-After) rather than failing it.
    public var deadlineCancels: Bool { cancelAt.map { $0 <= deadlineAt } ?? false }

    /// Output indexes (0..<n) not yet stored in object storage.
    public var missingOutputIndexes: [Int] {
        let stored = Set(outputs.filter { $0.isStored }.map(\.index))
        return (0..<request.n).filter { !stored.contains($0) }
    }
}
