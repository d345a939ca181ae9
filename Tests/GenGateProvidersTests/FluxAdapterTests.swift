import Foundation
import GenGateCore
import GenGateProviderSim
import XCTest

@testable import GenGateProviders

/// The Flux adapter against the Flux simulator.
final class FluxAdapterTests: XCTestCase {
    var sim: RunningSimulator!
    var adapter: FluxAdapter!

    override func setUp() async throws {
        sim = try await RunningSimulator.start(
            "flux", key: "bfl_test", knobs: try SimKnobs().applying(.object(["task_seconds": .number(0.3)])))
        adapter = FluxAdapter(
            key: "bfl_test", endpoint: ProviderEndpoint(baseURL: sim.baseURL, requestTimeoutSeconds: 2))
    }

    override func tearDown() async throws {
        await adapter?.http.shutdown()
        sim?.stop()
    }

    func request(width: Int? = 1024, prompt: String = "a lighthouse") -> ProviderRequest {
        ProviderRequest(
            generationID: "gen_1", clientReference: "gen_1-a1", model: "flux/flux-pro-1.1", prompt: prompt,
            outputIndexes: [1], seed: 3, width: width, height: 768, params: ["output_format": .string("png")])
    }

    func testKontextTakesItsImagesAsRawBase64InTheirFields() async throws {
        let png = PNGImage.encodeRGB(width: 4, height: 4, pixels: Array(repeating: 90, count: 48))
        var edit = request()
        edit.model = "flux/flux-kontext-pro"
        edit.images = [
            ProviderImage(delivery: .base64, contentType: "image/png", text: png.base64EncodedString()),
            ProviderImage(delivery: .base64, contentType: "image/png", text: png.base64EncodedString()),
        ]
        let id = try await adapter.submit(edit)
        guard case .succeeded = try await finish(adapter, id, edit).state else { return XCTFail() }
        XCTAssertEqual(sim.simulator.stats.receivedImages.map(\.field), ["input_image", "input_image_2"])
        XCTAssertEqual(sim.simulator.stats.receivedImages.first?.sha256, Digest.sha256Hex(png))
        XCTAssertEqual(FluxAdapter.defaultModels.first { $0.id == "flux/flux-kontext-pro" }?.images?.maxImages, 4)
        XCTAssertNil(FluxAdapter.defaultModels.first { $0.id == "flux/flux-pro-1.1" }?.images)
        XCTAssertEqual(FluxAdapter.imageField(model: "flux-pro-1.1-ultra", index: 0), "image_prompt")
    }

    func testATaskIsPolledByItsURLToAnImage() async throws {
        let asked = request()
        let id = try await adapter.submit(asked)
        XCTAssertTrue(id.hasPrefix(sim.baseURL + "/v1/get_result?id="), "the polling URL is the task id: \(id)")
        XCTAssertEqual(asked.charges.reported, ProviderCharge(credits: 4), "the credits its answer says it took")
        let (state, sawProgress) = try await finish(adapter, id, request())
        XCTAssertTrue(sawProgress, "Pending carries progress")
        guard case .succeeded(let outputs) = state else { return XCTFail("\(state)") }
        XCTAssertEqual(outputs.map(\.index), [1])
        let (data, type) = try await adapter.fetch(outputs[0])
        XCTAssertEqual(type, "image/png")
        XCTAssertEqual(data.prefix(4), Data([0x89, 0x50, 0x4E, 0x47]))
    }

    func testAPollingURLOnAnotherHostIsNotFollowedWithTheKey() async throws {
        await assertThrows(
            try await adapter.status(taskID: "https://evil.example/v1/get_result?id=x", request: request())
        ) { error in
            XCTAssertEqual(error.code, .providerError)
            XCTAssertFalse(error.retryable)
        }
        XCTAssertEqual(sim.simulator.stats.statusCalls, 0)
    }

    func testRefusalsAreClassified() async throws {
        await assertThrows(try await adapter.submit(request(width: 1000))) { error in
            XCTAssertEqual(error.code, .invalidRequest)
            XCTAssertTrue(error.message.contains("multiple of 32"), error.message)
        }
        try sim.set(["p_429": 1, "retry_after_s": 3])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .rateLimited)
            XCTAssertEqual(error.retryAfter, 3)
        }
        try sim.set(["p_429": 0, "p_balance": 1])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .quotaExceeded)
        }
        try sim.set(["p_balance": 0])
        let stranger = FluxAdapter(key: "bfl_wrong", endpoint: ProviderEndpoint(baseURL: sim.baseURL))
        await assertThrows(try await stranger.submit(request())) { error in
            XCTAssertEqual(error.code, .authenticationFailed)
        }
        await stranger.http.shutdown()
        XCTAssertEqual(sim.simulator.stats.submissions, 0)
    }

    func testModerationEmptyResultsAndServerErrors() async throws {
        try sim.set(["p_policy": 1])
        let moderated = try await adapter.submit(request())
        guard case .failed(let policy) = try await finish(adapter, moderated, request()).state else { return XCTFail() }
        XCTAssertEqual(policy.code, .contentPolicy)

        try sim.set(["p_policy": 0, "p_empty": 1])
        let empty = try await adapter.submit(request())
        guard case .failed(let nothing) = try await finish(adapter, empty, request()).state else { return XCTFail() }
        XCTAssertEqual(nothing.code, .providerError)
        XCTAssertTrue(nothing.retryable)

        try sim.set(["p_empty": 0, "p_5xx": 1])
        await assertThrows(try await adapter.status(taskID: empty, request: request())) { error in
            XCTAssertEqual(error.code, .providerUnavailable)
        }
        try sim.set(["p_5xx": 0])
        guard case .failed(let gone) = try await adapter.status(taskID: "unknown", request: request()) else {
            return XCTFail()
        }
        XCTAssertEqual(gone.code, .providerError, "Task not found: the attempt failed, worth another")
    }

    func testAnUnreadableStatusAnswerIsARetryableProviderError() async throws {
        let id = try await adapter.submit(request())
        try sim.set(["p_malformed": 1])
        await assertThrows(try await adapter.status(taskID: id, request: request())) { error in
            XCTAssertEqual(error.code, .providerError, "a 200 that cannot be read says nothing of the request")
            XCTAssertTrue(error.retryable)
        }
    }

    func testFluxCannotCancel() async throws {
        XCTAssertFalse(adapter.capabilities.cancel)
        await assertThrows(try await adapter.cancel(taskID: "x")) { error in
            XCTAssertFalse(error.retryable)
        }
    }

    /// BFL echoes the `webhook_secret` it was given in `X-Webhook-Secret`; nothing else passes.
    func testACallbackMustEchoTheSecret() async throws {
        try await adapter.verifyCallback(
            headers: ["x-webhook-secret": "s3cret"], body: Data(), secret: "s3cret", now: Date())
        for headers in [["x-webhook-secret": "s3creT"], ["x-webhook-secret": ""], [:]] {
            await assertThrows(
                try await adapter.verifyCallback(headers: headers, body: Data(), secret: "s3cret", now: Date())
            ) { error in
                XCTAssertEqual(error.code, .authenticationFailed)
            }
        }
    }
}
