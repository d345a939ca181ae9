import Foundation
import GenGateBus
import GenGateCore
import NIOHTTP1
import XCTest

/// Drives one running GenGate over HTTP: jobs end to end, validation, ownership, cancel, list,
/// the monitor, the public event stream and the CLI. The system is shared by the tests of this
/// class (starting one costs a second or two) and stopped after the last.
final class GenerationFlowTests: XCTestCase {
    nonisolated(unsafe) static var shared: GenGateSystem?

    var system: GenGateSystem {
        get async throws {
            if let system = Self.shared { return system }
            let system = try await GenGateSystem.start(environment: ["GENGATE_SIM_LATENCY_MS": "1000"])
            Self.shared = system
            return system
        }
    }

    override class func tearDown() {
        shared?.stop()
        shared = nil
        super.tearDown()
    }

    func testImageJobWithFourOutputsCompletesAndServesMatchingBytes() async throws {
        let system = try await system
        let started = ContinuousClock.now
        let id = try await system.submit(
            #"{"model": "sim/image", "prompt": "a lighthouse at dusk", "n": 4, "seed": 42}"#)
        let done = try await system.waitForStatus(id, "completed")
        let elapsed = ContinuousClock.now - started
        print("n=4 sim/image job end to end: \(elapsed) (sim latency 1000 ms)")

        XCTAssertEqual(done["progress"]?.intValue, 100)
        XCTAssertEqual(done["attempts"]?.intValue, 1)
        XCTAssertEqual(done["provider"]?.stringValue, "sim")
        for phase in ["created_at", "dispatching_at", "running_at", "uploading_at", "completed_at"] {
            XCTAssertNotNil(done[phase]?.stringValue, "\(phase) must be set")
        }
        XCTAssertEqual(done["error"], .null)
        guard case .array(let outputs)? = done["outputs"] else { return XCTFail("no outputs in \(done)") }
        XCTAssertEqual(outputs.count, 4)
        XCTAssertEqual(outputs.compactMap { $0["index"]?.intValue }, [0, 1, 2, 3])
        var checksums = Set<String>()
        for output in outputs {
            let url = try XCTUnwrap(output["url"]?.stringValue)
            XCTAssertTrue(url.hasPrefix(system.baseURL + "/v1/generations/\(id)/outputs/"), url)
            let fetched = try await system.request(.GET, String(url.dropFirst(system.baseURL.count)))
            XCTAssertEqual(fetched.status, 200)
            XCTAssertEqual(fetched.headers.first(name: "Content-Type"), "image/png")
            XCTAssertEqual(Array(fetched.body.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "a PNG")
            XCTAssertEqual(
                Digest.sha256Hex(fetched.body), output["sha256"]?.stringValue, "sha256 must match the bytes served")
            XCTAssertEqual(fetched.body.count, output["bytes"]?.intValue)
            checksums.insert(Digest.sha256Hex(fetched.body))
        }
        XCTAssertEqual(checksums.count, 4, "each output is a different image")

        // Deterministic: the same prompt, seed and index give the same image.
        let again = try await system.submit(
            #"{"model": "sim/image", "prompt": "a lighthouse at dusk", "n": 1, "seed": 42}"#)
        let second = try await system.waitForStatus(again, "completed")
        XCTAssertEqual(second["outputs"]?.arrayFirst?["sha256"], outputs[0]["sha256"])
    }

    func testTextJobCompletes() async throws {
        let system = try await system
        let id = try await system.submit(#"{"model": "sim/text", "prompt": "write a haiku", "n": 2}"#)
        let done = try await system.waitForStatus(id, "completed")
        let first = try XCTUnwrap(done["outputs"]?.arrayFirst)
        XCTAssertEqual(first["content_type"]?.stringValue, "text/plain; charset=utf-8")
        let text = try await system.request(.GET, "/v1/generations/\(id)/outputs/0")
        XCTAssertTrue(String(decoding: text.body, as: UTF8.self).contains("write a haiku"))
    }

    func testInvalidRequestsGetClearErrors() async throws {
        let system = try await system
        func expect(
            _ answer: GenGateSystem.Answer, _ status: Int, _ code: String, detail path: String? = nil,
            file: StaticString = #filePath, line: UInt = #line
        ) {
            let body = String(decoding: answer.body, as: UTF8.self)
            XCTAssertEqual(answer.status, status, body, file: file, line: line)
            XCTAssertEqual(answer.json["error"]?["code"]?.stringValue, code, body, file: file, line: line)
            XCTAssertNotNil(answer.json["error"]?["message"]?.stringValue, body, file: file, line: line)
            XCTAssertEqual(answer.json["error"]?["retryable"], .bool(false), body, file: file, line: line)
            if let path {
                guard case .array(let details)? = answer.json["error"]?["details"] else {
                    return XCTFail("no details in \(body)", file: file, line: line)
                }
                XCTAssertTrue(
                    details.contains { $0["path"]?.stringValue == path }, "no detail for \(path) in \(body)",
                    file: file, line: line)
            }
        }
        let post = { (body: String) in try await system.request(.POST, "/v1/generations", body: body) }
        expect(try await system.request(.POST, "/v1/generations", body: "{}", key: .some(nil)), 401, "unauthorized")
        expect(try await system.request(.POST, "/v1/generations", body: "{}", key: "gg_wrong"), 401, "unauthorized")
        expect(
            try await system.request(.GET, "/v1/generations", headers: [("Authorization", "Basic abc")]), 401,
            "unauthorized")
        expect(try await post("{\"model\": "), 400, "invalid_json")
        expect(try await post(""), 400, "invalid_json")
        expect(try await post("[1, 2]"), 400, "invalid_request", detail: "")
        expect(try await post(#"{"model": "sim/image"}"#), 400, "invalid_request", detail: "prompt")
        expect(try await post(#"{"model": "sim/image", "prompt": "   "}"#), 400, "invalid_request", detail: "prompt")
        expect(try await post(#"{"prompt": "x"}"#), 400, "invalid_request", detail: "model")
        expect(try await post(#"{"model": "nope/model", "prompt": "x"}"#), 400, "unknown_model", detail: "model")
        expect(try await post(#"{"model": 7, "prompt": "x"}"#), 400, "invalid_request", detail: "model")
        expect(try await post(#"{"model": "sim/image", "prompt": "x", "n": 11}"#), 400, "invalid_request", detail: "n")
        expect(try await post(#"{"model": "sim/image", "prompt": "x", "n": 0}"#), 400, "invalid_request", detail: "n")
        expect(try await post(#"{"model": "sim/image", "prompt": "x", "n": 2.5}"#), 400, "invalid_request", detail: "n")
        expect(try await post(#"{"model": "sim/image", "prompt": "x", "n": "4"}"#), 400, "invalid_request", detail: "n")
        expect(
            try await post(#"{"model": "sim/image", "prompt": "x", "seed": -1}"#), 400, "invalid_request",
            detail: "seed")
        expect(
            try await post(#"{"model": "sim/image", "prompt": "x", "width": 5000}"#), 400, "invalid_request",
            detail: "width")
        expect(
            try await post(#"{"model": "sim/text", "prompt": "x", "width": 64}"#), 400, "invalid_request",
            detail: "width")
        expect(
            try await post(#"{"model": "sim/image", "prompt": "x", "colour": "red"}"#), 400, "invalid_request",
            detail: "colour")
        expect(
            try await post(#"{"model": "sim/image", "prompt": "x", "params": 3}"#), 400, "invalid_request",
            detail: "params")
        let longPrompt = String(repeating: "a", count: 4_001)
        expect(
            try await post(#"{"model": "sim/image", "prompt": "\#(longPrompt)"}"#), 400, "invalid_request",
            detail: "prompt")
        // Several problems at once are all reported.
        let several = try await post(#"{"model": "sim/image", "n": 99, "seed": "x"}"#)
        expect(several, 400, "invalid_request", detail: "prompt")
        expect(several, 400, "invalid_request", detail: "n")
        expect(several, 400, "invalid_request", detail: "seed")

        // Past http.max_body_bytes (1 MiB) and the room for one data: URL of 10 MiB.
        let huge = #"{"model": "sim/image", "prompt": "\#(String(repeating: "x", count: 16_000_000))"}"#
        expect(try await post(huge), 413, "payload_too_large")
        expect(try await system.request(.GET, "/v1/nothing-here"), 404, "not_found")
        expect(try await system.request(.DELETE, "/v1/generations"), 404, "not_found")
        expect(try await system.request(.GET, "/v1/generations/gen_doesnotexist"), 404, "not_found")
        expect(try await system.request(.GET, "/v1/generations?status=bogus"), 400, "invalid_request", detail: "status")
        expect(try await system.request(.GET, "/v1/generations?limit=1000"), 400, "invalid_request", detail: "limit")

        // Nothing above may have hurt the service.
        let health = try await system.request(.GET, "/health", key: .some(nil))
        XCTAssertEqual(health.status, 200)
    }

    func testAKeySeesOnlyItsOwnGenerations() async throws {
        let system = try await system
        let created = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "app-two"}"#)
        XCTAssertEqual(created.status, 201, String(decoding: created.body, as: UTF8.self))
        let otherKey = try XCTUnwrap(created.json["key"]?.stringValue)
        XCTAssertEqual(created.json["admin"], .bool(false))

        let mine = try await system.submit(#"{"model": "sim/image", "prompt": "mine"}"#)
        for (method, path) in [
            (HTTPMethod.GET, "/v1/generations/\(mine)"), (.POST, "/v1/generations/\(mine)/cancel"),
            (.GET, "/v1/generations/\(mine)/outputs/0"),
        ] {
            let answer = try await system.request(method, path, key: otherKey)
            XCTAssertEqual(answer.status, 404, "\(method) \(path) by another key must look like nothing is there")
            XCTAssertEqual(answer.json["error"]?["code"]?.stringValue, "not_found")
        }
        let theirs = try await system.request(.GET, "/v1/generations", key: otherKey)
        XCTAssertEqual(theirs.json["data"], .array([]))
        let forbidden = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "x"}"#, key: otherKey)
        XCTAssertEqual(forbidden.status, 403)
        let ownJob = try await system.submit(#"{"model": "sim/text", "prompt": "theirs"}"#, key: otherKey)
        _ = try await system.waitForStatus(ownJob, "completed", key: otherKey)
        let stillMine = try await system.waitForStatus(mine, "completed")
        XCTAssertEqual(stillMine["status"]?.stringValue, "completed")
    }

    func testCancelStopsARunningJobForGood() async throws {
        let system = try await system
        let id = try await system.submit(#"{"model": "sim/image", "prompt": "cancel me", "n": 3}"#)
        _ = try await system.waitForStatus(id, "running")
        let cancelled = try await system.request(.POST, "/v1/generations/\(id)/cancel")
        XCTAssertEqual(cancelled.status, 200)
        XCTAssertEqual(cancelled.json["status"]?.stringValue, "cancelled")
        XCTAssertEqual(cancelled.json["error"]?["code"]?.stringValue, "cancelled")
        XCTAssertNotNil(cancelled.json["cancelled_at"]?.stringValue)

        try await Task.sleep(for: .milliseconds(1_800))  // past the task's latency: nothing may revive it
        let later = try await system.request(.GET, "/v1/generations/\(id)").json
        XCTAssertEqual(later["status"]?.stringValue, "cancelled")
        XCTAssertEqual(later["outputs"], .array([]))
        let twice = try await system.request(.POST, "/v1/generations/\(id)/cancel")
        XCTAssertEqual(twice.status, 200, "cancelling again is harmless")

        let finished = try await system.submit(#"{"model": "sim/text", "prompt": "done already"}"#)
        _ = try await system.waitForStatus(finished, "completed")
        let late = try await system.request(.POST, "/v1/generations/\(finished)/cancel")
        XCTAssertEqual(late.status, 409)
        XCTAssertEqual(late.json["error"]?["code"]?.stringValue, "conflict")
    }

    func testListFiltersByStatusAndPaginates() async throws {
        let system = try await system
        let created = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "lister"}"#)
        let key = try XCTUnwrap(created.json["key"]?.stringValue)
        var ids: [String] = []
        for i in 0..<5 {
            ids.append(try await system.submit(#"{"model": "sim/text", "prompt": "item \#(i)"}"#, key: key))
        }
        for id in ids { _ = try await system.waitForStatus(id, "completed", key: key) }
        var seen: [String] = []
        var path = "/v1/generations?limit=2&status=completed"
        while true {
            let page = try await system.request(.GET, path, key: key).json
            guard case .array(let items)? = page["data"] else { return XCTFail("no data in \(page)") }
            XCTAssertLessThanOrEqual(items.count, 2)
            seen += items.compactMap { $0["id"]?.stringValue }
            guard let cursor = page["next_cursor"]?.stringValue else { break }
            path = "/v1/generations?limit=2&status=completed&cursor=\(cursor)"
        }
        XCTAssertEqual(seen, ids.reversed(), "newest first, every item once")
        let none = try await system.request(.GET, "/v1/generations?status=failed", key: key).json
        XCTAssertEqual(none["data"], .array([]))
    }

    func testMonitorReportsEveryServiceAndCountsJobs() async throws {
        let system = try await system
        let id = try await system.submit(#"{"model": "sim/text", "prompt": "count me"}"#)
        _ = try await system.waitForStatus(id, "completed")
        var health = try await system.monitor("/health")
        for _ in 0..<50 where health.status != 200 {
            try await Task.sleep(for: .milliseconds(100))
            health = try await system.monitor("/health")
        }
        XCTAssertEqual(health.status, 200, String(decoding: health.body, as: UTF8.self))
        for service in ["api-ingress", "dispatcher", "poller", "uploader", "monitor"] {
            XCTAssertEqual(
                health.json["services"]?[service]?["status"]?.stringValue, "ok", "\(service) in \(health.json)")
            XCTAssertNotNil(
                health.json["services"]?[service]?["instances"]?.arrayFirst?["heartbeat_age_seconds"]?.doubleValue)
        }
        let metrics = try await system.metrics(containing: "gengate_generations_completed_total{")
        XCTAssertTrue(
            metrics.contains(#"gengate_generations_completed_total{provider="sim",model="sim/text"}"#), metrics)
        XCTAssertTrue(metrics.contains("gengate_provider_calls_total{"), metrics)
        XCTAssertTrue(metrics.contains(#"gengate_service_up{service="poller"} 1"#), metrics)
        XCTAssertTrue(metrics.contains(#"gengate_generations_active{status="pending"}"#), metrics)
        // What Prometheus's own checker says of the page: every metric described, well named.
        let checked = try Command.run(["promtool", "check", "metrics"], input: metrics)
        XCTAssertEqual(checked.status, 0, "promtool check metrics: \(checked.output)")
    }

    func testPublicEventStreamCarriesLifecycleEvents() async throws {
        let system = try await system
        let context = try ZMQContext()
        let subscriber = try await EventSubscriber.connect(
            context: context, endpoint: "tcp://127.0.0.1:\(system.eventsPort)")
        let collector = Task { () -> [EventType] in
            var types: [EventType] = []
            var target: String?
            for await result in subscriber.events {
                guard let received = try? result.get() else { continue }
                if received.event.type == .serviceHeartbeat, target == nil {
                    // The subscription is live: now submit, so no lifecycle event can be missed.
                    target = try? await system.submit(#"{"model": "sim/image", "prompt": "watched", "n": 2}"#)
                    continue
                }
                guard let target, received.event.generationID == target else { continue }
                types.append(received.event.type)
                if received.event.type == .generationCompleted { break }
            }
            return types
        }
        let timeout = Task {
            try? await Task.sleep(for: .seconds(20))
            collector.cancel()
        }
        let types = await collector.value
        timeout.cancel()
        await subscriber.close()
        XCTAssertEqual(types.first, .generationCreated, "\(types)")
        XCTAssertTrue(types.contains(.generationStarted), "\(types)")
        XCTAssertEqual(types.filter { $0 == .generationOutput }.count, 2, "\(types)")
        XCTAssertEqual(types.last, .generationCompleted, "\(types)")
    }

    /// Runs `gengate <arguments>` against the shared system.
    func cli(_ arguments: [String]) async throws -> (Int32, Data, String) {
        let system = try await system
        return try GenGateSystem.command(arguments + ["--url", system.baseURL, "--key", system.adminKey])
    }

    func testCLISubmitWaitStatusAndCancel() async throws {
        let (status, data, _) = try await cli([
            "submit", "--model", "sim/image", "--prompt", "from the command line", "-n", "2", "--wait",
        ])
        XCTAssertEqual(status, 0)
        let printed = try JSONCoding.decoder().decode(JSONValue.self, from: data)
        XCTAssertEqual(printed["status"]?.stringValue, "completed")
        guard case .array(let outputs)? = printed["outputs"] else { return XCTFail("\(printed)") }
        XCTAssertEqual(outputs.count, 2)
        let id = try XCTUnwrap(printed["id"]?.stringValue)

        let (shown, shownData, _) = try await cli(["status", id])
        XCTAssertEqual(shown, 0)
        XCTAssertEqual(try JSONCoding.decoder().decode(JSONValue.self, from: shownData)["id"]?.stringValue, id)
        let (refused, _, refusal) = try await cli(["cancel", id])
        XCTAssertEqual(refused, 1, "a finished job cannot be cancelled")
        XCTAssertTrue(refusal.contains("conflict"), refusal)
        XCTAssertFalse(refusal.contains("Usage"), "an API error is not a usage error: \(refusal)")
        let (missing, _, complaint) = try await cli(["status", "gen_nope"])
        XCTAssertEqual(missing, 1)
        XCTAssertTrue(complaint.contains("not_found"), complaint)
    }
}

extension JSONValue {
    var arrayFirst: JSONValue? {
        if case .array(let items) = self { return items.first }
        return nil
    }
}
