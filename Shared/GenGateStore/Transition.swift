import Foundation
import GenGateCore

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
    /// Status checks of the current provider task so far, and failed ones in a row.
    public var checks: Int?
    public var checkFailures: Int?
    /// Outputs the provider produced, recorded if not yet known (by index).
    public var newOutputs: [Output]
    /// An attempt to record with the change (a submission about to be made).
    public var newAttempt: Attempt?
    /// An attempt's outcome to record with the change; the whole change is refused if the
    /// attempt is no longer in an expected state.
    public var attemptUpdate: AttemptUpdate?
    /// Written with the change, in the same transaction.
    public var events: [Event]
    /// Moves the job along its fallback route: to this index, whose model's provider is this.
    public var routeMove: RouteMove?
    /// A submission's admission under its provider's limits: the change is refused with
    /// `ProviderAtLimit` (nothing written) when the provider has no room.
    public var admission: ProviderAdmission?
    /// A submission's outcome, adapting its provider's limits in the same transaction.
    public var limitFeedback: LimitFeedback?
    /// What was done to the input images for this submission (replaces the recorded ones).
    public var inputs: [PreparedInput]?
    /// The job a `waiting` job waits for; `.some(nil)` clears it.
    public var waitsFor: String??
    /// A new deadline (a chain's step, once its input is there, gets its whole time from then).
    public var deadlineAt: Date?
    /// Holds the job back in its batch, for `releaseBatchJobs` to release when there is room
    /// (a chain's step whose input is there, in a batch): no due time, counted in the batch's
    /// `held_count`.
    public var holdInBatch: String?
    /// The generation as last read, when known: the store then returns it changed without
    /// reading it back.
    public var base: Generation?

    public init(
        id: String, from: GenerationStatus, version: Int, to: GenerationStatus, at: Date = Date(),
        progress: Int? = nil, attempts: Int? = nil, error: GenGateError?? = nil, providerTaskID: String?? = nil,
        lease: LeaseChange = .keep, nextActionAt: Date?? = nil, checks: Int? = nil, checkFailures: Int? = nil,
        newOutputs: [Output] = [], newAttempt: Attempt? = nil, attemptUpdate: AttemptUpdate? = nil, events: [Event] = []
    ) {
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
        self.checks = checks
        self.checkFailures = checkFailures
        self.newOutputs = newOutputs
        self.newAttempt = newAttempt
        self.attemptUpdate = attemptUpdate
        self.events = events
    }

    /// A change of `generation` as last read.
    public static func of(_ generation: Generation, to: GenerationStatus, at: Date = Date()) -> Transition {
        var change = Transition(id: generation.id, from: generation.status, version: generation.version, to: to, at: at)
        change.base = generation
        return change
    }
}

/// A step along a fallback route.
public struct RouteMove: Sendable, Equatable {
    public var index: Int
    public var provider: String

    public init(index: Int, provider: String) {
        self.index = index
        self.provider = provider
    }
}

/// A compare-and-set change of one attempt: applied only while the attempt is in one of `from`.
/// A provider task id, once recorded, never changes; a finished attempt never changes again.
public struct AttemptUpdate: Sendable, Equatable {
    public var generationID: String
    public var number: Int
    public var from: Set<Attempt.State>
    public var to: Attempt.State
    public var providerTaskID: String?
    public var error: GenGateError?
    /// Marks a submission that may have been made twice (counted in `possibleDoubleCharges`).
    public var possibleDoubleCharge: Bool
    public var at: Date
    /// What the provider reported charging (kept with what was recorded before: the later
    /// report's fields win).
    public var charge: ProviderCharge?
    /// The attempt's cost as the reported charge makes it (a model priced by tokens), replacing
    /// the estimate recorded with the attempt.
    public var cost: Double?

    public init(
        generationID: String, number: Int, from: Set<Attempt.State>, to: Attempt.State, providerTaskID: String? = nil,
        error: GenGateError? = nil, possibleDoubleCharge: Bool = false, at: Date = Date(),
        charge: ProviderCharge? = nil, cost: Double? = nil
    ) {
        self.charge = charge
        self.cost = cost
        self.generationID = generationID
        self.number = number
        self.from = from
        self.to = to
        self.providerTaskID = providerTaskID
        self.error = error
        self.possibleDoubleCharge = possibleDoubleCharge
        self.at = at
    }

    /// This update with what the provider reported charging for `model`'s call, if it did.
    public func reported(_ charge: ProviderCharge?, prices: PriceTable, model: String) -> AttemptUpdate {
        guard let charge else { return self }
        var update = self
        update.charge = charge
        update.cost = prices.actual(model: model, charge: charge)
        return update
    }
}

extension Generation {
    /// This generation as `change` leaves it (the store's compare-and-set having taken), without
    /// reading it back: the same rules as the store's SQL, kept beside it.
    public func applying(_ change: Transition) -> Generation {
        var next = self
        next.status = change.to
        next.version = change.version + 1
        next.updatedAt = change.at
        if change.to != change.from && change.to != .pending { next.phaseTimes[change.to] = change.at }
        if let progress = change.progress { next.progress = progress }
        if let attempts = change.attempts { next.attempts = attempts }
        if let error = change.error { next.error = error }
        if let taskID = change.providerTaskID { next.providerTaskID = taskID }
        switch change.lease {
        case .keep: break
        case .release:
            next.leaseOwner = nil
            next.leaseExpiresAt = nil
        case .hold(let owner, let until):
            next.leaseOwner = owner
            next.leaseExpiresAt = until
        }
        if change.to.isTerminal {
            next.leaseOwner = nil
            next.leaseExpiresAt = nil
            next.nextActionAt = nil
        } else if let at = change.nextActionAt {
            next.nextActionAt = at
        }
        if let checks = change.checks { next.checks = checks }
        if let failures = change.checkFailures { next.checkFailures = failures }
        if let move = change.routeMove {
            next.routeIndex = move.index
            next.provider = move.provider
        }
        if let inputs = change.inputs { next.inputs = inputs }
        if let waitsFor = change.waitsFor { next.waitsFor = waitsFor }
        if let deadline = change.deadlineAt { next.deadlineAt = deadline }
        for output in change.newOutputs {
            if let index = next.outputs.firstIndex(where: { $0.index == output.index }) {
                if !next.outputs[index].isStored {
                    next.outputs[index].source = output.source
                    next.outputs[index].contentType = output.contentType
                }
            } else {
                next.outputs.append(output)
            }
        }
        next.outputs.sort { $0.index < $1.index }
        return next
    }
}
