import AsyncHTTPClient
import Crypto
import Foundation
import GenGateCore
import NIOCore
import NIOHTTP1
import NIOPosix

/// Writes a stream of bytes (an upload's body, a fetched image) to a file, hashing and counting
/// as it goes, in 1 MiB writes on NIO's blocking-I/O pool; refuses to go past `limit`.
public final class StreamedFile {
    public let file: URL
    let limit: Int
    let handle: FileHandle
    var hasher = SHA256()
    var pending = ByteBuffer()
    public private(set) var bytes = 0

    /// Thrown by `append` when the stream goes past its limit.
    public struct TooLarge: Error {
        public let limit: Int
    }

    public init(file: URL, limit: Int) throws {
        guard FileManager.default.createFile(atPath: file.path, contents: nil, attributes: [.posixPermissions: 0o600])
        else {
            throw GenGateError(.internalError, "cannot create \(file.path)")
        }
        self.file = file
        self.limit = limit
        handle = try FileHandle(forWritingTo: file)
    }

    public func append(_ chunk: ByteBuffer) async throws {
        bytes += chunk.readableBytes
        guard bytes <= limit else { throw TooLarge(limit: limit) }
        chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
        var chunk = chunk
        pending.writeBuffer(&chunk)
        if pending.readableBytes >= 1 << 20 { try await flush() }
    }

    func flush() async throws {
        guard pending.readableBytes > 0 else { return }
        let data = Data(pending.readableBytesView)
        pending.clear()
        let handle = self.handle
        try await NIOThreadPool.singleton.runIfActive { try handle.write(contentsOf: data) }
    }

    /// Writes what is left and closes the file; returns the bytes' count and SHA-256.
    public func finish() async throws -> (bytes: Int, sha256: String) {
        try await flush()
        let handle = self.handle
        try await NIOThreadPool.singleton.runIfActive { try handle.close() }
        return (bytes, Digest.hex(hasher.finalize()))
    }

    /// Streams the object a presigned object-storage URL names into `file` (never whole in
    /// memory), within `timeoutSeconds`. False when there is no such object.
    public static func download(_ url: String, to file: URL, timeoutSeconds: Double) async throws -> Bool {
        let limit = Duration.milliseconds(Int64(timeoutSeconds * 1_000))
        let outcome = await withDeadline(limit) { () async throws -> Bool in
            let response = try await HTTPClient.shared.execute(
                HTTPClientRequest(url: url), timeout: .milliseconds(Int64(timeoutSeconds * 1_000)))
            if response.status == .notFound { return false }
            guard response.status == .ok else {
                throw GenGateError(
                    .uploadFailed, "object storage answered HTTP \(response.status.code) to a GET", retryable: true)
            }
            let writer = try StreamedFile(file: file, limit: Int.max)
            do {
                for try await chunk in response.body { try await writer.append(chunk) }
                _ = try await writer.finish()
            } catch {
                writer.discard()
                throw error
            }
            return true
        }
        switch outcome {
        case .success(let found): return found
        case .failure(let error as GenGateError): throw error
        case .failure(is CancellationError): throw CancellationError()
        case .failure(let error):
            try? FileManager.default.removeItem(at: file)
            throw GenGateError(.uploadFailed, "an input image could not be read from object storage (\(error))")
        }
    }

    /// Closes and removes the file (after a failure).
    public func discard() {
        try? handle.close()
        try? FileManager.default.removeItem(at: file)
    }
}

/// Fetches an image a request names by URL, under the rules webhooks follow: http(s) only, to
/// public addresses (checked when given and again after DNS resolution, connecting to the
/// address checked), redirects followed by hand (three at most) and each checked the same way,
/// bounded in time and in size.
public struct ImageFetcher: Sendable {
    public let policy: OutboundURLPolicy
    public let timeoutSeconds: Double
    public let maxBytes: Int

    public init(policy: OutboundURLPolicy, timeoutSeconds: Double, maxBytes: Int) {
        self.policy = policy
        self.timeoutSeconds = timeoutSeconds
        self.maxBytes = maxBytes
    }

    /// Fetches `url` into `file`, all of it (redirects, the body) within `timeoutSeconds`. Throws
    /// `invalid_image` for what trying again will not mend (a refused address, a 4xx, too large),
    /// retryable for what it may (no answer, a 5xx, too slow).
    public func fetch(_ url: String, to file: URL) async throws -> (bytes: Int, sha256: String) {
        let limit = Duration.milliseconds(Int64(timeoutSeconds * 1_000))
        switch await withDeadline(limit, { try await fetchFollowing(url, to: file) }) {
        case .success(let fetched):
            return fetched
        case .failure(is DeadlinePassed):
            try? FileManager.default.removeItem(at: file)
            throw GenGateError(
                .invalidImage,
                "the image at \(Self.shown(url)) was not fetched within \(Int(timeoutSeconds)) s (images.fetch_timeout_seconds)",
                retryable: true)
        case .failure(let error):
            throw error
        }
    }

    func fetchFollowing(_ url: String, to file: URL) async throws -> (bytes: Int, sha256: String) {
        var current = url
        let deadline = NIODeadline.now() + .milliseconds(Int64(timeoutSeconds * 1_000))
        for _ in 0...3 {
            if let problem = policy.problem(with: current) {
                throw GenGateError(.invalidImage, "the image URL \(Self.shown(current)) \(problem)")
            }
            guard let parsed = URL(string: current), let host = parsed.host else {
                throw GenGateError(.invalidImage, "the image URL \(Self.shown(current)) is not a URL")
            }
            let address: IPAddress?
            do {
                address = try await policy.checkResolved(host: host)
            } catch let refused as OutboundURLRefused {
                throw GenGateError(
                    .invalidImage, "the image URL \(Self.shown(current)) is \(refused.reason)",
                    retryable: !refused.final)
            }
            var configuration = HTTPClient.Configuration(
                redirectConfiguration: .disallow,
                timeout: .init(connect: .seconds(Int64(min(timeoutSeconds, 10))), read: .seconds(Int64(timeoutSeconds)))
            )
            if let address {
                configuration.dnsOverride = [
                    host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")): address.description
                ]
            }
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            let outcome: Result<Hop, any Error>
            do {
                outcome = .success(try await hop(client, current, base: parsed, deadline: deadline, to: file))
            } catch {
                outcome = .failure(error)
            }
            try? await client.shutdown()
            switch try outcome.get() {
            case .redirect(let next): current = next
            case .fetched(let bytes, let sha256): return (bytes, sha256)
            }
        }
        throw GenGateError(.invalidImage, "the image URL \(Self.shown(url)) redirects more than three times")
    }

    enum Hop {
        case redirect(String)
        case fetched(Int, String)
    }

    /// One request: a redirect to follow, or the image written to `file`.
    func hop(_ client: HTTPClient, _ current: String, base: URL, deadline: NIODeadline, to file: URL) async throws
        -> Hop
    {
        var request = HTTPClientRequest(url: current)
        request.headers.add(name: "User-Agent", value: "GenGate-Images/1")
        request.headers.add(name: "Accept", value: "image/png, image/jpeg, image/webp, image/gif")
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, deadline: deadline)
        } catch {
            if Task.isCancelled { throw CancellationError() }
            throw GenGateError(
                .invalidImage, "the image at \(Self.shown(current)) could not be fetched (\(error))", retryable: true)
        }
        let status = Int(response.status.code)
        if [301, 302, 303, 307, 308].contains(status), let location = response.headers.first(name: "location"),
            let next = URL(string: location, relativeTo: base)?.absoluteString
        {
            return .redirect(next)
        }
        guard status == 200 else {
            throw GenGateError(
                .invalidImage, "the image at \(Self.shown(current)) answered HTTP \(status)",
                retryable: status >= 500 || status == 429 || status == 408)
        }
        if let length = response.headers.first(name: "content-length").flatMap(Int.init), length > maxBytes {
            throw GenGateError(
                .invalidImage, "the image at \(Self.shown(current)) is \(length) bytes, over the limit of \(maxBytes)")
        }
        let writer = try StreamedFile(file: file, limit: maxBytes)
        do {
            for try await chunk in response.body { try await writer.append(chunk) }
            let (bytes, sha256) = try await writer.finish()
            return .fetched(bytes, sha256)
        } catch let tooLarge as StreamedFile.TooLarge {
            writer.discard()
            throw GenGateError(
                .invalidImage, "the image at \(Self.shown(current)) is over the limit of \(tooLarge.limit) bytes")
        } catch {
            writer.discard()
            if Task.isCancelled { throw CancellationError() }
            throw GenGateError(
                .invalidImage, "the image at \(Self.shown(current)) could not be read whole (\(error))",
                retryable: true)
        }
    }

    /// A URL as errors show it: without its query (which may carry a signature or a token).
    static func shown(_ url: String) -> String {
        String((url.split(separator: "?", maxSplits: 1).first.map(String.init) ?? url).prefix(200))
    }
}
