import Foundation
import GenGateCore

// Rows as every store backend writes them, encoded before a write takes its lock.

/// An event in the form the events table keeps.
public struct EncodedEvent: Sendable {
    public var generationID: String?
    public var type: String
    public var at: Double
    public var payload: String
    /// For an event a webhook may want: its webhook event and a delivery id, should it need one.
    public var webhook: (event: WebhookEvent, deliveryID: String)?

    public static func encode(_ events: [Event]) throws -> [EncodedEvent] {
        try events.map { event in
            EncodedEvent(
                generationID: event.generationID, type: event.type.rawValue, at: event.at.timeIntervalSince1970,
                payload: String(decoding: try event.payload.encoded(), as: UTF8.self),
                webhook: event.generationID == nil
                    ? nil : WebhookEvent.of(event.type).map { ($0, Identifier.make("msg", at: event.at)) })
        }
    }
}

/// An attempt row.
public struct EncodedAttempt: Sendable {
    public var attempt: Attempt
    public var indexes: String
    public var error: String?
    /// The reported charge as the table keeps it (`ProviderCharge.json`).
    public var charge: String?

    public init(_ attempt: Attempt) throws {
        self.attempt = attempt
        indexes = String(decoding: try JSONCoding.encode(attempt.outputIndexes), as: UTF8.self)
        error = try attempt.error.map { String(decoding: try JSONCoding.encode($0), as: UTF8.self) }
        charge = try Self.encode(attempt.charge)
    }

    /// A reported charge as the table keeps it: the API's JSON (`credits`, `input_tokens`,
    /// `output_tokens`), which usage queries read.
    public static func encode(_ charge: ProviderCharge?) throws -> String? {
        try charge.map { String(decoding: try JSONCoding.encode($0.json), as: UTF8.self) }
    }

    public static func decodeCharge(_ text: String?) -> ProviderCharge? {
        guard let text, let json = try? JSONCoding.decode(JSONValue.self, from: Data(text.utf8)) else { return nil }
        return ProviderCharge(
            credits: json["credits"]?.doubleValue, inputTokens: json["input_tokens"]?.intValue,
            outputTokens: json["output_tokens"]?.intValue)
    }

    /// An attempt row read back (`output_indexes` and `error` as the table keeps them).
    public static func decode(
        generationID: String, number: Int, provider: String, clientReference: String, providerTaskID: String?,
        indexes: String, state: String, error: String?, createdAt: Double, finishedAt: Double?,
        possibleDoubleCharge: Bool, model: String?, cost: Double?, charge: String?, chargesOnAcceptance: Bool
    ) throws -> Attempt {
        Attempt(
            generationID: generationID, number: number, provider: provider, clientReference: clientReference,
            providerTaskID: providerTaskID, outputIndexes: try JSONCoding.decode([Int].self, from: Data(indexes.utf8)),
            state: Attempt.State(rawValue: state) ?? .abandoned,
            error: try error.map { try JSONCoding.decode(GenGateError.self, from: Data($0.utf8)) },
            createdAt: Date(timeIntervalSince1970: createdAt),
            finishedAt: finishedAt.map(Date.init(timeIntervalSince1970:)),
            possibleDoubleCharge: possibleDoubleCharge, model: model, cost: cost, charge: decodeCharge(charge),
            chargesOnAcceptance: chargesOnAcceptance)
    }
}

/// An attempt's compare-and-set.
public struct EncodedAttemptUpdate: Sendable {
    public var update: AttemptUpdate
    public var error: String?
    public var charge: String?
    /// When it finished: set once it reaches an outcome.
    public var finishedAt: Double?
    /// The states it must be in, as the table spells them.
    public var expected: [String]

    public init(_ update: AttemptUpdate) throws {
        self.update = update
        error = try update.error.map { String(decoding: try JSONCoding.encode($0), as: UTF8.self) }
        charge = try EncodedAttempt.encode(update.charge)
        finishedAt = (update.to == .submitting || update.to == .submitted) ? nil : update.at.timeIntervalSince1970
        expected = update.from.map(\.rawValue).sorted()
    }
}
