import Foundation
import GenGateCore
@testable import GenGateProviderSim
import XCTest

@testable import GenGateProviders

/// The DashScope adapter against the DashScope simulator.
final class DashScopeAdapterTests: XCTestCase {
    var sim: RunningSimulator!
    var adapter: DashScopeAdapter!

    override func setUp() async throws {
        sim = try await RunningSimulator.start(
            "dashscope", key: "sk-test", knobs: try SimKnobs().applying(.object(["task_seconds": .number(0.4)])))
        adapter = DashScopeAdapter(
            key: "sk-test", endpoint: ProviderEndpoint(baseURL: sim.baseURL + "/api/v1", requestTimeoutSeconds: 2))
    }

    override func tearDown() async throws {
        await adapter?.http.shutdown()
        sim?.stop()
    }

    func request(indexes: [Int] = [0, 1], width: Int? = 1024) -> ProviderRequest {
        ProviderRequest(
            generationID: "gen_1", clientReference: "gen_1-a1", model: "dashscope/wanx2.1-t2i-turbo",
            prompt: "a lighthouse", outputIndexes: indexes, seed: 5, width: width, height: 1024,
            params: ["negative_prompt": .string("fog"), "watermark": .bool(false)])
    }

    func testTwoImagesInOneTask() async throws {
        let id = try await adapter.submit(request())
        guard case .succeeded(let outputs) = try await finish(adapter, id, request()).state else { return XCTFail() }
        XCTAssertEqual(outputs.map(\.index), [0, 1])
        let (data, _) = try await adapter.fetch(outputs[1])
        XCTAssertEqual(data.prefix(4), Data([0x89, 0x50, 0x4E, 0x47]))
    }

    func testImageToVideoTakesTheFirstFrameByURL() async throws {
        // An image the simulator made is the frame: a URL it can fetch.
        let id = try await adapter.submit(request(indexes: [0]))
        guard case .succeeded(let images) = try await finish(adapter, id, request(indexes: [0])).state else {
            return XCTFail()
        }
        var video = request(indexes: [0], width: nil)
        video.model = "dashscope/wan2.2-i2v-plus"
        video.params = ["resolution": .string("480P")]
        video.images = [ProviderImage(delivery: .url, contentType: "image/png", text: images[0].source)]
        let task = try await adapter.submit(video)
        guard case .succeeded(let outputs) = try await finish(adapter, task, video).state else { return XCTFail() }
        XCTAssertEqual(outputs.map(\.contentType), ["video/mp4"])
        XCTAssertEqual(sim.simulator.stats.receivedImages.map(\.field), ["img_url"])
        XCTAssertEqual(sim.simulator.stats.receivedImages.first?.form, "url")
        XCTAssertEqual(sim.simulator.tasks { $0.id == task }.first?.input["parameters"]?["n"], nil, "video takes no n")
        // Without a frame the service refuses it.
        var bare = video
        bare.images = []
        do {
            _ = try await adapter.submit(bare)
            XCTFail("a video without a frame was taken")
        } catch let error as GenGateError {
            XCTAssertEqual(error.code, .invalidRequest)
        }
    }

    func testCancelWhilePendingAndAfter() async throws {
        try sim.set(["task_seconds": 60, "queue_seconds": 10])
        let id = try await adapter.submit(request())
        try await adapter.cancel(taskID: id)
        let state = try await adapter.status(taskID: id, request: request())
        XCTAssertEqual(state, .cancelled)
        try sim.set(["queue_seconds": 0])  // running at once: the service refuses
        let running = try await adapter.submit(request())
        do {
            try await adapter.cancel(taskID: running)
            XCTFail("a running task cannot be cancelled")
        } catch is TaskAlreadyEnded {
        }
    }

    func testErrorsByDashScopeCode() async throws {
        await assertThrows(try await adapter.submit(request(width: 100))) { error in
            XCTAssertEqual(error.code, .invalidRequest)
            XCTAssertTrue(error.message.contains("InvalidParameter"), error.message)
        }
        try sim.set(["p_balance": 1])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .quotaExceeded, "Arrearage is a 400 that means no balance")
        }
        try sim.set(["p_balance": 0, "p_429": 1])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .rateLimited)
            XCTAssertNil(error.retryAfter, "DashScope sends none; the engine backs off")
        }
        try sim.set(["p_429": 0])
        let stranger = DashScopeAdapter(key: "sk-wrong", endpoint: ProviderEndpoint(baseURL: sim.baseURL + "/api/v1"))
        await assertThrows(try await stranger.submit(request())) { error in
            XCTAssertEqual(error.code, .authenticationFailed)
        }
        await stranger.http.shutdown()
        try sim.set(["p_policy": 1])
        let refused = try await adapter.submit(request())
        guard case .failed(let policy) = try await finish(adapter, refused, request()).state else { return XCTFail() }
        XCTAssertEqual(policy.code, .contentPolicy)
        guard case .failed(let unknown) = try await adapter.status(taskID: "nope", request: request()) else {
            return XCTFail()
        }
        XCTAssertEqual(unknown.code, .providerError, "UNKNOWN: gone or expired, worth another attempt")
    }

    func testAPartialSuccessDeliversWhatItHas() {
        let output: JSONValue = .object([
            "task_status": .string("SUCCEEDED"),
            "results": .array([
                .object(["url": .string("https://example.com/a.png")]),
                .object(["code": .string("InternalError"), "message": .string("one image failed")]),
            ]),
        ])
        XCTAssertEqual(
            DashScopeAdapter.state(of: output, request: request()),
            .succeeded(outputs: [Output(index: 0, source: "https://example.com/a.png", contentType: "image/png")]))
    }
}
