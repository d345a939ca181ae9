import Foundation
import GenGateCore

/// What can go wrong with a call, typed.
public enum GenGateClientError: Error, CustomStringConvertible, Sendable {
    /// GenGate answered with an error (`code` from its one vocabulary, docs/ERRORS.md).
    case api(APIFailure)
    /// GenGate could not be reached, or a stream broke off for good.
    case transport(String)
    /// The job did not end in the time given (it goes on).
    case timeout(String)
    /// The job ended without completing (failed or cancelled): it says why in `error`.
    case jobFailed(Job)
    /// A webhook delivery whose signature does not hold.
    case invalidWebhook(String)

    /// A failure that may pass by itself (GenGate restarting, its store busy, a proxy's 502, a
    /// rate limit, a dropped connection): worth trying again.
    public var isPassing: Bool {
        switch self {
        case .api(let failure): failure.retryable || failure.status == 429 || failure.status >= 500
        case .transport: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .api(let failure): "\(failure.code): \(failure.message)"
        case .transport(let text), .timeout(let text): text
        case .jobFailed(let job):
            "generation \(job.id) \(job.status.rawValue): \(job.error.map { "\($0.code): \($0.message)" } ?? "")"
        case .invalidWebhook(let text): "invalid webhook: \(text)"
        }
    }
}

/// An error answer of the API.
public struct APIFailure: Sendable, Equatable {
    public struct Detail: Sendable, Equatable {
        public var path: String
        public var message: String
    }

    public var status: Int
    public var code: String
    public var message: String
    public var retryable: Bool
    /// Every bad field of a request, with its path.
    public var details: [Detail]
}

/// A generation as the API shows it: typed accessors for what applications use, and the whole
/// answer in `json`.
public struct Job: Sendable, Equatable {
    public let json: JSONValue

    public var id: String { json["id"]?.stringValue ?? "" }
    public var status: GenerationStatus { json["status"]?.stringValue.flatMap(GenerationStatus.init) ?? .pending }
    public var model: String { json["model"]?.stringValue ?? "" }
    public var progress: Int { json["progress"]?.intValue ?? 0 }
    public var outputs: [JobOutput] {
        (json["outputs"]?.arrayValue ?? []).map {
            JobOutput(
                index: $0["index"]?.intValue ?? 0, url: $0["url"]?.stringValue ?? "",
                contentType: $0["content_type"]?.stringValue ?? "", bytes: $0["bytes"]?.intValue ?? 0,
                sha256: $0["sha256"]?.stringValue ?? "")
        }
    }
    /// Why it failed or was cancelled.
    public var error: JobFailure? {
        guard let error = json["error"], error != .null else { return nil }
        return JobFailure(
            code: error["code"]?.stringValue ?? "", message: error["message"]?.stringValue ?? "",
            retryable: error["retryable"] == .bool(true), reason: error["reason"]?.stringValue)
    }
}

public struct JobOutput: Sendable, Equatable {
    public var index: Int
    /// Where to fetch it (with the API key).
    public var url: String
    public var contentType: String
    public var bytes: Int
    public var sha256: String
}

public struct JobFailure: Sendable, Equatable {
    public var code: String
    public var message: String
    public var retryable: Bool
    public var reason: String?
}

public enum BatchPriority: String, Sendable {
    case low, normal, high
}

/// A batch as the API shows it.
public struct BatchStatus: Sendable, Equatable {
    public let json: JSONValue

    public var id: String { json["id"]?.stringValue ?? "" }
    /// `processing`, `completed`, `partial_failed`, `failed` or `cancelled`.
    public var status: String { json["status"]?.stringValue ?? "" }
    public var total: Int { json["total"]?.intValue ?? 0 }
    /// Jobs by state: `queued`, `pending`, `running`, `completed`, `failed`, `cancelled`.
    public var counts: [String: Int] {
        guard case .object(let counts)? = json["counts"] else { return [:] }
        return counts.compactMapValues(\.intValue)
    }
    public var progress: Int { json["progress"]?.intValue ?? 0 }
    public var isFinished: Bool { status != "processing" }
}

/// A job's event as its stream says it.
public enum JobEvent: Sendable, Equatable {
    /// An event (`id` resumes after it).
    case event(id: String?, Event)
    /// While waiting to be dispatched: how many jobs are ahead.
    case queue(position: Int)
    /// The job's stream ended: the job ended so.
    case done(status: GenerationStatus)

    init?(_ message: ServerSentEvents.Message) {
        let data = Data(message.data.utf8)
        switch message.event {
        case "done":
            guard let json = try? JSONCoding.decode(JSONValue.self, from: data),
                let status = json["status"]?.stringValue.flatMap(GenerationStatus.init)
            else { return nil }
            self = .done(status: status)
        case "queue":
            guard let json = try? JSONCoding.decode(JSONValue.self, from: data),
                let position = json["position"]?.intValue
            else { return nil }
            self = .queue(position: position)
        default:
            // An event type this client does not know (a newer GenGate) is skipped.
            guard let event = try? JSONCoding.decode(Event.self, from: data) else { return nil }
            self = .event(id: message.id, event)
        }
    }
}

/// A verified webhook delivery: its `webhook-id` (the same on every retry) and its body.
public struct WebhookPayload: Sendable, Equatable {
    public var id: String
    public var json: JSONValue

    /// `generation.output`, `generation.completed`, … (the event it carries).
    public var type: String { json["type"]?.stringValue ?? "" }
    /// The job as it was when the delivery was made.
    public var job: Job { Job(json: json["data"] ?? .null) }
}

/// The WHATWG `text/event-stream` format, read incrementally: bytes in, whole messages out.
struct ServerSentEvents {
    struct Message: Equatable {
        var id: String?
        var event = "message"
        var data = ""
        var retry: Int?
    }

    private var pending: [UInt8] = []
    private var current = Message()
    private var hasData = false

    mutating func feed(_ bytes: some Sequence<UInt8>) -> [Message] {
        pending.append(contentsOf: bytes)
        var messages: [Message] = []
        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
            var line = Array(pending[..<newline])
            pending.removeFirst(newline + 1)
            if line.last == UInt8(ascii: "\r") { line.removeLast() }
            let text = String(decoding: line, as: UTF8.self)
            if text.isEmpty {
                if hasData || current.retry != nil { messages.append(current) }
                current = Message()
                hasData = false
                continue
            }
            if text.hasPrefix(":") { continue }  // a comment: keep-alive
            let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            let field = String(parts[0])
            var value = parts.count > 1 ? String(parts[1]) : ""
            if value.hasPrefix(" ") { value.removeFirst() }
            switch field {
            case "id": current.id = value
            case "event": current.event = value
            case "data":
                current.data += (hasData ? "\n" : "") + value
                hasData = true
            case "retry": current.retry = Int(value)
            default: break
            }
        }
        return messages
    }
}
