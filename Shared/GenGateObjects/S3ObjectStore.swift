import AsyncHTTPClient
import Crypto
import Foundation
import GenGateCore
import NIOCore
import NIOHTTP1
import NIOPosix

/// Where an S3-compatible service keeps the outputs, and how to reach it.
public struct S3Settings: Sendable, Equatable {
    /// `https://s3.<region>.amazonaws.com`, or an S3-compatible service's URL (`http://minio:9000`).
    public var endpoint: String
    public var bucket: String
    public var region: String
    /// Addresses objects as `<endpoint>/<bucket>/<key>` (what most S3-compatible services want)
    /// rather than `<bucket>.<endpoint host>/<key>`.
    public var pathStyle: Bool
    /// Where the bucket is readable by anyone (a public bucket, a CDN): output URLs are then
    /// `<public URL>/<key>`, for good. Without it they are presigned, for `urlLifetime` seconds.
    public var publicURL: String?
    /// Where clients reach the service when that is not `endpoint` (a compose network's
    /// `http://minio:9000`, seen from outside as `https://files.example.com`): presigned output
    /// URLs point there, signed for that host. Nil: `endpoint`.
    public var urlEndpoint: String?
    public var urlLifetime: Int
    /// Objects larger than this go up in parts of this size (multipart upload; S3 wants 5 MiB at least).
    public var partSize: Int
    /// How long one request (one part) may take.
    public var requestTimeout: TimeInterval
    /// How many bytes of uploads the process holds in memory at most, a part (or a small object)
    /// each: uploads beyond `memory / partSize` at once wait their turn instead of growing memory.
    public var memory: Int
    public var credentials: AWSCredentials

    public init(
        endpoint: String, bucket: String, region: String, pathStyle: Bool, publicURL: String? = nil,
        urlEndpoint: String? = nil, urlLifetime: Int = 3_600, partSize: Int = 16 << 20,
        requestTimeout: TimeInterval = 120,
        memory: Int = 256 << 20, credentials: AWSCredentials
    ) {
        self.endpoint = endpoint
        self.bucket = bucket
        self.region = region
        self.pathStyle = pathStyle
        self.publicURL = publicURL
        self.urlEndpoint = urlEndpoint
        self.urlLifetime = urlLifetime
        self.partSize = partSize
        self.requestTimeout = requestTimeout
        self.memory = memory
        self.credentials = credentials
    }

    /// AWS's own endpoint for `region`.
    public static func awsEndpoint(region: String) -> String { "https://s3.\(region).amazonaws.com" }
}

/// Objects in an S3-compatible service (Amazon S3, MinIO, Ceph, R2, ...). Small objects go up
/// in one PUT; larger ones (videos) in a multipart upload, read from their file a part at a
/// time, so a 500 MB output costs one part of memory (`S3Settings.partSize`), not 500 MB. Every
/// request is signed (SigV4) with its payload's SHA-256, which S3 checks: bytes damaged on the
/// way are refused, not stored. A put is whole or nothing: a single PUT replaces the object
/// atomically, and a multipart upload becomes visible only when completed (a failed one is
/// aborted, so its parts are not kept and billed).
///
/// Failures are `upload_failed`, retryable unless the request itself is at fault: a service
/// that is down, and refused credentials or a missing bucket (which an operator fixes), are
/// tried again while the job's deadline allows.
public struct S3ObjectStore: ObjectStore {
    public let settings: S3Settings
    let signer: SigV4
    let scratch: URL
    /// Where requests go.
    let address: Address
    /// Where presigned URLs point (`S3Settings.urlEndpoint`, or `address`).
    let urlAddress: Address
    var scheme: String { address.scheme }
    var host: String { address.host }
    var basePath: String { address.basePath }

    /// A service's URL, as requests to one bucket use it.
    struct Address: Sendable {
        var scheme: String
        /// Host (and port unless the scheme's default), and the path before the key.
        var host: String
        var basePath: String

        init(endpoint: String, bucket: String, pathStyle: Bool, setting: String) throws {
            guard let components = URLComponents(string: endpoint),
                let scheme = components.scheme?.lowercased(), ["http", "https"].contains(scheme),
                let endpointHost = components.host, !endpointHost.isEmpty, components.query == nil
            else {
                throw GenGateError(.invalidRequest, "\(setting) must be an http:// or https:// URL, got \(endpoint)")
            }
            self.scheme = scheme
            let defaultPort = scheme == "https" ? 443 : 80
            // An IPv6 literal keeps its brackets in a Host header and a URL.
            let name =
                endpointHost.contains(":") && !endpointHost.hasPrefix("[") ? "[\(endpointHost)]" : endpointHost
            let port = components.port.flatMap { $0 == defaultPort ? nil : $0 }.map { ":\($0)" } ?? ""
            let endpointPath =
                components.percentEncodedPath.hasSuffix("/")
                ? String(components.percentEncodedPath.dropLast()) : components.percentEncodedPath
            if pathStyle {
                host = name + port
                basePath = endpointPath + "/" + SigV4.encode(bucket)
            } else {
                host = bucket + "." + name + port
                basePath = endpointPath
            }
        }
    }

    /// Parts (and small objects) of uploads in memory at once, a slot each: shared by every
    /// store of the process with the same budget.
    let parts: Slots
    static let partKey = "part"
    private static let slotsByLimit = Locked<[Int: Slots]>([:])
    /// The most parts in flight: as many connections as the client keeps open to one host.
    static let maxPartsInFlight = 64

    /// No redirects (a redirected request would carry a signature for another host); a refused
    /// connection fails the request at once (the caller's retries pace the next try) rather than
    /// being retried until the request's deadline; one client for the process's life, with a
    /// connection for every part that may be in flight (a request waiting for a connection
    /// would spend its timeout waiting).
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow, timeout: .init(connect: .seconds(10), read: .seconds(60)))
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = maxPartsInFlight
        return HTTPClient(eventLoopGroup: .singletonMultiThreadedEventLoopGroup, configuration: configuration)
    }()

    /// `scratch`: a local directory for downloads on their way to the bucket.
    public init(settings: S3Settings, scratch: URL) throws {
        guard Self.isValidBucket(settings.bucket) else {
            throw GenGateError(
                .invalidRequest,
                "\(settings.bucket) is not a bucket name (3–63 lowercase letters, digits, dots and hyphens)")
        }
        guard settings.partSize >= 5 << 20 else {
            throw GenGateError(.invalidRequest, "the S3 part size must be at least 5 MiB (S3's own minimum)")
        }
        guard settings.memory >= settings.partSize else {
            throw GenGateError(.invalidRequest, "the S3 upload memory must hold at least one part")
        }
        let limit = min(Self.maxPartsInFlight, settings.memory / settings.partSize)
        parts = Self.slotsByLimit.withLock { all in
            if let slots = all[limit] { return slots }
            let slots = Slots(limit: limit)
            all[limit] = slots
            return slots
        }
        self.settings = settings
        self.signer = SigV4(credentials: settings.credentials, region: settings.region)
        self.scratch = scratch
        address = try Address(
            endpoint: settings.endpoint, bucket: settings.bucket, pathStyle: settings.pathStyle,
            setting: "the S3 endpoint")
        urlAddress =
            try settings.urlEndpoint.map {
                try Address(
                    endpoint: $0, bucket: settings.bucket, pathStyle: settings.pathStyle, setting: "the S3 URL endpoint"
                )
            } ?? address
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        LocalObjectStore.removeStaleScratch(in: scratch)
    }

    static func isValidBucket(_ name: String) -> Bool {
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789.-")
        guard (3...63).contains(name.count), name.allSatisfy(allowed.contains),
            let first = name.first, let last = name.last, first != "-", first != ".", last != "-", last != "."
        else { return false }
        return !name.contains("..")
    }

    // MARK: ObjectStore

    public func put(key: String, data: Data, contentType: String) async throws -> StoredObject {
        let path = try objectPath(key)
        let sha256 = Digest.sha256Hex(data)
        _ = try await send(
            "PUT", path, headers: [("Content-Type", contentType)], body: ByteBuffer(bytes: data), payloadHash: sha256,
            doing: "PUT \(key)")
        return StoredObject(key: key, bytes: data.count, sha256: sha256, contentType: contentType)
    }

    public func put(key: String, file: URL, contentType: String) async throws -> StoredObject {
        let path = try objectPath(key)
        let reader = try await PartReader.open(file)
        defer { reader.close() }
        var whole = SHA256()
        var single: StoredObject?
        var upload: String?
        var uploaded: [(number: Int, etag: String)] = []
        var bytes = 0
        do {
            // One part in memory at a time for this upload, each holding one of the process's
            // slots while it is read and sent; a small object is its own single part.
            var done = false
            while !done {
                done = try await withPart {
                    let part = try await reader.next(settings.partSize)
                    part.withUnsafeReadableBytes { whole.update(bufferPointer: $0) }
                    if upload == nil, part.readableBytes < settings.partSize {
                        let sha256 = Self.sha256Hex(part)
                        _ = try await send(
                            "PUT", path, headers: [("Content-Type", contentType)], body: part, payloadHash: sha256,
                            doing: "PUT \(key)")
                        single = StoredObject(
                            key: key, bytes: part.readableBytes, sha256: sha256, contentType: contentType)
                        return true
                    }
                    if part.readableBytes == 0 { return true }
                    let id: String
                    if let upload {
                        id = upload
                    } else {
                        id = try await createMultipartUpload(path, key: key, contentType: contentType)
                        upload = id
                    }
                    let number = uploaded.count + 1
                    bytes += part.readableBytes
                    uploaded.append(
                        (number, try await uploadPart(path, key: key, upload: id, number: number, body: part)))
                    return false
                }
            }
            if let upload {
                try await completeMultipartUpload(path, key: key, upload: upload, parts: uploaded)
            }
        } catch {
            if let upload {
                // Its parts are stored (and billed) until aborted. Best effort, not cancelled with
                // the task that failed nor waited for: a bucket lifecycle rule catches what this
                // misses.
                let store = self
                Task.detached { await store.abortMultipartUpload(path, upload: upload) }
            }
            throw error
        }
        try? FileManager.default.removeItem(at: file)
        return single
            ?? StoredObject(key: key, bytes: bytes, sha256: Digest.hex(whole.finalize()), contentType: contentType)
    }

    /// Runs `body` holding one of the process's part slots.
    func withPart<T>(_ body: () async throws -> T) async throws -> T {
        await parts.acquire(Self.partKey)
        defer { parts.release(Self.partKey) }
        try Task.checkCancellation()
        return try await body()
    }

    public func get(key: String) async throws -> Data? {
        let path = try objectPath(key)
        let answer = try await exchange("GET", path, doing: "GET \(key)")
        if answer.status == .notFound { return nil }
        guard answer.status == .ok else { throw failure(answer, doing: "GET \(key)") }
        return Data(answer.body.readableBytesView)
    }

    public func exists(key: String) async throws -> Bool {
        let answer = try await exchange("HEAD", try objectPath(key), doing: "HEAD \(key)")
        if answer.status == .notFound { return false }
        guard answer.status == .ok else { throw failure(answer, doing: "HEAD \(key)") }
        return true
    }

    public func delete(key: String) async throws {
        let answer = try await exchange("DELETE", try objectPath(key), doing: "DELETE \(key)")
        guard answer.status == .noContent || answer.status == .ok || answer.status == .notFound else {
            throw failure(answer, doing: "DELETE \(key)")
        }
    }

    /// Nothing here is a local file: api-ingress streams from `temporaryURL`.
    public func localFile(key: String) async throws -> (path: String, size: Int)? { nil }

    public func scratchFile() throws -> URL {
        scratch.appendingPathComponent("\(UUID().uuidString).part")
    }

    public func publicURL(key: String) -> String? {
        guard let base = settings.publicURL, !base.isEmpty else { return nil }
        return (base.hasSuffix("/") ? String(base.dropLast()) : base) + "/" + SigV4.encode(key, keepSlash: true)
    }

    public func temporaryURL(key: String, now: Date) -> String? {
        guard let path = try? objectPath(key, in: urlAddress) else { return nil }
        let query = signer.presignedQuery(
            .init(method: "GET", host: urlAddress.host, path: path),
            expires: min(max(settings.urlLifetime, 1), 604_800),
            at: now)
        return "\(urlAddress.scheme)://\(urlAddress.host)\(path)?\(query)"
    }

    /// Checks that the bucket is there and the credentials are taken (HEAD on the bucket; its
    /// answer has no body, so the status says what went wrong).
    public func check() async -> ObjectStoreCheck {
        let path = settings.pathStyle ? basePath : basePath + "/"
        let answer: Answer
        do {
            answer = try await exchange("HEAD", path, doing: "HEAD on bucket \(settings.bucket)")
        } catch {
            return .unreachable(GenGateError.wrap(error).message)
        }
        switch answer.status.code {
        case 200: return .ok
        case 403: return .refused("object storage refused the credentials for bucket \(settings.bucket) (HTTP 403)")
        case 404: return .refused("bucket \(settings.bucket) does not exist at \(settings.endpoint)")
        case 301, 400:
            return .refused(
                "bucket \(settings.bucket) is not in region \(settings.region) (HTTP \(answer.status.code))")
        default: return .unreachable("object storage answered HTTP \(answer.status.code) to a HEAD on its bucket")
        }
    }

    // MARK: Multipart upload

    func createMultipartUpload(_ path: String, key: String, contentType: String) async throws -> String {
        let answer = try await send(
            "POST", path, query: [("uploads", "")], headers: [("Content-Type", contentType)], body: nil,
            payloadHash: SigV4.emptyPayloadHash, doing: "starting the multipart upload of \(key)")
        guard let upload = S3XML.value(of: "UploadId", in: answer.body), !upload.isEmpty else {
            throw GenGateError(
                .uploadFailed, "object storage: starting the multipart upload of \(key) answered without an UploadId")
        }
        return upload
    }

    /// One part, tried up to three times (a blip should not restart a 500 MB upload). Its ETag.
    func uploadPart(_ path: String, key: String, upload: String, number: Int, body: ByteBuffer) async throws -> String {
        let sha256 = Self.sha256Hex(body)
        var tries = 0
        while true {
            tries += 1
            do {
                let answer = try await send(
                    "PUT", path, query: [("partNumber", String(number)), ("uploadId", upload)], headers: [],
                    body: body, payloadHash: sha256, doing: "uploading part \(number) of \(key)")
                guard let etag = answer.headers.first(name: "ETag"), !etag.isEmpty else {
                    throw GenGateError(
                        .uploadFailed, "object storage: part \(number) of \(key) was answered without an ETag")
                }
                return etag
            } catch let error as GenGateError where error.retryable && tries < 3 {
                try await Task.sleep(for: .milliseconds(250 * tries * tries))
            }
        }
    }

    func completeMultipartUpload(_ path: String, key: String, upload: String, parts: [(number: Int, etag: String)])
        async throws
    {
        let list = parts.map {
            "<Part><PartNumber>\($0.number)</PartNumber><ETag>\(S3XML.escape($0.etag))</ETag></Part>"
        }.joined()
        let body = ByteBuffer(string: "<CompleteMultipartUpload>\(list)</CompleteMultipartUpload>")
        let answer = try await send(
            "POST", path, query: [("uploadId", upload)], headers: [("Content-Type", "application/xml")], body: body,
            payloadHash: Self.sha256Hex(body), doing: "completing the multipart upload of \(key)")
        // S3 may answer 200 and then report an error in the body (it streams its answer).
        if S3XML.value(of: "Code", in: answer.body) != nil {
            throw failure(answer, doing: "completing the multipart upload of \(key)", status: 500)
        }
    }

    func abortMultipartUpload(_ path: String, upload: String) async {
        _ = try? await exchange("DELETE", path, query: [("uploadId", upload)], doing: "aborting a multipart upload")
    }

    // MARK: Requests

    static func sha256Hex(_ buffer: ByteBuffer) -> String {
        buffer.withUnsafeReadableBytes { Digest.hex(SHA256.hash(data: $0)) }
    }

    struct Answer {
        var status: HTTPResponseStatus
        var headers: HTTPHeaders
        var body: ByteBuffer
    }

    /// The encoded path of `key`; keys that are empty, absolute or climb (`..`) are refused, as by
    /// the local store, so both backends take the same keys.
    func objectPath(_ key: String, in address: Address? = nil) throws -> String {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard !key.isEmpty, !key.hasPrefix("/"), !key.hasPrefix("."), key.utf8.count <= 1_024,
            !parts.contains(where: { $0 == ".." || $0 == "." || $0.isEmpty })
        else {
            throw GenGateError(.invalidRequest, "invalid object key \(key)")
        }
        return (address ?? self.address).basePath + "/" + SigV4.encode(key, keepSlash: true)
    }

    /// A request that must succeed (2xx); its answer.
    func send(
        _ method: String, _ path: String, query: [(String, String)] = [], headers: [(String, String)],
        body: ByteBuffer?,
        payloadHash: String, doing: String
    ) async throws -> Answer {
        let answer = try await exchange(
            method, path, query: query, headers: headers, body: body, payloadHash: payloadHash, doing: doing)
        guard (200..<300).contains(answer.status.code) else { throw failure(answer, doing: doing) }
        return answer
    }

    /// A signed request and its answer (the body read whole: S3's answers here are small).
    func exchange(
        _ method: String, _ path: String, query: [(String, String)] = [], headers: [(String, String)] = [],
        body: ByteBuffer? = nil, payloadHash: String = SigV4.emptyPayloadHash, doing: String
    ) async throws -> Answer {
        let signed = signer.sign(
            .init(method: method, host: host, path: path, query: query, headers: headers), payloadHash: payloadHash,
            at: Date())
        let canonicalQuery = SigV4.canonical(query: query)
        var request = HTTPClientRequest(
            url: "\(scheme)://\(host)\(path)\(canonicalQuery.isEmpty ? "" : "?" + canonicalQuery)")
        request.method = HTTPMethod(rawValue: method)
        request.headers.add(name: "Host", value: host)
        request.headers.add(name: "User-Agent", value: "GenGate")
        for (name, value) in signed { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(body) }
        do {
            let response = try await Self.client.execute(
                request, timeout: .milliseconds(Int64(settings.requestTimeout * 1_000)))
            let body = try await response.body.collect(upTo: method == "GET" ? 1 << 30 : 1 << 20)
            return Answer(status: response.status, headers: response.headers, body: body)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            if Task.isCancelled { throw CancellationError() }
            throw GenGateError(
                .uploadFailed,
                "object storage at \(settings.endpoint) did not answer \(doing) (\(HTTPFailure.describe(error)))",
                retryable: true)
        }
    }

    /// An error answer as an `upload_failed` error naming S3's code and message (never the
    /// request's headers: they hold the signature).
    func failure(_ answer: Answer, doing: String, status: Int? = nil) -> GenGateError {
        let status = status ?? Int(answer.status.code)
        let code = S3XML.value(of: "Code", in: answer.body)
        let message = S3XML.value(of: "Message", in: answer.body).map { ": \($0.prefix(300))" } ?? ""
        let named = code ?? "HTTP \(status)"
        var hint = ""
        switch code {
        case "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AccessDenied":
            hint = " (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy)"
        case "NoSuchBucket":
            hint = " (bucket \(settings.bucket) does not exist)"
        case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException":
            hint = " (the bucket is in another region than \(settings.region))"
        default:
            break
        }
        // A request S3 finds malformed would be refused again; anything else may pass, or be
        // fixed by an operator while the job waits.
        let requestAtFault =
            [400, 411, 413, 414].contains(status)
            && ![
                "RequestTimeout", "ExpiredToken", "AuthorizationHeaderMalformed", "InvalidToken", "BadDigest",
                "XAmzContentSHA256Mismatch", "IncompleteBody",
            ].contains(code ?? "")
        return GenGateError(
            .uploadFailed, "object storage refused \(doing): \(named)\(message)\(hint)", retryable: !requestAtFault)
    }
}

/// Reads a file a part at a time on NIO's blocking-I/O pool, into buffers of their own.
final class PartReader: @unchecked Sendable {
    let descriptor: Int32

    private init(descriptor: Int32) { self.descriptor = descriptor }

    static func open(_ file: URL) async throws -> PartReader {
        let descriptor = Foundation.open(file.path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            let code = errno
            throw GenGateError(.uploadFailed, "cannot read \(file.lastPathComponent): errno \(code)")
        }
        return PartReader(descriptor: descriptor)
    }

    /// Up to `count` bytes; fewer only at the end of the file (none when it is over).
    func next(_ count: Int) async throws -> ByteBuffer {
        let descriptor = self.descriptor
        return try await NIOThreadPool.singleton.runIfActive {
            var buffer = ByteBufferAllocator().buffer(capacity: count)
            while buffer.readableBytes < count {
                let wanted = count - buffer.readableBytes
                let read = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { pointer in
                    Foundation.read(descriptor, pointer.baseAddress, min(pointer.count, wanted))
                }
                if read == 0 { break }
                if read < 0 {
                    let code = errno
                    if code == EINTR { continue }
                    throw GenGateError(.uploadFailed, "reading an output's file failed: errno \(code)")
                }
            }
            return buffer
        }
    }

    func close() { _ = Foundation.close(descriptor) }
}

/// The few values GenGate reads from S3's XML answers (`UploadId`, `Code`, `Message`), found by
/// tag. Written by hand: Foundation's XML parser on Linux needs libxml2, a dependency for three
/// flat tags of documented answers.
enum S3XML {
    static func value(of tag: String, in body: ByteBuffer) -> String? {
        let text = String(decoding: body.readableBytesView, as: UTF8.self)
        guard let open = text.range(of: "<\(tag)>"),
            let close = text.range(of: "</\(tag)>", range: open.upperBound..<text.endIndex)
        else { return nil }
        return unescape(String(text[open.upperBound..<close.lowerBound]))
    }

    static func unescape(_ text: String) -> String {
        text.replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
