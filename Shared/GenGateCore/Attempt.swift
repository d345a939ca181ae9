import Foundation

/// One submission of a generation to a provider. It is recorded, with a client reference, before
/// the HTTP call (rule 4 of docs/ARCHITECTURE.md), so that after a crash recovery knows a submission may exist.
public struct Attempt: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Recorded; the provider call may or may not have reached the provider.
        case submitting
        /// The provider accepted it and gave a task id.
        case submitted
        case succeeded
        case failed
        /// Superseded: recovery decided this submission will not be used.
        case abandoned
    }

    public var generationID: String
    public var number: Int
    public var provider: String
    /// Our id for this submission, sent to providers that accept one, so it can be found again.
    public var clientReference: String
    public var providerTaskID: String?
    /// Output indexes this submission asked for.
    public var outputIndexes: [Int]
    public var state: State
    public var error: GenGateError?
    public var createdAt: Date
    public var finishedAt: Date?
    /// The provider may have charged for this submission although it delivered nothing GenGate
    /// uses (no answer, an unreadable one, a stop mid-call, outputs lost): whatever comes next
    /// (a retry, or the job failing) is counted against it.
    public var possibleDoubleCharge: Bool
    /// The model asked (one of a fallback route's); nil in attempts recorded before routes.
    public var model: String?

    public init(
        generationID: String, number: Int, provider: String, clientReference: String, providerTaskID: String?,
        outputIndexes: [Int], state: State, error: GenGateError?, createdAt: Date, finishedAt: Date?,
        possibleDoubleCharge: Bool = false, model: String? = nil
    ) {
        self.model = model
        self.generationID = generationID
        self.number = number
        self.provider = provider
        self.clientReference = clientReference
        self.providerTaskID = providerTaskID
        self.outputIndexes = outputIndexes
        self.state = state
        self.error = error
        self.createdAt = createdAt
        self.finishedAt = finishedAt
        self.possibleDoubleCharge = possibleDoubleCharge
    }
}
