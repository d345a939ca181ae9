import Foundation
import GenGateCore

/// How a simulator misbehaves, set at start and changed at run time (`POST /_sim/config`, a JSON
/// object with any of these fields). Probabilities are per API call (the `p_429` … `p_balance`
/// answers) or per task (`p_stuck`, `p_empty`, `p_policy`, decided at submission).
public struct SimKnobs: Codable, Sendable, Equatable {
    /// Every API call answers after this long.
    public var latencyMs = 0
    /// A task runs this long before it ends.
    public var taskSeconds = 1.0
    /// A task waits queued (pending, cancellable everywhere) this long first, at most a quarter of
    /// `task_seconds`.
    public var queueSeconds = 0.2
    /// A call is refused as rate limited, with `Retry-After: retry_after_s`.
    public var p429 = 0.0
    public var retryAfterS = 1.0
    /// A call answers a server error.
    public var p5xx = 0.0
    /// A call's connection is dropped before the answer is complete.
    public var pReset = 0.0
    /// A call never answers (the client's timeout ends it).
    public var pTimeout = 0.0
    /// A task never finishes.
    public var pStuck = 0.0
    /// A call answers 200 with a body that is not JSON.
    public var pMalformed = 0.0
    /// A task succeeds without outputs.
    public var pEmpty = 0.0
    /// A task is refused by the content policy.
    public var pPolicy = 0.0
    /// A submission is refused for want of balance.
    public var pBalance = 0.0
    /// A submission is accepted (the task runs, and is paid for) but its answer is lost: the
    /// connection drops before it arrives. The case that tempts a client to pay twice.
    public var pLostAnswer = 0.0
    /// Tasks that may be active (not ended) at once; a submission over it is refused as rate
    /// limited, as providers refuse a concurrency breach. 0: no limit.
    public var maxActive = 0
    /// The side of the square PNG images tasks make (8 by default: small and quick; larger to
    /// feed them to a model with a minimum size, as a chain does).
    public var imageSide = 8

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case latencyMs = "latency_ms"
        case taskSeconds = "task_seconds"
        case queueSeconds = "queue_seconds"
        case p429 = "p_429"
        case retryAfterS = "retry_after_s"
        case p5xx = "p_5xx"
        case pReset = "p_reset"
        case pTimeout = "p_timeout"
        case pStuck = "p_stuck"
        case pMalformed = "p_malformed"
        case pEmpty = "p_empty"
        case pPolicy = "p_policy"
        case pBalance = "p_balance"
        case pLostAnswer = "p_lost_answer"
        case maxActive = "max_active"
        case imageSide = "image_side"
    }

    /// These knobs with the fields of `patch` applied; a clear error for an unknown field or a
    /// value out of range, nothing applied then.
    public func applying(_ patch: JSONValue) throws -> SimKnobs {
        guard case .object(let fields) = patch else { throw SimError("the configuration must be a JSON object") }
        let known = Set(CodingKeys.allCases.map(\.rawValue))
        if let unknown = fields.keys.sorted().first(where: { !known.contains($0) }) {
            throw SimError("unknown knob \(unknown); known: \(known.sorted().joined(separator: ", "))")
        }
        var knobs = self
        for (name, value) in fields {
            guard case .number(let number) = value, number.isFinite else {
                throw SimError("\(name) must be a number")
            }
            switch name {
            case "latency_ms":
                guard number >= 0, number <= 600_000 else { throw SimError("latency_ms must be 0…600000") }
                knobs.latencyMs = Int(number)
            case "task_seconds":
                guard number >= 0, number <= 86_400 else { throw SimError("task_seconds must be 0…86400") }
                knobs.taskSeconds = number
            case "queue_seconds":
                guard number >= 0, number <= 86_400 else { throw SimError("queue_seconds must be 0…86400") }
                knobs.queueSeconds = number
            case "image_side":
                guard number >= 1, number <= 2_048 else { throw SimError("image_side must be 1…2048") }
                knobs.imageSide = Int(number)
            case "max_active":
                guard number >= 0, number <= 1_000_000 else { throw SimError("max_active must be 0…1000000") }
                knobs.maxActive = Int(number)
            case "retry_after_s":
                guard number >= 0, number <= 3_600 else { throw SimError("retry_after_s must be 0…3600") }
                knobs.retryAfterS = number
            default:
                guard (0...1).contains(number) else { throw SimError("\(name) is a probability: 0…1") }
                switch name {
                case "p_429": knobs.p429 = number
                case "p_5xx": knobs.p5xx = number
                case "p_reset": knobs.pReset = number
                case "p_timeout": knobs.pTimeout = number
                case "p_stuck": knobs.pStuck = number
                case "p_malformed": knobs.pMalformed = number
                case "p_empty": knobs.pEmpty = number
                case "p_policy": knobs.pPolicy = number
                case "p_lost_answer": knobs.pLostAnswer = number
                default: knobs.pBalance = number
                }
            }
        }
        return knobs
    }
}

/// What a simulator was asked, for tests that prove nothing was paid for twice.
public struct SimStats: Codable, Sendable, Equatable {
    public var submissions = 0
    public var statusCalls = 0
    public var cancels = 0
    /// Second (and later) submissions carrying a client reference already seen.
    public var duplicateSubmissions = 0
    /// Submissions whose answer the simulator dropped on purpose (`p_lost_answer`).
    public var lostAnswers = 0
    /// Callbacks sent when tasks ended, and those the receiver did not take (no 2xx).
    public var callbacks = 0
    public var failedCallbacks = 0
    /// The most tasks active at once, and submissions refused for `max_active`.
    public var peakActive = 0
    public var busyRefusals = 0
    /// The input images submissions carried, the latest last (see `ReceivedImage`).
    public var receivedImages: [ReceivedImage] = []

    public init() {}

    enum CodingKeys: String, CodingKey {
        case submissions
        case statusCalls = "status_calls"
        case cancels
        case duplicateSubmissions = "duplicate_submissions"
        case lostAnswers = "lost_answers"
        case callbacks
        case failedCallbacks = "failed_callbacks"
        case peakActive = "peak_active"
        case busyRefusals = "busy_refusals"
        case receivedImages = "received_images"
    }
}

public struct SimError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
