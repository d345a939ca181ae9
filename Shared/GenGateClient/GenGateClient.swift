import AsyncHTTPClient
import Foundation
import GenGateCore
import NIOCore
import NIOHTTP1

/// A client of GenGate's HTTP API for Swift applications: submit a generation, wait for it,
/// follow its events live (an `AsyncSequence`, resumed after a dropped connection), stream its
/// text as it is written, cancel it; batches; and checking a webhook delivery's signature.
///
/// ```swift
/// let gengate = GenGateClient(baseURL: "http://127.0.0.1:8080", apiKey: key)
/// let job = try await gengate.submit(GenerationRequest(model: "sim/image", prompt: "a lighthouse", n: 2))
/// let done = try await gengate.wait(for: job.id)
/// for output in done.outputs { print(output.url) }
/// ```
public struct GenGateClient: Sendable {
    public let baseURL: String
    let key: String
    let http: HTTPClient

    public init(baseURL: String, apiKey: String, httpClient: HTTPClient = .shared) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.key = apiKey
        self.http = httpClient
    }

    // MARK: Generations

    /// Submits a generation. With `wait` (1–60 s) the answer waits for the job to end and is the
    /// ended job if it did; otherwise (and without `wait`) the job as just accepted.
    public func submit(
        _ request: GenerationRequest, idempotencyKey: String? = nil, cancelAfter: String? = nil, wait: Int? = nil
    ) async throws -> Job {
        var headers: [(String, String)] = []
        if let idempotencyKey { headers.append(("Idempotency-Key", idempotencyKey)) }
        if let cancelAfter { headers.append(("Cancel-After", cancelAfter)) }
        if let wait { headers.append(("Prefer", "wait=\(wait)")) }
        return Job(
            json: try await call(.POST, "/v1/generations", body: try JSONCoding.encode(request), headers: headers))
    }

    public func job(_ id: String) async throws -> Job {
        Job(json: try await call(.GET, "/v1/generations/\(Self.escape(id))"))
    }

    /// Cancels a job that has not ended (a cancelled one again is fine).
    public func cancel(_ id: String) async throws -> Job {
        Job(json: try await call(.POST, "/v1/generations/\(Self.escape(id))/cancel"))
    }

    /// Waits for a job to end, following its events (and, should they fail, asking every second),
    /// and returns it ended. Throws `GenGateClientError.timeout` after `timeout`; the job goes on.
    public func wait(for id: String, timeout: Duration = .seconds(3_600)) async throws -> Job {
        try await withThrowingTaskGroup(of: Job?.self) { group in
            group.addTask {
                do {
                    for try await event in events(of: id) {
                        if case .done = event { break }
                    }
                } catch let error as GenGateClientError {
                    if !error.isPassing { throw error }  // no such job, a bad key: no point asking again
                }
                while true {
                    do {
                        let job = try await job(id)
                        if job.status.isTerminal { return job }
                    } catch let error as GenGateClientError where error.isPassing {
                        // A restart, a busy store, a proxy's 502: ask again.
                    }
                    try await Task.sleep(for: .seconds(1))
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let ended = try await group.next() ?? nil else {
                throw GenGateClientError.timeout("generation \(id) did not end within \(timeout)")
            }
            return ended
        }
    }

    /// The job's events as they happen (server-sent events), from its first (or after
    /// `lastEventID`) to its end, which comes as `.done`. A dropped connection is resumed where it
    /// stopped, up to `reconnects` times in a row.
    public func events(of id: String, after lastEventID: String? = nil, reconnects: Int = 5) -> AsyncThrowingStream<
        JobEvent, Error
    > {
        eventStream(path: "/v1/generations/\(Self.escape(id))/events", after: lastEventID, reconnects: reconnects)
    }

    /// Every job's events of this key from now on (until the stream is dropped by the caller).
    public func allEvents(after lastEventID: String? = nil, reconnects: Int = 5) -> AsyncThrowingStream<
        JobEvent, Error
    > {
        eventStream(path: "/v1/events", after: lastEventID, reconnects: reconnects)
    }

    /// The text of a text job as the provider writes it, chunk by chunk; ends with the job. A
    /// provider that does not stream gives the whole text as one chunk at the end. Throws
    /// `.jobFailed` if the job does not complete.
    public func text(of id: String) -> AsyncThrowingStream<String, Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    var sent: [UInt8] = []
                    var attempt: Int?
                    for try await event in events(of: id) {
                        switch event {
                        case .event(_, let event):
                            guard case .generationStreamChunk(let chunk) = event.payload else { continue }
                            if attempt == nil { attempt = chunk.attempt }
                            // A retry writes the text again from the start: not shown twice.
                            guard chunk.attempt == attempt else { continue }
                            sent += Array(chunk.text.utf8)
                            continuation.yield(chunk.text)
                        case .done:
                            let job = try await job(id)
                            guard job.status == .completed, let first = job.outputs.first else {
                                throw GenGateClientError.jobFailed(job)
                            }
                            // Compared as bytes (a chunk may end inside a character): what was
                            // streamed must be the start of the stored text, else it is not the text.
                            let whole = Array(try await output(id, index: first.index))
                            guard whole.starts(with: sent) else {
                                throw GenGateClientError.transport(
                                    "the streamed text of \(id) is not its stored text (a retry wrote it again, or chunks were lost); read output 0"
                                )
                            }
                            if whole.count > sent.count {
                                continuation.yield(String(decoding: whole[sent.count...], as: UTF8.self))
                            }
                            continuation.finish()
                            return
                        case .queue:
                            continue
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// The bytes of one output.
    public func output(_ id: String, index: Int) async throws -> Data {
        var request = HTTPClientRequest(url: baseURL + "/v1/generations/\(Self.escape(id))/outputs/\(index)")
        request.headers.add(name: "Authorization", value: "Bearer \(key)")
        let response = try await send(request, timeout: .seconds(300))
        let bytes = try await response.body.collect(upTo: 1 << 30)
        try Self.check(status: Int(response.status.code), body: Data(bytes.readableBytesView))
        return Data(bytes.readableBytesView)
    }

    // MARK: Batches

    /// Submits many generations at once; at most `maxConcurrency` of them run at a time.
    public func submitBatch(
        _ requests: [GenerationRequest], maxConcurrency: Int? = nil, stopOnError: Bool = false,
        priority: BatchPriority = .normal, idempotencyKey: String? = nil
    ) async throws -> BatchStatus {
        var body: [String: JSONValue] = [
            "requests": .array(try requests.map { try JSONValue(encoding: $0) }),
            "stop_on_error": .bool(stopOnError), "priority": .string(priority.rawValue),
        ]
        if let maxConcurrency { body["max_concurrency"] = .number(Double(maxConcurrency)) }
        return BatchStatus(
            json: try await call(
                .POST, "/v1/batches", body: try JSONCoding.encode(JSONValue.object(body)),
                headers: idempotencyKey.map { [("Idempotency-Key", $0)] } ?? []))
    }

    public func batch(_ id: String) async throws -> BatchStatus {
        BatchStatus(json: try await call(.GET, "/v1/batches/\(Self.escape(id))"))
    }

    public func cancelBatch(_ id: String) async throws -> BatchStatus {
        BatchStatus(json: try await call(.POST, "/v1/batches/\(Self.escape(id))/cancel"))
    }

    // MARK: Webhooks

    /// This key's webhook signing secret (`whsec_…`).
    public func webhookSecret() async throws -> String {
        guard let secret = try await call(.GET, "/v1/webhooks/secret")["secret"]?.stringValue else {
            throw GenGateClientError.transport("the answer has no secret")
        }
        return secret
    }

    /// Checks a webhook delivery's Standard Webhooks signature (headers by any case) against
    /// `secret` and returns its body; throws `.invalidWebhook` saying why not.
    public static func verifyWebhook(secret: String, headers: [String: String], body: Data, now: Date = Date())
        throws -> WebhookPayload
    {
        guard let key = StandardWebhooks.key(secret: secret) else {
            throw GenGateClientError.invalidWebhook("the secret is not a whsec_ secret")
        }
        let lowered = Dictionary(
            headers.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { first, _ in first })
        do {
            try StandardWebhooks.verify(key: key, headers: lowered, body: body, now: now)
        } catch StandardWebhooks.Failure.missingHeaders {
            throw GenGateClientError.invalidWebhook("webhook-id, webhook-timestamp or webhook-signature is missing")
        } catch StandardWebhooks.Failure.stale {
            throw GenGateClientError.invalidWebhook("the timestamp is more than five minutes away (a replay?)")
        } catch {
            throw GenGateClientError.invalidWebhook("no signature matches")
        }
        guard let json = try? JSONCoding.decode(JSONValue.self, from: body) else {
            throw GenGateClientError.invalidWebhook("the body is not JSON")
        }
        return WebhookPayload(id: lowered["webhook-id"] ?? "", json: json)
    }

    // MARK: HTTP

    static func escape(_ part: String) -> String {
        part.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/")))
            ?? part
    }

    func send(_ request: HTTPClientRequest, timeout: Duration) async throws -> HTTPClientResponse {
        do {
            return try await http.execute(
                request, timeout: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000))
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw GenGateClientError.transport("cannot reach GenGate at \(baseURL): \(error)")
        }
    }

    /// One JSON call; its answer, or the API's error as `.api`.
    func call(_ method: HTTPMethod, _ path: String, body: Data? = nil, headers: [(String, String)] = []) async throws
        -> JSONValue
    {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(key)")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await send(request, timeout: .seconds(120))
        let bytes = try await response.body.collect(upTo: 64 << 20)
        let data = Data(bytes.readableBytesView)
        try Self.check(status: Int(response.status.code), body: data)
        return (try? JSONCoding.decode(JSONValue.self, from: data)) ?? .null
    }

    static func check(status: Int, body: Data) throws {
        guard !(200..<300).contains(status) else { return }
        let json = (try? JSONCoding.decode(JSONValue.self, from: body)) ?? .null
        let error = json["error"]
        throw GenGateClientError.api(
            APIFailure(
                status: status, code: error?["code"]?.stringValue ?? "http_\(status)",
                message: error?["message"]?.stringValue ?? "HTTP \(status)",
                retryable: error?["retryable"] == .bool(true),
                details: (error?["details"]?.arrayValue ?? []).map {
                    APIFailure.Detail(path: $0["path"]?.stringValue ?? "", message: $0["message"]?.stringValue ?? "")
                }))
    }

    func eventStream(path: String, after lastEventID: String?, reconnects: Int) -> AsyncThrowingStream<JobEvent, Error>
    {
        AsyncThrowingStream { continuation in
            let task = Task {
                var last = lastEventID
                var retry: Duration = .seconds(2)
                var failures = 0
                while !Task.isCancelled {
                    do {
                        var request = HTTPClientRequest(url: baseURL + path)
                        request.headers.add(name: "Authorization", value: "Bearer \(key)")
                        request.headers.add(name: "Accept", value: "text/event-stream")
                        if let last { request.headers.add(name: "Last-Event-ID", value: last) }
                        let response = try await send(request, timeout: .seconds(365 * 86_400))
                        if !(200..<300).contains(Int(response.status.code)) {
                            let body = try await response.body.collect(upTo: 1 << 20)
                            try Self.check(status: Int(response.status.code), body: Data(body.readableBytesView))
                        }
                        var parser = ServerSentEvents()
                        for try await buffer in response.body {
                            for message in parser.feed(buffer.readableBytesView) {
                                if let id = message.id { last = id }
                                if let milliseconds = message.retry { retry = .milliseconds(milliseconds) }
                                guard let event = JobEvent(message) else { continue }
                                failures = 0  // only a real event shows the stream works
                                continuation.yield(event)
                                if case .done = event {
                                    continuation.finish()
                                    return
                                }
                            }
                        }
                    } catch let error as GenGateClientError {
                        if !error.isPassing {
                            continuation.finish(throwing: error)
                            return
                        }
                    } catch {
                        if Task.isCancelled { break }
                    }
                    // Dropped: resume after the last event seen.
                    failures += 1
                    guard failures <= reconnects else {
                        continuation.finish(
                            throwing: GenGateClientError.transport("the event stream broke off \(failures) times"))
                        return
                    }
                    try? await Task.sleep(for: retry)
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
