import Foundation
import GenGateCore
import GenGateProviderSim
import XCTest

@testable import GenGateProviders

/// The Pollo adapter against the Pollo simulator.
final class PolloAdapterTests: XCTestCase {
    var sim: RunningSimulator!
    var adapter: PolloAdapter!

    override func setUp() async throws {
        sim = try await RunningSimulator.start(
            "pollo", key: "pollo_test", knobs: try SimKnobs().applying(.object(["task_seconds": .number(0.3)])))
        adapter = PolloAdapter(
            key: "pollo_test",
            endpoint: ProviderEndpoint(baseURL: sim.baseURL + "/api/platform", requestTimeoutSeconds: 2))
    }

    override func tearDown() async throws {
        await adapter?.shutdown()
        sim?.stop()
    }

    func request(_ model: String = "pollo/pollo-v1-6") -> ProviderRequest {
        ProviderRequest(
            generationID: "gen_1", clientReference: "gen_1-a1", model: model, prompt: "waves at dusk",
            outputIndexes: [0],
            seed: nil, width: nil, height: nil, params: ["length": .number(5), "resolution": .string("480p")])
    }

    func testAVideoIsMadeAndDownloaded() async throws {
        let id = try await adapter.submit(request("pollo/pixverse/pixverse-v4-5"))
        let checked = request()
        guard case .succeeded(let outputs) = try await finish(adapter, id, checked).state else { return XCTFail() }
        XCTAssertEqual(checked.charges.reported, ProviderCharge(credits: 10), "the task's credit, from its status")
        XCTAssertEqual(outputs.map(\.contentType), ["video/mp4"])
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("gg-pollo-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        _ = try await adapter.download(outputs[0], to: file)
        XCTAssertEqual(String(decoding: try Data(contentsOf: file)[4..<8], as: UTF8.self), "ftyp")
    }

    func testRefusalsAndFailures() async throws {
        try sim.set(["p_balance": 1])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .quotaExceeded)
        }
        try sim.set(["p_balance": 0, "p_policy": 1])
        let refused = try await adapter.submit(request())
        guard case .failed(let policy) = try await finish(adapter, refused, request()).state else { return XCTFail() }
        XCTAssertEqual(policy.code, .contentPolicy)
        try sim.set(["p_policy": 0, "p_empty": 1])
        let empty = try await adapter.submit(request())
        guard case .failed(let nothing) = try await finish(adapter, empty, request()).state else { return XCTFail() }
        XCTAssertTrue(nothing.retryable)
        let stranger = PolloAdapter(key: "wrong", endpoint: ProviderEndpoint(baseURL: sim.baseURL + "/api/platform"))
        await assertThrows(try await stranger.submit(request())) { error in
            XCTAssertEqual(error.code, .authenticationFailed)
        }
        await stranger.shutdown()
        XCTAssertThrowsError(try PolloAdapter.path(of: "pollo/../x"))
        XCTAssertEqual(try PolloAdapter.path(of: "pollo/pollo-v1-6"), "pollo/pollo-v1-6")
        XCTAssertEqual(try PolloAdapter.path(of: "pollo/minimax/minimax-hailuo-02"), "minimax/minimax-hailuo-02")
    }
}
