import AsyncHTTPClient
import Foundation
import GenGateCore
import GenGateObjects
import NIOCore
import NIOHTTP1
import Synchronization

/// Where a provider is reached and how long it may take: every real adapter has its own.
public struct ProviderEndpoint: Sendable, Equatable {
    /// The API's base URL as the provider's own SDK takes it (e.g. `https://api.replicate.com/v1`).
    public var baseURL: String
    public var connectTimeoutSeconds: Double
    /// One request until its answer's head, and the longest silence while its body arrives.
    public var requestTimeoutSeconds: Double
    /// Connections kept to the provider at once (AsyncHTTPClient's default of 8 would queue
    /// the engine's hundreds of concurrent calls behind each other).
    public var maxConnections: Int

    public init(
        baseURL: String, connectTimeoutSeconds: Double = 5, requestTimeoutSeconds: Double = 60,
        maxConnections: Int = 64
    ) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.requestTimeoutSeconds = requestTimeoutSeconds
        self.maxConnections = maxConnections
    }
}

extension ProviderEndpoint {
    /// The base URL without a trailing `/v1`, for providers whose SDKs take the host alone and
    /// whose paths start with `/v1` (a base URL copied from the API reference would double it).
    func droppingVersionPath() -> ProviderEndpoint {
        var copy = self
        if copy.baseURL.hasSuffix("/v1") { copy.baseURL = String(copy.baseURL.dropLast(3)) }
        return copy
    }
}

/// The HTTP side of one provider: its own AsyncHTTPClient (own connection pool and timeouts, so
/// one slow provider never slows another), JSON in and out, bounded answers, and network
/// failures as `GenGateError`s. Adapters build requests and read answers; they never see NIO.
public final class ProviderHTTP: Sendable {
    public let provider: String
    public let endpoint: ProviderEndpoint
    let client: HTTPClient
    /// Largest JSON answer read; a provider's status answer is a few KiB.
    static let maxAnswerBytes = 8 << 20

    public init(provider: String, endpoint: ProviderEndpoint) {
        self.provider = provider
        self.endpoint = endpoint
        // The read timeout bounds silence mid-answer: `execute`'s deadline ends once the head
        // has arrived, so a body that stalls would otherwise hang the call for ever.
        var configuration = HTTPClient.Configuration(
            timeout: .init(
                connect: .milliseconds(Int64(endpoint.connectTimeoutSeconds * 1_000)),
                read: .milliseconds(Int64(endpoint.requestTimeoutSeconds * 1_000))))
        configuration.connectionPool = .init(
            idleTimeout: .seconds(15), concurrentHTTP1ConnectionsPerHostSoftLimit: endpoint.maxConnections)
        configuration.redirectConfiguration = .disallow
        client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    /// Closes the connection pool. A process's adapters live as long as it does; tests call this.
    public func shutdown() async {
        try? await client.shutdown()
    }

    /// An answer: its status, headers and body (already read, bounded).
    public struct Answer: Sendable {
        public var status: HTTPResponseStatus
        public var headers: HTTPHeaders
        public var body: ByteBuffer

        /// The body as JSON, or nil when it is not JSON.
        public var json: JSONValue? { try? JSONCoding.decode(JSONValue.self, from: Data(body.readableBytesView)) }

        public var text: String { String(buffer: body) }
    }

    /// Sends a request to `path` (under the base URL; an absolute `http(s)://` URL is used as it
    /// is) and reads the whole answer. Network failures, timeouts and oversized answers throw
    /// `GenGateError`s; HTTP error statuses are returned for the adapter to classify.
    public func send(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], json: JSONValue? = nil,
        body: ByteBuffer? = nil, describedAs label: String? = nil
    ) async throws -> Answer {
        var request = HTTPClientRequest(url: url(path))
        request.method = method
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "GenGate")
        for (name, value) in headers { request.headers.replaceOrAdd(name: name, value: value) }
        if let json {
            request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONCoding.encode(json)))
        } else if let body {
            request.body = .bytes(body)
        }
        let timeout = TimeAmount.milliseconds(Int64(endpoint.requestTimeoutSeconds * 1_000))
        do {
            let response = try await client.execute(request, timeout: timeout)
            let body = try await response.body.collect(upTo: Self.maxAnswerBytes)
            return Answer(status: response.status, headers: response.headers, body: body)
        } catch let error as GenGateError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw classify(networkError: error, method: method, path: label ?? path)
        }
    }

    /// An output's bytes, whole (small outputs), and its content type; a non-200 answer is a
    /// retryable provider error.
    public func fetch(_ output: Output, headers: [(String, String)] = []) async throws -> (
        data: Data, contentType: String
    ) {
        // Described as "output": a signed URL's query is a credential of its own.
        let answer = try await send(.GET, output.source, headers: headers, describedAs: "output")
        guard answer.status == .ok else {
            throw GenGateError(
                .providerError, "\(provider): output download answered HTTP \(answer.status.code)", retryable: true)
        }
        return (Data(answer.body.readableBytesView), answer.headers.first(name: "Content-Type") ?? output.contentType)
    }

    /// Streams the body of `url` into `file`, never holding it whole, and returns the answer's
    /// content type. Non-2xx answers throw (a 404 or 403 from an expired URL is a retryable
    /// provider error: the task may be asked again for fresh URLs).
    public func download(_ url: String, headers: [(String, String)] = [], to file: URL, timeoutSeconds: Double = 600)
        async throws -> String
    {
        let answer = try await exchange(.GET, url, headers: headers, to: file, timeoutSeconds: timeoutSeconds)
        guard (200..<300).contains(answer.status.code) else {
            try? FileManager.default.removeItem(at: file)
            throw GenGateError(
                .providerError, "\(provider): output download answered HTTP \(answer.status.code)", retryable: true)
        }
        guard answer.bytes > 0 else {
            throw GenGateError(.providerError, "\(provider): the output is empty", retryable: true)
        }
        return answer.headers.first(name: "Content-Type") ?? "application/octet-stream"
    }

    /// A request whose answer streams into `file` (AsyncHTTPClient's `FileDownloadDelegate`,
    /// which writes on NIO's blocking-I/O pool), whatever its status: answers too large to read
    /// whole, such as a synchronous image call's base64. Network failures throw.
    public func exchange(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], json: JSONValue? = nil,
        multipart: Multipart? = nil, to file: URL, timeoutSeconds: Double? = nil, maxBytes: Int = 1 << 30
    ) async throws -> (status: HTTPResponseStatus, headers: HTTPHeaders, bytes: Int) {
        var fields = HTTPHeaders()
        fields.add(name: "User-Agent", value: "GenGate")
        for (name, value) in headers { fields.replaceOrAdd(name: name, value: value) }
        let request: HTTPClient.Request
        do {
            var body: HTTPClient.Body?
            if let json {
                fields.replaceOrAdd(name: "Content-Type", value: "application/json")
                body = .bytes(try JSONCoding.encode(json))
            } else if let multipart {
                fields.replaceOrAdd(name: "Content-Type", value: multipart.contentType)
                body = .bytes(multipart.body)
            }
            request = try HTTPClient.Request(url: url(path), method: method, headers: fields, body: body)
        } catch {
            throw GenGateError(
                .providerError, "\(provider): \(method) to an address that is not a URL", retryable: false)
        }
        let tooLarge = Mutex(false)
        let delegate = try FileDownloadDelegate(
            path: file.path, pool: .singleton,
            reportProgress: { task, progress in
                guard progress.receivedBytes > maxBytes else { return }
                tooLarge.withLock { $0 = true }
                task.cancel()
            })
        let task = client.execute(
            request: request, delegate: delegate,
            deadline: .now() + .milliseconds(Int64((timeoutSeconds ?? 600) * 1_000)))
        do {
            let progress = try await withTaskCancellationHandler {
                try await task.futureResult.get()
            } onCancel: {
                task.cancel()
            }
            return (progress.head.status, progress.head.headers, progress.receivedBytes)
        } catch {
            if Task.isCancelled { throw CancellationError() }
            if tooLarge.withLock({ $0 }) {
                // The same answer would come again: not worth paying for twice.
                throw GenGateError(
                    .providerError, "\(provider): the answer is larger than \(maxBytes) bytes", retryable: false)
            }
            throw classify(networkError: error, method: method, path: path.hasPrefix("http") ? "output" : path)
        }
    }

    /// A request whose answer is read line by line as it arrives (server-sent events), each line
    /// handed to `line` without its end until it answers false (the stream is over). `within`
    /// bounds the whole answer (the read timeout bounds only silence, and a server may trickle);
    /// `maxBytes` its size. An error status's body is read whole (bounded) and returned for the
    /// adapter to classify; nil when the answer was 2xx.
    public func streamLines(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], json: JSONValue,
        within: Duration, maxBytes: Int = 64 << 20, line: (Substring) async throws -> Bool
    ) async throws -> Answer? {
        var request = HTTPClientRequest(url: url(path))
        request.method = method
        request.headers.add(name: "Accept", value: "text/event-stream")
        request.headers.add(name: "User-Agent", value: "GenGate")
        for (name, value) in headers { request.headers.replaceOrAdd(name: name, value: value) }
        request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: try JSONCoding.encode(json)))
        let until = ContinuousClock.now + within
        do {
            // The deadline bounds the wait for the answer's head; the read timeout, silence after.
            let response = try await client.execute(
                request, timeout: .milliseconds(Int64(endpoint.requestTimeoutSeconds * 1_000)))
            guard (200..<300).contains(response.status.code) else {
                let body = try await response.body.collect(upTo: Self.maxAnswerBytes)
                return Answer(status: response.status, headers: response.headers, body: body)
            }
            var pending: [UInt8] = []
            var received = 0
            for try await buffer in response.body {
                received += buffer.readableBytes
                guard received <= maxBytes else {
                    // The same answer would come again: not worth paying for twice.
                    throw GenGateError(
                        .providerError, "\(provider): the streamed answer is larger than \(maxBytes) bytes",
                        retryable: false)
                }
                pending.append(contentsOf: buffer.readableBytesView)
                while let end = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    var text = String(decoding: pending[..<end], as: UTF8.self)
                    if text.hasSuffix("\r") { text.removeLast() }
                    pending.removeSubrange(...end)
                    if try await !line(Substring(text)) { return nil }  // over: the rest is not read
                }
                // Checked after the lines that arrived, so an answer that ends now is kept.
                guard ContinuousClock.now < until else {
                    throw GenGateError(.providerTimeout, "\(provider): the streamed answer took longer than \(within)")
                }
            }
            if !pending.isEmpty { _ = try await line(Substring(String(decoding: pending, as: UTF8.self))) }
            return nil
        } catch let error as GenGateError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw classify(networkError: error, method: method, path: path)
        }
    }

    /// An id as one path segment (or query value) of a provider URL: anything but letters,
    /// digits, `-` and `_` percent-encoded (a `.` too, so no id reads as `..`), so an id can never
    /// reach another path.
    public static func segment(_ id: String) -> String {
        id.addingPercentEncoding(withAllowedCharacters: segmentCharacters) ?? id
    }

    static let segmentCharacters = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_"))

    /// The content type an output URL's extension suggests (the download's own header wins).
    public static func contentType(ofURL url: String) -> String {
        let path = URL(string: url)?.path.lowercased() ?? url.lowercased()
        switch (path as NSString).pathExtension {
        case "png": return "image/png"
        case "jpg", "jpeg": return "image/jpeg"
        case "webp": return "image/webp"
        case "gif": return "image/gif"
        case "mp4": return "video/mp4"
        case "webm": return "video/webm"
        default: return "application/octet-stream"
        }
    }
    func url(_ path: String) -> String {
        if path.hasPrefix("http://") || path.hasPrefix("https://") { return path }
        return endpoint.baseURL + (path.hasPrefix("/") ? path : "/" + path)
    }

    /// A failure below HTTP: no answer at all. Retryable; for a submission the outcome is
    /// unknown (the provider may have the task), which the engine's submission recovery handles.
    func classify(networkError error: any Error, method: HTTPMethod, path: String) -> GenGateError {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout, .connectTimeout, .writeTimeout:
                return GenGateError(.providerTimeout, "\(provider): \(method) \(path) timed out")
            default:
                break
            }
        }
        if error is NIOTooManyBytesError {
            return GenGateError(.providerError, "\(provider): answer to \(method) \(path) is too large")
        }
        // Never the foreign error's own text (a header holds the provider's key).
        return GenGateError(
            .providerUnavailable, "\(provider): \(method) \(path) failed (\(HTTPFailure.describe(error)))")
    }
}

/// An adapter that speaks to its provider over `ProviderHTTP`: outputs are fetched and
/// downloaded without credentials (signed URLs carry their own) unless the adapter says
/// otherwise, and its client is closed when the service stops.
public protocol HTTPProviderAdapter: ProviderAdapter {
    var http: ProviderHTTP { get }
}

extension HTTPProviderAdapter {
    public func fetch(_ output: Output) async throws -> (data: Data, contentType: String) {
        try await http.fetch(output)
    }

    public func download(_ output: Output, to file: URL) async throws -> String? {
        try await http.download(output.source, to: file)
    }

    public func shutdown() async { await http.shutdown() }

    /// An HTTP error answer, classed by its status (adapters look at their own codes first).
    func statusError(_ answer: ProviderHTTP.Answer) -> GenGateError {
        ProviderErrors.fromStatus(
            answer.status, provider: name, message: ProviderErrors.message(answer.json), headers: answer.headers,
            providerCode: ProviderErrors.code(answer.json))
    }
}
