import Foundation
import GenGateCore
import XCTest

/// Prices and estimates: what a submission or a batch would cost, answered before anything is
/// submitted, by the configuration's prices or GenGate's shipped defaults (said to be defaults).
final class CostTests: XCTestCase {
    func testEstimatesComeBeforeSpendingAndSubmitNothing() async throws {
        let system = try await GenGateSystem.start(
            config: #"{"pricing": {"currency": "EUR", "models": {"sim/image": {"per_image": 0.01}}}}"#)
        defer { system.stop() }

        let models = try await system.request(.GET, "/v1/models").json["data"]?.arrayValue ?? []
        let sim = models.first { $0["id"]?.stringValue == "sim/image" }
        XCTAssertEqual(sim?["price"]?["per_image"]?.doubleValue, 0.01)
        XCTAssertEqual(sim?["price"]?["default"], .bool(false))
        XCTAssertEqual(sim?["price"]?["currency"]?.stringValue, "EUR")
        let kling = models.first { $0["id"]?.stringValue == "kling/kling-v1-6" }
        XCTAssertEqual(kling?["price"]?["default"], .bool(true), "a shipped price is marked as such")

        var answer = try await system.request(
            .POST, "/v1/generations?dry_run=true", body: #"{"model": "sim/image", "prompt": "a fox", "n": 4}"#)
        XCTAssertEqual(answer.status, 200, String(decoding: answer.body, as: UTF8.self))
        XCTAssertEqual(answer.json["object"]?.stringValue, "estimate")
        XCTAssertEqual(answer.json["estimate"]?["amount"]?.doubleValue ?? 0, 0.04, accuracy: 1e-9)
        XCTAssertEqual(answer.json["estimate"]?["currency"]?.stringValue, "EUR")
        XCTAssertEqual(answer.json["estimate"]?["basis"]?.stringValue, "4 × 0.01 an image")
        // Invalid requests are refused as a submission would be.
        answer = try await system.request(.POST, "/v1/generations?dry_run=true", body: #"{"model": "sim/image"}"#)
        XCTAssertEqual(answer.status, 400)
        answer = try await system.request(
            .POST, "/v1/generations?dry_run=maybe", body: #"{"model": "sim/image", "prompt": "x"}"#)
        XCTAssertEqual(answer.json["error"]?["details"]?.arrayValue?.first?["path"]?.stringValue, "dry_run")

        answer = try await system.request(
            .POST, "/v1/batches",
            body: """
                {"estimate_only": true, "requests": [
                  {"model": "sim/image", "prompt": "a", "n": 2},
                  {"model": "sim/video", "prompt": "b", "params": {"duration": 8}}]}
                """)
        XCTAssertEqual(answer.status, 200, String(decoding: answer.body, as: UTF8.self))
        XCTAssertEqual(answer.json["total"]?.doubleValue ?? 0, 0.02, accuracy: 1e-9)
        XCTAssertEqual(answer.json["requests"]?.arrayValue?.count, 2)
        XCTAssertEqual(
            answer.json["requests"]?.arrayValue?.last?["estimate"]?["basis"]?.stringValue, "1 × 8 s × 0.0")
        XCTAssertEqual(answer.json["requests"]?.arrayValue?.last?["estimate"]?["default_price"], .bool(true))

        // Nothing was submitted.
        let listed = try await system.request(.GET, "/v1/generations").json["data"]?.arrayValue ?? []
        XCTAssertEqual(listed.count, 0)
        let batches = try await system.request(.GET, "/v1/batches").json["data"]?.arrayValue ?? []
        XCTAssertEqual(batches.count, 0)
    }
}
