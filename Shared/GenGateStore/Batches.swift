import Foundation
import GenGateCore

/// Many generations submitted in one call, run at most `maxConcurrency` at a time: the rest are
/// held in the store (`held`, no due time) and released one by one as others end, so a batch of
/// 10,000 neither floods the dispatchers nor keeps other callers' jobs waiting behind it.
public struct Batch: Sendable, Equatable {
    public var id: String
    public var ownerKeyID: String
    public var total: Int
    public var maxConcurrency: Int
    /// The first failed job stops the batch: jobs not started are cancelled, and running ones.
    public var stopOnError: Bool
    /// Dispatch order against other jobs: higher first (low −1, normal 0, high 1).
    public var priority: Int
    public var metadata: [String: JSONValue]
    public var createdAt: Date
    /// When it was stopped, and why (`client`: cancelled; `error`: a job failed with `stopOnError`).
    public var stoppedAt: Date?
    public var stopReason: String?

    public init(
        id: String, ownerKeyID: String, total: Int, maxConcurrency: Int, stopOnError: Bool, priority: Int,
        metadata: [String: JSONValue], createdAt: Date, stoppedAt: Date? = nil, stopReason: String? = nil
    ) {
        self.id = id
        self.ownerKeyID = ownerKeyID
        self.total = total
        self.maxConcurrency = maxConcurrency
        self.stopOnError = stopOnError
        self.priority = priority
        self.metadata = metadata
        self.createdAt = createdAt
        self.stoppedAt = stoppedAt
        self.stopReason = stopReason
    }
}

/// One job of a batch, as a batch's listing shows it.
public struct BatchJob: Sendable, Equatable {
    public var index: Int
    public var generationID: String
    public var status: GenerationStatus
    /// Waiting for the batch's window (not yet released to the dispatchers).
    public var held: Bool
    public var errorCode: String?

    public init(index: Int, generationID: String, status: GenerationStatus, held: Bool, errorCode: String?) {
        self.index = index
        self.generationID = generationID
        self.status = status
        self.held = held
        self.errorCode = errorCode
    }
}

extension Batch {
    /// What a stopped batch's held jobs end with: the cancellation's reason (`client` or
    /// `batch`) and their error (`reason` as `stopBatch` takes it).
    public static func stopCancellation(reason: String) -> (why: String, error: GenGateError) {
        let why = reason == "client" ? "client" : "batch"
        let message = reason == "client" ? "cancelled with its batch" : "cancelled: another job of its batch failed"
        return (why, GenGateError(.cancelled, message, reason: why))
    }
}

/// Which of a batch's jobs take room under its `max_concurrency`.
public enum BatchRoom {
    /// For each job, in order, whether it is held back at insert: jobs waiting for another's output
    /// take no room (they start when that output is there); of the rest, those past the first
    /// `maxConcurrency` are held.
    public static func held(_ generations: [Generation], maxConcurrency: Int) -> [Bool] {
        var taking = 0
        return generations.map { generation in
            guard generation.status != .waiting else { return false }
            defer { taking += 1 }
            return taking >= maxConcurrency
        }
    }
}
