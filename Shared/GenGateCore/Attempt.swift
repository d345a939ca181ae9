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
    /// What this submission costs if the provider charges for it, in the price table's currency:
    /// the model's price for the outputs it asked, or, for a model priced by tokens, the tokens
    /// the provider reported using. Nil for attempts recorded before costs were.
    public var cost: Double?
    /// What the provider reported charging, where it says (Flux `cost`, Pollo `credit`, OpenAI
    /// `usage`), beside `cost`.
    public var charge: ProviderCharge?
    /// The provider charges once it has accepted a task, however the task ends (Replicate bills
    /// the time a failed prediction ran; a synchronous call is accepted when it answers).
    public var chargesOnAcceptance: Bool

    public init(
        generationID: String, number: Int, provider: String, clientReference: String, providerTaskID: String?,
        outputIndexes: [Int], state: State, error: GenGateError?, createdAt: Date, finishedAt: Date?,
        possibleDoubleCharge: Bool = false, model: String? = nil, cost: Double? = nil, charge: ProviderCharge? = nil,
        chargesOnAcceptance: Bool = false
    ) {
        self.model = model
        self.cost = cost
        self.charge = charge
        self.chargesOnAcceptance = chargesOnAcceptance
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

extension Attempt {
    /// Whether this submission counts as paid for: it delivered, the provider reported a charge,
    /// it was accepted by a provider that charges on acceptance, or it may have been charged
    /// without delivering (a counted possible double charge). The stores' `chargedSQL` says the same.
    public var charged: Bool {
        state == .succeeded || possibleDoubleCharge || charge != nil
            || (chargesOnAcceptance && providerTaskID != nil)
    }
}
