import Foundation
import GenGateCore
import XCTest

/// Webhooks to applications, checked by a receiver that verifies signatures with the Standard
/// Webhooks reference library (Tests/Webhooks/receiver.py).
final class WebhookTests: XCTestCase {
    static let receiverScript = EventSchemaTests.root.appendingPathComponent("Tests/Webhooks/receiver.py")

    /// A receiver on a free port: its port, and the deliveries it printed.
    static func receiver(failFirst: Int, secrets: [String], delay: Double = 0) async throws -> (Python.Running, Int) {
        try await Python.serve(Self.receiverScript, arguments: ["\(failFirst)", "--delay=\(delay)"] + secrets)
    }

    func receiver(failFirst: Int, secrets: [String], delay: Double = 0) async throws -> (Python.Running, Int) {
        try await Self.receiver(failFirst: failFirst, secrets: secrets, delay: delay)
    }

    /// Each line a Python helper printed, as JSON.
    static func deliveries(_ receiver: Python.Running) -> [JSONValue] {
        receiver.lines().compactMap { try? JSONCoding.decode(JSONValue.self, from: Data($0.utf8)) }
    }

    func deliveries(_ receiver: Python.Running) -> [JSONValue] { Self.deliveries(receiver) }

    func waitFor(
        _ receiver: Python.Running, timeout: Duration = .seconds(30), file: StaticString = #filePath,
        line: UInt = #line,
        _ done: ([JSONValue]) -> Bool
    ) async throws -> [JSONValue] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let seen = deliveries(receiver)
            if done(seen) { return seen }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTFail("the receiver did not get there: \(receiver.lines())", file: file, line: line)
        throw SystemError("timeout")
    }

    static let quickRetries = #"{"webhooks": {"retry_schedule_seconds": [0.3, 0.3, 0.3]}}"#

    func testDeliveriesAreSignedRetriedInOrderVisibleOnTheJobAndRedelivered() async throws {
        let system = try await GenGateSystem.start(
            environment: ["GENGATE_WEBHOOK_ALLOW_PRIVATE": "1", "GENGATE_SIM_LATENCY_MS": "600"],
            config: Self.quickRetries)
        defer { system.stop() }
        let first = try await system.request(.GET, "/v1/webhooks/secret").json
        let secret = try XCTUnwrap(first["secret"]?.stringValue)
        XCTAssertTrue(secret.hasPrefix("whsec_"))
        let second = try await system.request(.GET, "/v1/webhooks/secret").json
        XCTAssertEqual(second["secret"], first["secret"], "made once")
        let (receiver, port) = try await receiver(failFirst: 2, secrets: [secret])
        defer { receiver.stop() }

        let id = try await system.submit(
            #"{"model": "sim/image", "prompt": "hooked", "n": 2, "webhook": "http://127.0.0.1:\#(port)/hook", "webhook_events": ["start", "output", "completed"]}"#
        )
        _ = try await system.waitForStatus(id, "completed")
        let seen = try await waitFor(receiver) { $0.filter { $0["status"] == .number(200) }.count == 4 }
        // Every delivery verifies with the reference library.
        XCTAssertTrue(seen.allSatisfy { $0["verified"] == .array([.bool(true)]) }, "\(seen)")
        // The first delivery failed twice, then went through, with the same webhook-id each time;
        // the others waited for it: a job's deliveries arrive in order.
        XCTAssertEqual(seen.prefix(3).map { $0["id"] }, Array(repeating: seen[0]["id"], count: 3))
        XCTAssertEqual(seen.map { $0["status"]?.intValue ?? 0 }, [500, 500, 200, 200, 200, 200])
        let delivered = seen.filter { $0["status"] == .number(200) }
        XCTAssertEqual(
            delivered.map { $0["body"]?["type"]?.stringValue ?? "" },
            ["generation.started", "generation.output", "generation.output", "generation.completed"])
        XCTAssertEqual(Set(delivered.compactMap { $0["id"]?.stringValue }).count, 4)
        let last = try XCTUnwrap(delivered.last?["body"])
        XCTAssertEqual(last["data"]?["id"], .string(id))
        XCTAssertEqual(last["data"]?["status"], .string("completed"))
        XCTAssertEqual(last["data"]?["outputs"]?.arrayValue?.count, 2)
        XCTAssertEqual(last["event"]?["type"], .string("generation.completed"))
        XCTAssertEqual(
            delivered[1]["body"]?["event"]?["payload"]?["index"]?.intValue.map { [0, 1].contains($0) }, true)

        // Every attempt shows on the job.
        var job = try await system.request(.GET, "/v1/generations/\(id)").json
        var shown = try XCTUnwrap(job["webhook_deliveries"]?.arrayValue)
        for _ in 0..<50 where shown.contains(where: { $0["status"] != .string("delivered") }) {
            try await Task.sleep(for: .milliseconds(100))
            job = try await system.request(.GET, "/v1/generations/\(id)").json
            shown = try XCTUnwrap(job["webhook_deliveries"]?.arrayValue)
        }
        XCTAssertEqual(shown.count, 4)
        XCTAssertTrue(shown.allSatisfy { $0["status"] == .string("delivered") }, "\(shown)")
        XCTAssertEqual(
            shown[0]["attempt_history"]?.arrayValue?.map { $0["status_code"]?.intValue ?? 0 }, [500, 500, 200])
        XCTAssertEqual(job["webhook_events"], .array([.string("start"), .string("output"), .string("completed")]))

        // Redelivered on request: once more, the same id and body.
        let deliveryID = try XCTUnwrap(shown[3]["id"]?.stringValue)
        let again = try await system.request(.POST, "/v1/generations/\(id)/webhooks/\(deliveryID)/redeliver")
        XCTAssertEqual(again.status, 202, String(decoding: again.body, as: UTF8.self))
        let after = try await waitFor(receiver) { $0.count == 7 }
        XCTAssertEqual(after[6]["id"], .string(deliveryID))
        XCTAssertEqual(after[6]["body"], delivered[3]["body"])
        XCTAssertEqual(after[6]["verified"], .array([.bool(true)]))
        let missing = try await system.request(.POST, "/v1/generations/\(id)/webhooks/msg_nope/redeliver")
        XCTAssertEqual(missing.status, 404)
        let list = try await system.request(.GET, "/v1/generations/\(id)/webhooks").json
        XCTAssertEqual(list["data"]?.arrayValue?.count, 4)
    }

    /// Many deliveries to one slow receiver at once: each goes out when its job ends, none
    /// waits behind another for a connection (the sender keeps one client per receiver), so
    /// every one is accepted at its first attempt, within the 5 s a receiver has to answer (one
    /// that answers after 2 s: 32 deliveries taking turns on 8 connections would need 8 s).
    func testManyDeliveriesToOneSlowReceiverGoOutTogether() async throws {
        let system = try await GenGateSystem.start(
            environment: ["GENGATE_WEBHOOK_ALLOW_PRIVATE": "1", "GENGATE_SIM_LATENCY_MS": "0"],
            config: #"{"webhooks": {"timeout_seconds": 5}}"#)
        defer { system.stop() }
        let keys = try await system.request(.GET, "/v1/webhooks/secret").json
        let secret = try XCTUnwrap(keys["secret"]?.stringValue)
        let (receiver, port) = try await receiver(failFirst: 0, secrets: [secret], delay: 2)
        defer { receiver.stop() }
        let count = 32
        let ids = try await withThrowingTaskGroup(of: String.self) { group in
            for index in 0..<count {
                group.addTask {
                    try await system.submit(
                        #"{"model": "sim/image", "prompt": "many \#(index)", "webhook": "http://127.0.0.1:\#(port)/hook", "webhook_events": ["completed"]}"#
                    )
                }
            }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        let seen = try await waitFor(receiver) { $0.count >= count }
        XCTAssertEqual(Set(seen.compactMap { $0["id"]?.stringValue }).count, count, "each delivered once")
        for id in ids {
            // The receiver printed before its answer was recorded: wait for the record.
            var deliveries: [JSONValue] = []
            for _ in 0..<50 {
                let job = try await system.request(.GET, "/v1/generations/\(id)").json
                deliveries = try XCTUnwrap(job["webhook_deliveries"]?.arrayValue)
                if deliveries.allSatisfy({ $0["status"] != .string("pending") }) { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            XCTAssertEqual(deliveries.count, 1)
            XCTAssertEqual(
                deliveries.first?["attempt_history"]?.arrayValue?.map { $0["status_code"]?.intValue ?? 0 }, [200],
                "accepted at its first attempt: \(deliveries)")
        }
    }

    func testARotationSignsWithBothSecretsUntilTheGraceEnds() async throws {
        let system = try await GenGateSystem.start(
            environment: ["GENGATE_WEBHOOK_ALLOW_PRIVATE": "1"], config: Self.quickRetries)
        defer { system.stop() }
        let current = try await system.request(.GET, "/v1/webhooks/secret").json
        let old = try XCTUnwrap(current["secret"]?.stringValue)
        let rotated = try await system.request(.POST, "/v1/webhooks/secret/rotate").json
        let new = try XCTUnwrap(rotated["secret"]?.stringValue)
        XCTAssertNotEqual(new, old)
        XCTAssertNotNil(rotated["previous_valid_until"]?.stringValue)
        // Another key has its own secret, and sees only it.
        let other = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "app"}"#).json
        let theirs = try await system.request(
            .GET, "/v1/webhooks/secret", key: .some(other["key"]!.stringValue!)
        ).json
        XCTAssertNotEqual(theirs["secret"]?.stringValue, new)

        let (receiver, port) = try await receiver(failFirst: 0, secrets: [old, new, theirs["secret"]!.stringValue!])
        defer { receiver.stop() }
        _ = try await system.submit(
            #"{"model": "sim/image", "prompt": "rotated", "webhook": "http://127.0.0.1:\#(port)/h"}"#)
        let seen = try await waitFor(receiver) {
            $0.contains { $0["body"]?["type"] == .string("generation.completed") }
        }
        let completed = try XCTUnwrap(seen.last)
        XCTAssertEqual(completed["signatures"], .number(2))
        XCTAssertEqual(completed["verified"], .array([.bool(true), .bool(true), .bool(false)]))
        XCTAssertEqual(
            seen.map { $0["body"]?["type"]?.stringValue ?? "" }, ["generation.output", "generation.completed"],
            "by default: outputs and the end")
    }

    func testWebhookTargetsInsideTheNetworkAreRefused() async throws {
        let system = try await GenGateSystem.start()
        defer { system.stop() }
        for url in [
            "http://127.0.0.1:9/x", "http://10.0.0.5/x", "http://169.254.169.254/latest/meta-data", "http://[::1]/x",
            "http://localhost:8080/x", "http://[::ffff:127.0.0.1]/x", "ftp://example.com/x",
            "https://user:pw@example.com/x",
        ] {
            let answer = try await system.request(
                .POST, "/v1/generations", body: #"{"model": "sim/image", "prompt": "x", "webhook": "\#(url)"}"#)
            XCTAssertEqual(answer.status, 400, url)
            XCTAssertEqual(answer.json["error"]?["details"]?.arrayValue?.first?["path"], .string("webhook"), url)
        }
        let events = try await system.request(
            .POST, "/v1/generations", body: #"{"model": "sim/image", "prompt": "x", "webhook_events": ["completed"]}"#)
        XCTAssertEqual(events.status, 400)
        let unknown = try await system.request(
            .POST, "/v1/generations",
            body:
                #"{"model": "sim/image", "prompt": "x", "webhook": "https://example.com/h", "webhook_events": ["done"]}"#
        )
        XCTAssertEqual(unknown.json["error"]?["details"]?.arrayValue?.first?["path"], .string("webhook_events[0]"))
        // A public name is taken at submission; what it resolves to is checked at each delivery.
        let accepted = try await system.request(
            .POST, "/v1/generations",
            body: #"{"model": "sim/image", "prompt": "x", "webhook": "https://hooks.example.com/h"}"#)
        XCTAssertEqual(accepted.status, 202)
    }
}
