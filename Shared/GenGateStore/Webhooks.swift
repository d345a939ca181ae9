import Foundation
import GenGateCore

/// One event of one job on its way to the application's webhook. Made in the transaction that
/// records the event (so none is lost), sent at least once by api-ingress, signed in the
/// Standard Webhooks form with `id` as `webhook-id` (the same on every retry and redelivery, so
/// receivers can drop duplicates).
public struct WebhookDelivery: Sendable, Equatable {
    public enum State: String, Sendable, Codable {
        case pending, delivered, failed
    }

    public var id: String
    public var generationID: String
    public var ownerKeyID: String
    /// The event's place in the store's log.
    public var eventSeq: Int64
    public var eventType: EventType
    public var url: String
    public var state: State
    public var attempts: Int
    public var nextAttemptAt: Date?
    /// The body as first sent; every later attempt sends it again, byte for byte.
    public var body: String?
    public var createdAt: Date
    public var deliveredAt: Date?
    public var history: [WebhookAttempt]

    public init(
        id: String, generationID: String, ownerKeyID: String, eventSeq: Int64, eventType: EventType, url: String,
        state: State, attempts: Int, nextAttemptAt: Date?, body: String?, createdAt: Date, deliveredAt: Date?,
        history: [WebhookAttempt] = []
    ) {
        self.id = id
        self.generationID = generationID
        self.ownerKeyID = ownerKeyID
        self.eventSeq = eventSeq
        self.eventType = eventType
        self.url = url
        self.state = state
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
        self.body = body
        self.createdAt = createdAt
        self.deliveredAt = deliveredAt
        self.history = history
    }
}

/// One try to deliver a webhook and what the receiver said.
public struct WebhookAttempt: Sendable, Equatable {
    public var number: Int
    public var at: Date
    /// The receiver's HTTP status, if it answered.
    public var statusCode: Int?
    /// Why it failed, if it did (no answer, refused address, a non-2xx status).
    public var error: String?
    public var durationMs: Int

    public init(number: Int, at: Date, statusCode: Int?, error: String?, durationMs: Int) {
        self.number = number
        self.at = at
        self.statusCode = statusCode
        self.error = error
        self.durationMs = durationMs
    }
}

/// What an attempt leads to: recorded with `WebhookAttempt` by `recordWebhookAttempt`.
public struct WebhookOutcome: Sendable, Equatable {
    public var deliveryID: String
    /// The process that claimed it: the record is refused if another took it since.
    public var owner: String
    public var attempt: WebhookAttempt
    /// The body sent, kept for later attempts (ignored once one is kept); nil if it could not
    /// be made this time.
    public var body: String?
    public var state: WebhookDelivery.State
    /// When to try again (`pending` only).
    public var nextAttemptAt: Date?

    public init(
        deliveryID: String, owner: String, attempt: WebhookAttempt, body: String?, state: WebhookDelivery.State,
        nextAttemptAt: Date?
    ) {
        self.deliveryID = deliveryID
        self.owner = owner
        self.attempt = attempt
        self.body = body
        self.state = state
        self.nextAttemptAt = nextAttemptAt
    }
}

/// An API key's webhook signing secrets, sealed (`SecretBox`): the current one, and during a
/// rotation the one before it, which deliveries are also signed with until `previousUntil`.
public struct WebhookSecrets: Sendable, Equatable {
    public var sealed: Data
    public var previous: Data?
    public var previousUntil: Date?
    public var createdAt: Date

    public init(sealed: Data, previous: Data?, previousUntil: Date?, createdAt: Date) {
        self.sealed = sealed
        self.previous = previous
        self.previousUntil = previousUntil
        self.createdAt = createdAt
    }
}
