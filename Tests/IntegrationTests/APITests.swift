import Foundation
import GenGateCore
import NIOHTTP1
import XCTest

/// Idempotent submissions, key revocation, a private data directory, and early error answers
/// that reach every client.
final class APITests: XCTestCase {
    var system: GenGateSystem!

    override func setUp() async throws {
        system = try await GenGateSystem.start(environment: ["GENGATE_SIM_LATENCY_MS": "200"])
    }

    override func tearDown() {
        system?.stop()
    }

    func testARepeatedSubmissionWithTheSameIdempotencyKeyReturnsTheOriginal() async throws {
        let body = #"{"model": "sim/text", "prompt": "exactly once"}"#
        let first = try await system.request(
            .POST, "/v1/generations", body: body, headers: [("Idempotency-Key", "order-42")])
        XCTAssertEqual(first.status, 202)
        let id = try XCTUnwrap(first.json["id"]?.stringValue)
        _ = try await system.waitForStatus(id, "completed")

        // The same request again (keys reordered, same content): the same generation, no new job.
        let again = try await system.request(
            .POST, "/v1/generations", body: #"{"prompt": "exactly once", "model": "sim/text"}"#,
            headers: [("Idempotency-Key", "order-42")])
        XCTAssertEqual(again.status, 202)
        XCTAssertEqual(again.json["id"]?.stringValue, id)
        XCTAssertEqual(again.json["status"]?.stringValue, "completed")
        XCTAssertEqual(again.headers.first(name: "Idempotent-Replayed"), "true")

        let reused = try await system.request(
            .POST, "/v1/generations", body: #"{"model": "sim/text", "prompt": "something else"}"#,
            headers: [("Idempotency-Key", "order-42")])
        XCTAssertEqual(reused.status, 409)
        XCTAssertEqual(reused.json["error"]?["code"]?.stringValue, "idempotency_key_reused")
        XCTAssertTrue(reused.json["error"]?["message"]?.stringValue?.contains(id) ?? false, "\(reused.json)")

        let bad = try await system.request(
            .POST, "/v1/generations", body: body, headers: [("Idempotency-Key", String(repeating: "k", count: 300))])
        XCTAssertEqual(bad.status, 400)
        XCTAssertTrue(String(decoding: bad.body, as: UTF8.self).contains(#""path":"Idempotency-Key""#), "\(bad.json)")

        // Keys are per API key: another application may use the same one.
        let other = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "other"}"#)
        let otherKey = try XCTUnwrap(other.json["key"]?.stringValue)
        let theirs = try await system.request(
            .POST, "/v1/generations", body: body, key: otherKey, headers: [("Idempotency-Key", "order-42")])
        XCTAssertEqual(theirs.status, 202)
        XCTAssertNotEqual(theirs.json["id"]?.stringValue, id)

        let list = try await system.request(.GET, "/v1/generations")
        guard case .array(let mine)? = list.json["data"] else { return XCTFail("\(list.json)") }
        XCTAssertEqual(mine.count, 1, "one generation for the admin key, however many repeats")
    }

    func testARevokedKeyStopsWorkingWithinASecond() async throws {
        let created = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "leaving"}"#)
        let secret = try XCTUnwrap(created.json["key"]?.stringValue)
        let id = try XCTUnwrap(created.json["id"]?.stringValue)
        let before = try await system.request(.GET, "/v1/generations", key: secret)
        XCTAssertEqual(before.status, 200, "used, so it sits in the key cache")

        let revoked = try await system.request(.DELETE, "/v1/admin/keys/\(id)")
        XCTAssertEqual(revoked.status, 200)
        XCTAssertEqual(revoked.json["revoked"], .bool(true))
        let revokedAt = ContinuousClock.now
        var refused = false
        while ContinuousClock.now - revokedAt < .seconds(3) {
            if try await system.request(.GET, "/v1/generations", key: secret).status == 401 {
                refused = true
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTAssertTrue(refused)
        XCTAssertLessThan(
            ContinuousClock.now - revokedAt, .milliseconds(1_500), "revocation takes effect within a second")

        let again = try await system.request(.DELETE, "/v1/admin/keys/\(id)")
        XCTAssertEqual(again.status, 404)
        let another = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "x"}"#)
        let adminID = try XCTUnwrap(another.json["id"]?.stringValue)
        let notAdmin = try await system.request(.DELETE, "/v1/admin/keys/\(adminID)", key: secret)
        XCTAssertEqual(notAdmin.status, 401, "a revoked key does nothing")
    }

    func testOutputsAreServedWholeOrByRange() async throws {
        let id = try await system.submit(#"{"model": "sim/image", "prompt": "ranged", "width": 64, "height": 64}"#)
        let done = try await system.waitForStatus(id, "completed")
        guard case .array(let outputs)? = done["outputs"], let first = outputs.first else { return XCTFail("\(done)") }
        let size = try XCTUnwrap(first["bytes"]?.intValue)
        let whole = try await system.request(.GET, "/v1/generations/\(id)/outputs/0")
        XCTAssertEqual(whole.status, 200)
        XCTAssertEqual(whole.body.count, size)
        XCTAssertEqual(whole.headers.first(name: "Accept-Ranges"), "bytes")
        XCTAssertEqual(Digest.sha256Hex(whole.body), first["sha256"]?.stringValue)

        let head = try await system.request(.GET, "/v1/generations/\(id)/outputs/0", headers: [("Range", "bytes=0-7")])
        XCTAssertEqual(head.status, 206)
        XCTAssertEqual(head.body, whole.body.prefix(8), "the PNG signature")
        XCTAssertEqual(head.headers.first(name: "Content-Range"), "bytes 0-7/\(size)")
        let tail = try await system.request(.GET, "/v1/generations/\(id)/outputs/0", headers: [("Range", "bytes=-12")])
        XCTAssertEqual(tail.status, 206)
        XCTAssertEqual(tail.body, whole.body.suffix(12), "IEND and its CRC")
        let resume = try await system.request(
            .GET, "/v1/generations/\(id)/outputs/0", headers: [("Range", "bytes=100-")])
        XCTAssertEqual(resume.body, whole.body.dropFirst(100))
        let outside = try await system.request(
            .GET, "/v1/generations/\(id)/outputs/0", headers: [("Range", "bytes=\(size)-")])
        XCTAssertEqual(outside.status, 416)
        XCTAssertEqual(outside.json["error"]?["code"]?.stringValue, "range_not_satisfiable")
        XCTAssertEqual(outside.headers.first(name: "Content-Range"), "bytes */\(size)", "the size, as RFC 9110 asks")
    }

    func testTheDataDirectoryIsPrivate() throws {
        let files = FileManager.default
        func mode(_ path: String) throws -> Int {
            try XCTUnwrap(
                (try files.attributesOfItem(atPath: system.dataDir.appendingPathComponent(path).path)[.posixPermissions]
                    as? NSNumber)?.intValue)
        }
        XCTAssertEqual(try mode(""), 0o700)
        XCTAssertEqual(try mode("run"), 0o700)
        XCTAssertEqual(try mode("objects"), 0o700)
        XCTAssertEqual(try mode("gengate.sqlite"), 0o600)
        XCTAssertEqual(try mode("admin.key"), 0o600)
    }

    /// Like Python's urllib: `Connection: close`, the whole 20 MB body written before reading.
    /// The 413 must arrive and the connection close, not hang until the client gives up.
    func testAnOversizedBodyFromAClientThatWritesItAllFirstGetsItsAnswer() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(system.httpPort).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        XCTAssertEqual(connected, 0)
        let size = 20 * 1_024 * 1_024
        let head =
            "POST /v1/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(system.adminKey)\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(size)\r\nConnection: close\r\n\r\n"
        XCTAssertEqual(send(fd, head, head.utf8.count, 0), head.utf8.count)
        let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 64 * 1_024)
        var sent = 0
        while sent < size {
            let wrote = send(fd, chunk, min(chunk.count, size - sent), Int32(MSG_NOSIGNAL))
            guard wrote > 0 else {
                return XCTFail("the server stopped reading after \(sent) bytes (errno \(errno)): the client would hang")
            }
            sent += wrote
        }
        var answer = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4_096)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count > 0 else {
                XCTAssertEqual(count, 0, "the connection must close after the answer (errno \(errno))")
                break
            }
            answer += buffer[0..<count]
        }
        let text = String(decoding: answer, as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 413"), text)
        XCTAssertTrue(text.contains("payload_too_large"), text)
    }
}
