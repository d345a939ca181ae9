import AsyncHTTPClient
import Foundation
import GenGateCore
import GenGateObjects
import NIOCore
import XCTest

/// A real S3-compatible server (moto's server mode, which checks every request's signature with
/// botocore), driven through Tests/S3/s3server.py: objects are read back with boto3, and the
/// server can be stopped and started again.
final class S3Server: @unchecked Sendable {
    let process: Process
    let input: FileHandle
    private let lock = NSLock()
    private var text = ""
    private(set) var info: JSONValue = .null

    var endpoint: String { info["endpoint"]?.stringValue ?? "" }
    var bucket: String { info["bucket"]?.stringValue ?? "" }
    var accessKeyID: String { info["access_key_id"]?.stringValue ?? "" }
    var secretAccessKey: String { info["secret_access_key"]?.stringValue ?? "" }

    init() throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", "-u", EventSchemaTests.root.appendingPathComponent("Tests/S3/s3server.py").path,
        ]
        let stdin = Pipe()
        let stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = FileHandle.nullDevice
        input = stdin.fileHandleForWriting
        stdout.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else { return }
            self.lock.withLock { self.text += String(decoding: data, as: UTF8.self) }
        }
        try process.run()
        info = try next(after: 0, timeout: 60)
    }

    private func lines() -> [String] {
        lock.withLock {
            text.split(separator: "\n", omittingEmptySubsequences: true).dropLast(text.hasSuffix("\n") ? 0 : 1)
                .map(String.init)
        }
    }

    private func next(after count: Int, timeout: TimeInterval = 30) throws -> JSONValue {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let lines = lines()
            if lines.count > count { return try JSONCoding.decode(JSONValue.self, from: Data(lines[count].utf8)) }
            guard process.isRunning else { throw SystemError("the S3 server exited") }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw SystemError("the S3 server did not answer within \(timeout) s")
    }

    /// Sends one command and returns its answer.
    @discardableResult
    func command(_ line: String) throws -> JSONValue {
        let count = lines().count
        input.write(Data((line + "\n").utf8))
        return try next(after: count)
    }

    /// The environment that points GenGate at this server.
    var environment: [String: String] {
        [
            "GENGATE_S3_ENDPOINT": endpoint, "GENGATE_S3_BUCKET": bucket, "GENGATE_S3_PATH_STYLE": "1",
            "GENGATE_S3_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": accessKeyID,
            "AWS_SECRET_ACCESS_KEY": secretAccessKey,
        ]
    }

    func settings(partSize: Int = 5 << 20, memory: Int? = nil, secret: String? = nil, keyID: String? = nil)
        -> S3Settings
    {
        S3Settings(
            endpoint: endpoint, bucket: bucket, region: "us-east-1", pathStyle: true, partSize: partSize,
            requestTimeout: 10, memory: memory ?? 256 << 20,
            credentials: .init(accessKeyID: keyID ?? accessKeyID, secretAccessKey: secret ?? secretAccessKey))
    }

    func stop() {
        try? input.close()
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

/// The S3 object store against a real S3-compatible server.
final class S3ObjectStoreTests: XCTestCase {
    var server: S3Server!
    var scratch: URL!

    override func setUp() async throws {
        server = try S3Server()
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("s3-scratch-\(UUID().uuidString)")
    }

    override func tearDown() async throws {
        server.stop()
        try? FileManager.default.removeItem(at: scratch)
    }

    func store(partSize: Int = 5 << 20, memory: Int? = nil, secret: String? = nil, keyID: String? = nil) throws
        -> S3ObjectStore
    {
        try S3ObjectStore(
            settings: server.settings(partSize: partSize, memory: memory, secret: secret, keyID: keyID),
            scratch: scratch)
    }

    /// A file of `size` bytes that are not all alike (so a part out of order would be noticed).
    func file(in store: S3ObjectStore, size: Int) throws -> (URL, String) {
        let url = try store.scratchFile()
        var data = Data(count: size)
        for index in stride(from: 0, to: size, by: 4_096) { data[index] = UInt8(truncatingIfNeeded: index / 4_096) }
        try data.write(to: url)
        return (url, Digest.sha256Hex(data))
    }

    func testSmallObjectsGoUpInOnePutAndReadBack() async throws {
        let store = try store()
        let data = Data("a small output".utf8)
        let stored = try await store.put(key: "outputs/t/small.txt", data: data, contentType: "text/plain")
        XCTAssertEqual(stored.sha256, Digest.sha256Hex(data))
        let (file, sha256) = try file(in: store, size: 300_000)
        let fromFile = try await store.put(key: "outputs/t/file.bin", file: file, contentType: "image/png")
        XCTAssertEqual(fromFile.bytes, 300_000)
        XCTAssertEqual(fromFile.sha256, sha256)
        XCTAssertFalse(FileManager.default.fileExists(atPath: file.path), "the scratch file is consumed")

        // An independent client (boto3) reads what GenGate stored.
        let small = try server.command("get outputs/t/small.txt")
        XCTAssertEqual(small["sha256"]?.stringValue, stored.sha256)
        XCTAssertEqual(small["content_type"]?.stringValue, "text/plain")
        let big = try server.command("get outputs/t/file.bin")
        XCTAssertEqual(big["sha256"]?.stringValue, sha256)
        XCTAssertEqual(big["bytes"]?.intValue, 300_000)
        XCTAssertEqual(big["content_type"]?.stringValue, "image/png")

        let read = try await store.get(key: "outputs/t/small.txt")
        XCTAssertEqual(read, data)
        let missing = try await store.get(key: "outputs/t/none.txt")
        XCTAssertNil(missing)
        let check = await store.check()
        XCTAssertEqual(check, .ok)

        // A presigned URL needs no credentials. (Its signature is checked against AWS's published
        // example in SigV4Tests: moto checks only signatures in headers.)
        try server.command("auth off")
        let url = try XCTUnwrap(store.temporaryURL(key: "outputs/t/small.txt", now: Date()))
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
        XCTAssertEqual(response.status, .ok)
        let body = try await response.body.collect(upTo: 1 << 20)
        XCTAssertEqual(Data(body.readableBytesView), data)
    }

    func testLargeObjectsGoUpInPartsAndNoUploadIsLeftOpen() async throws {
        let store = try store(partSize: 5 << 20)
        let size = 12 * 1_024 * 1_024 + 12_345  // three parts, the last a short one
        let (file, sha256) = try file(in: store, size: size)
        let stored = try await store.put(key: "outputs/t/video.mp4", file: file, contentType: "video/mp4")
        XCTAssertEqual(stored.bytes, size)
        XCTAssertEqual(stored.sha256, sha256)
        let read = try server.command("get outputs/t/video.mp4")
        XCTAssertEqual(read["sha256"]?.stringValue, sha256)
        XCTAssertEqual(read["bytes"]?.intValue, size)
        XCTAssertEqual(read["content_type"]?.stringValue, "video/mp4")
        XCTAssertEqual(try server.command("uploads")["uploads"]?.intValue, 0)
    }

    /// Uploads at once beyond the memory given to them take turns a part at a time: with room
    /// for one part, four large objects and a small one all go up whole, none waits for ever.
    func testUploadsBeyondTheirMemoryTakeTurnsAndAllArrive() async throws {
        let store = try store(partSize: 5 << 20, memory: 5 << 20)
        let sizes = [12 << 20, 11 << 20, 10 << 20 + 7, 6 << 20, 1_000]
        let files = try sizes.map { try file(in: store, size: $0) }
        let stored = try await withThrowingTaskGroup(of: (Int, StoredObject).self) { group in
            for (index, (file, _)) in files.enumerated() {
                group.addTask {
                    (
                        index,
                        try await store.put(key: "outputs/t/many-\(index).mp4", file: file, contentType: "video/mp4")
                    )
                }
            }
            var stored: [Int: StoredObject] = [:]
            for try await (index, object) in group { stored[index] = object }
            return stored
        }
        for (index, (file, sha256)) in files.enumerated() {
            XCTAssertEqual(stored[index]?.sha256, sha256)
            XCTAssertEqual(try server.command("get outputs/t/many-\(index).mp4")["sha256"]?.stringValue, sha256)
            XCTAssertFalse(FileManager.default.fileExists(atPath: file.path), "a stored file is consumed")
        }
        XCTAssertEqual(try server.command("uploads")["uploads"]?.intValue, 0)
    }

    func testWrongCredentialsAreAClearUploadFailure() async throws {
        for (label, store) in [
            ("wrong secret", try store(secret: "not-the-secret")),
            ("unknown key", try store(keyID: "AKIAUNKNOWNKEY000000")),
        ] {
            do {
                _ = try await store.put(key: "outputs/t/x.txt", data: Data("x".utf8), contentType: "text/plain")
                XCTFail("\(label): stored with wrong credentials")
            } catch let error as GenGateError {
                XCTAssertEqual(error.code, .uploadFailed, label)
                XCTAssertTrue(
                    error.message.contains("SignatureDoesNotMatch") || error.message.contains("InvalidAccessKeyId"),
                    "\(label): \(error.message)")
                XCTAssertTrue(error.message.contains("AWS_SECRET_ACCESS_KEY"), error.message)
                XCTAssertFalse(error.message.contains("not-the-secret"), "the secret is never quoted")
            }
            guard case .refused = await store.check() else { return XCTFail("\(label): the check passed") }
        }
        XCTAssertEqual(try server.command("keys")["keys"], .array([]))
    }

    func testAServerThatIsDownIsARetryableFailureAndWorkResumesWhenItReturns() async throws {
        let store = try store()
        try server.command("stop")
        do {
            _ = try await store.put(key: "outputs/t/y.txt", data: Data("y".utf8), contentType: "text/plain")
            XCTFail("stored while the server is down")
        } catch let error as GenGateError {
            XCTAssertEqual(error.code, .uploadFailed)
            XCTAssertTrue(error.retryable)
            XCTAssertTrue(error.message.contains("did not answer"), error.message)
        }
        guard case .unreachable = await store.check() else { return XCTFail("the check passed") }
        try server.command("start")
        _ = try await store.put(key: "outputs/t/y.txt", data: Data("y".utf8), contentType: "text/plain")
        XCTAssertEqual(try server.command("get outputs/t/y.txt")["bytes"]?.intValue, 1)
    }
}

/// Whole systems storing their outputs in S3: what a job shows, what the bucket holds, and what
/// happens when the bucket's service is down or refuses GenGate's credentials.
final class S3SystemTests: XCTestCase {
    var server: S3Server!

    override func setUp() async throws {
        server = try S3Server()
    }

    override func tearDown() async throws {
        server.stop()
    }

    func testOutputsGoToTheBucketAndJobsLinkToThem() async throws {
        let system = try await GenGateSystem.start(environment: server.environment)
        defer { system.stop() }
        let id = try await system.submit(#"{"model": "sim/image", "prompt": "a harbour at dawn", "n": 2}"#)
        let done = try await system.waitForStatus(id, "completed")
        guard case .array(let outputs)? = done["outputs"], outputs.count == 2 else {
            return XCTFail("no outputs in \(done)")
        }
        try server.command("auth off")  // moto checks no presigned URL (see S3ObjectStoreTests)
        for output in outputs {
            let url = try XCTUnwrap(output["url"]?.stringValue)
            XCTAssertTrue(url.hasPrefix("\(server.endpoint)/\(server.bucket)/outputs/"), url)
            XCTAssertTrue(url.contains("X-Amz-Signature="), "a presigned URL: \(url)")
            let sha256 = try XCTUnwrap(output["sha256"]?.stringValue)
            // What the bucket holds, read with boto3.
            let key = String(url.dropFirst("\(server.endpoint)/\(server.bucket)/".count).prefix { $0 != "?" })
            let object = try server.command("get \(key)")
            XCTAssertEqual(object["sha256"]?.stringValue, sha256)
            XCTAssertEqual(object["content_type"]?.stringValue, "image/png")
            // The presigned URL, with no credentials.
            let direct = try await GenGateSystem.rawRequest(.GET, url, body: nil, key: nil)
            XCTAssertEqual(direct.status, 200)
            XCTAssertEqual(Digest.sha256Hex(direct.body), sha256)
            // GenGate's own route relays the object, whole or a range.
            let index = try XCTUnwrap(output["index"]?.intValue)
            let relayed = try await system.request(.GET, "/v1/generations/\(id)/outputs/\(index)")
            XCTAssertEqual(relayed.status, 200)
            XCTAssertEqual(relayed.headers.first(name: "Content-Type"), "image/png")
            XCTAssertEqual(Digest.sha256Hex(relayed.body), sha256)
            let part = try await system.request(
                .GET, "/v1/generations/\(id)/outputs/\(index)", headers: [("Range", "bytes=0-7")])
            XCTAssertEqual(part.status, 206)
            XCTAssertEqual(Array(part.body), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        }
        try server.command("auth on")
        // Events are kept: they name GenGate's route, which does not expire.
        let events = try await system.request(.GET, "/v1/generations/\(id)/events")
        XCTAssertFalse(String(decoding: events.body, as: UTF8.self).contains("X-Amz-Signature"))
    }

    func testAnUnreachableBucketHoldsTheJobUntilItReturns() async throws {
        let system = try await GenGateSystem.start(environment: server.environment)
        defer { system.stop() }
        try server.command("stop")
        let id = try await system.submit(#"{"model": "sim/image", "prompt": "waits for its bucket"}"#)
        let waiting = try await system.waitFor(id, timeout: .seconds(60)) {
            $0["status"]?.stringValue == "uploading" && $0["error"]?["code"]?.stringValue == "upload_failed"
        }
        XCTAssertTrue(waiting["error"]?["message"]?.stringValue?.contains("did not answer") == true, "\(waiting)")
        try server.command("start")
        let done = try await system.waitForStatus(id, "completed", timeout: .seconds(60))
        XCTAssertEqual(done["error"], .null)
        let key = try XCTUnwrap(try server.command("keys")["keys"]?.arrayValue?.first?.stringValue)
        XCTAssertEqual(
            try server.command("get \(key)")["sha256"]?.stringValue,
            done["outputs"]?.arrayValue?.first?["sha256"]?.stringValue)
    }

    func testABucketDownPastTheDeadlineFailsTheJobWithUploadFailed() async throws {
        let system = try await GenGateSystem.start(
            environment: server.environment.merging(["GENGATE_SWEEP_INTERVAL_SECONDS": "1"]) { $1 })
        defer { system.stop() }
        try server.command("stop")
        let id = try await system.submit(
            #"{"model": "sim/image", "prompt": "never stored", "deadline_seconds": 10}"#)
        let failed = try await system.waitForStatus(id, "failed", timeout: .seconds(60))
        XCTAssertEqual(failed["error"]?["code"]?.stringValue, "upload_failed", "\(failed)")
        XCTAssertTrue(failed["error"]?["message"]?.stringValue?.contains("deadline") == true, "\(failed)")
    }

    func testUpRefusesCredentialsTheBucketRefuses() async throws {
        var environment = server.environment
        environment["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
        do {
            let system = try await GenGateSystem.start(environment: environment)
            system.stop()
            XCTFail("gengate up started with credentials the bucket refuses")
        } catch let error as SystemError {
            XCTAssertTrue(error.description.contains("refused the credentials"), error.description)
            XCTAssertFalse(error.description.contains("not-the-secret"))
        }
    }
}
