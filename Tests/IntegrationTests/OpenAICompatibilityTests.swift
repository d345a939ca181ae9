import Foundation
import GenGateCore
import XCTest

/// OpenAI's official Python SDK, pointed at GenGate with a GenGate key, works unchanged.
final class OpenAICompatibilityTests: XCTestCase {
    func testTheOfficialOpenAISDKWorksAgainstGenGate() async throws {
        let sim = try await ProviderSimulatorTests.SimulatorProcess(
            provider: "openai", key: "sk-openai-test", knobs: #"{"task_seconds": 1}"#)
        defer { sim.stop() }
        let system = try await GenGateSystem.start(environment: sim.environment, publicURL: true)
        defer { system.stop() }
        let script = EventSchemaTests.root.appendingPathComponent("Tests/SDK/gengate_openai.py")
        let result = try Python.run(script, arguments: [system.baseURL + "/v1", system.adminKey, "openai/gpt-4o-mini"])
        XCTAssertEqual(result.status, 0, result.output)
        let line = result.output.split(separator: "\n").last.map(String.init) ?? ""
        let seen = try JSONCoding.decode(JSONValue.self, from: Data(line.utf8))
        XCTAssertEqual(seen["url_images"], .number(2))
        XCTAssertEqual(seen["b64_images"], .number(1))
        XCTAssertEqual(seen["streamed"], .string("Echo: the tide comes in"))
        XCTAssertGreaterThan(seen["chunks"]?.intValue ?? 0, 1, "streamed as the provider streamed it")
        XCTAssertEqual(seen["wrong_key"], .number(401))
        XCTAssertEqual(seen["unknown_model"], .number(400))
        XCTAssertEqual(seen["wrong_kind"], .number(400))
        XCTAssertTrue(seen["models"]?.arrayValue?.contains(.string("sim/image")) ?? false)

        // Each call was a job like any other.
        let jobs = try await system.request(.GET, "/v1/generations?limit=100").json["data"]?.arrayValue ?? []
        XCTAssertEqual(jobs.filter { $0["status"] == .string("completed") }.count, 5)
        // A link with a wrong signature, or none, opens nothing.
        let forged = try await system.request(
            .GET, "/files/\(jobs[0]["id"]!.stringValue!)/0?expires=9999999999&signature=AAAA", key: .some(nil))
        XCTAssertEqual(forged.status, 403)
    }

    /// A job that fails is answered so that OpenAI's SDKs do not retry it (they would pay
    /// again), and an Idempotency-Key makes a repeated call the same job.
    func testAFailedJobIsNotRetriedAndAnIdempotencyKeyMakesOneJob() async throws {
        let system = try await GenGateSystem.start(environment: [
            "GENGATE_MAX_ATTEMPTS": "1", "GENGATE_SIM_LATENCY_MS": "200",
        ])
        defer { system.stop() }
        let failed = try await system.request(
            .POST, "/v1/images/generations", body: #"{"model": "sim/image", "prompt": "x", "sim_fail": true}"#)
        XCTAssertEqual(failed.status, 502, String(decoding: failed.body, as: UTF8.self))
        XCTAssertEqual(failed.headers.first(name: "x-should-retry"), "false")
        XCTAssertEqual(failed.json["error"]?["code"], .string("provider_error"))
        let job = try XCTUnwrap(failed.headers.first(name: "X-GenGate-Generation"))
        let shown = try await system.request(.GET, "/v1/generations/\(job)").json
        XCTAssertEqual(shown["status"], .string("failed"))

        var jobs: [String] = []
        for _ in 0..<2 {
            let answer = try await system.request(
                .POST, "/v1/images/generations", body: #"{"model": "sim/image", "prompt": "once"}"#,
                headers: [("Idempotency-Key", "retry-me-1")])
            XCTAssertEqual(answer.status, 200)
            jobs.append(try XCTUnwrap(answer.headers.first(name: "X-GenGate-Generation")))
        }
        XCTAssertEqual(jobs[0], jobs[1], "the repeat is the first call's job")
        let chat = try await system.request(
            .POST, "/v1/chat/completions",
            body: #"{"model": "sim/text", "messages": [{"role": "user", "content": "hi"}], "n": "2"}"#)
        XCTAssertEqual(chat.status, 400)
    }
}
