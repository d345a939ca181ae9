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
}
