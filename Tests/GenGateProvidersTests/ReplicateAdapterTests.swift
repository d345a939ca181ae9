import Foundation
import GenGateCore
@testable import GenGateProviderSim
@testable import GenGateProviders
import Hummingbird
import Logging
import NIOCore
import XCTest

/// The Replicate adapter against the Replicate simulator: every outcome the engine must tell apart.
final class ReplicateAdapterTests: XCTestCase {
    var sim: RunningSimulator!
    var adapter: ReplicateAdapter!

    override func setUp() async throws {
        sim = try await RunningSimulator.start(
            "replicate", key: "r8_test", knobs: try SimKnobs().applying(.object(["task_seconds": .number(0.3)])))
        adapter = ReplicateAdapter(
            token: "r8_test", endpoint: ProviderEndpoint(baseURL: sim.baseURL, requestTimeoutSeconds: 2))
    }

    override func tearDown() async throws {
        await adapter?.http.shutdown()
        sim?.stop()
    }

    func request(_ model: String = "replicate/black-forest-labs/flux-schnell", reference: String = "gen_1-a1")
        -> ProviderRequest
    {
        ProviderRequest(
            generationID: "gen_1", clientReference: reference, model: model, prompt: "a lighthouse", outputIndexes: [2],
            seed: 7, width: nil, height: nil, params: ["output_format": .string("png")])
    }

    /// Polls until the task ends, as the engine's checks do.
    func testASubmissionRunsToOutputsThatDownloadAsPNG() async throws {
        try sim.set(["task_seconds": 1])  // time for the first check to find it at work
        let request = request()
        let id = try await adapter.submit(request)
        let first = try await adapter.status(taskID: id, request: request)
        XCTAssertTrue([.queued, .running(progress: nil)].contains(first), "\(first)")
        guard case .succeeded(let outputs) = try await finish(adapter, id, request).state else {
            return XCTFail("not succeeded")
        }
        XCTAssertEqual(outputs.map(\.index), [2], "outputs carry the generation's own indexes")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("gg-replicate-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        let contentType = try await adapter.download(outputs[0], to: file)
        XCTAssertEqual(contentType, "image/png")
        XCTAssertEqual(try Data(contentsOf: file).prefix(4), Data([0x89, 0x50, 0x4E, 0x47]))
        let stats = sim.simulator.stats
        XCTAssertEqual(stats.submissions, 1)
        XCTAssertEqual(stats.duplicateSubmissions, 0)
    }

    func testAnImageGoesInTheModelsOwnFieldAsADataURL() async throws {
        let png = PNGImage.encodeRGB(width: 4, height: 4, pixels: Array(repeating: 60, count: 48))
        var video = request("replicate/minimax/video-01")
        video.images = [
            ProviderImage(
                delivery: .dataURL, contentType: "image/png", text: "data:image/png;base64,\(png.base64EncodedString())"
            )
        ]
        let id = try await adapter.submit(video)
        guard case .succeeded = try await finish(adapter, id, video).state else { return XCTFail("not succeeded") }
        XCTAssertEqual(sim.simulator.stats.receivedImages.map(\.field), ["first_frame_image"])
        XCTAssertEqual(sim.simulator.stats.receivedImages.first?.form, "data_url")
        XCTAssertEqual(sim.simulator.stats.receivedImages.first?.sha256, Digest.sha256Hex(png))
        let intake = ReplicateAdapter.defaultModels.first { $0.id == "replicate/minimax/video-01" }?.images
        XCTAssertEqual(intake?.inlineLimitBytes, 256 * 1_024, "larger images go as URLs")
    }

    func testAVideoModelMakesOneMP4() async throws {
        let request = request("replicate/minimax/video-01")
        let id = try await adapter.submit(request)
        guard case .succeeded(let outputs) = try await finish(adapter, id, request).state else {
            return XCTFail("not succeeded")
        }
        XCTAssertEqual(outputs.map(\.contentType), ["video/mp4"])
        let (data, type) = try await adapter.fetch(outputs[0])
        XCTAssertEqual(type, "video/mp4")
        XCTAssertEqual(String(decoding: data[4..<8], as: UTF8.self), "ftyp")
    }

    func testRateLimitsCarryRetryAfterAndServerErrorsAreRetryable() async throws {
        try sim.set(["p_429": 1, "retry_after_s": 7])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .rateLimited)
            XCTAssertEqual(error.retryAfter, 7)
            XCTAssertTrue(error.retryable)
        }
        try sim.set(["p_429": 0, "p_5xx": 1])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .providerUnavailable)
            XCTAssertTrue(error.retryable)
        }
        XCTAssertEqual(sim.simulator.stats.submissions, 0, "refused calls are not submissions")
    }

    func testBalanceAuthAndInvalidInputAreNotRetried() async throws {
        try sim.set(["p_balance": 1])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .quotaExceeded)
            XCTAssertFalse(error.retryable)
            XCTAssertTrue(error.message.contains("Billing required"), error.message)
        }
        try sim.set(["p_balance": 0])
        let stranger = ReplicateAdapter(token: "r8_wrong", endpoint: ProviderEndpoint(baseURL: sim.baseURL))
        await assertThrows(try await stranger.submit(request())) { error in
            XCTAssertEqual(error.code, .authenticationFailed)
            XCTAssertFalse(error.message.contains("r8_wrong"), "the token never reaches an error")
        }
        await stranger.http.shutdown()
        await assertThrows(try await adapter.submit(request("replicate/not a model"))) { error in
            XCTAssertEqual(error.code, .invalidRequest)
        }
        var empty = request()
        empty.prompt = ""
        await assertThrows(try await adapter.submit(empty)) { error in
            XCTAssertEqual(error.code, .invalidRequest, "422 from the API")
            XCTAssertTrue(error.message.contains("prompt"), error.message)
        }
    }

    func testAContentPolicyRefusalAndAnEmptySuccessAreToldApart() async throws {
        try sim.set(["p_policy": 1])
        let refused = try await adapter.submit(request())
        guard case .failed(let policy) = try await finish(adapter, refused, request()).state else { return XCTFail() }
        XCTAssertEqual(policy.code, .contentPolicy)
        XCTAssertFalse(policy.retryable)

        try sim.set(["p_policy": 0, "p_empty": 1])
        let empty = try await adapter.submit(request())
        guard case .failed(let nothing) = try await finish(adapter, empty, request()).state else { return XCTFail() }
        XCTAssertEqual(nothing.code, .providerError, "a success without outputs is never a completed job")
        XCTAssertTrue(nothing.retryable)
    }

    func testMalformedDroppedAndHungAnswersAreRetryableFailures() async throws {
        for (knob, code) in [("p_malformed", ErrorCode.providerError), ("p_reset", .providerUnavailable)] {
            try sim.set([knob: 1])
            await assertThrows(try await adapter.submit(request())) { error in
                XCTAssertEqual(error.code, code, knob)
                XCTAssertTrue(error.retryable, knob)
            }
            try sim.set([knob: 0])
        }
        try sim.set(["p_timeout": 1])
        let started = ContinuousClock.now
        await assertThrows(try await adapter.status(taskID: "x", request: request())) { error in
            XCTAssertEqual(error.code, .providerTimeout)
        }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(5), "the request timeout holds")
    }

    /// The prediction is created and its answer lost: the adapter cannot tell, and says so in a
    /// way the engine counts as a possible double charge.
    func testALostAnswerToACreatedPredictionIsAnUnknownOutcome() async throws {
        try sim.set(["p_lost_answer": 1])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .providerUnavailable, "no answer: the engine counts it as possibly paid")
        }
        XCTAssertEqual(sim.simulator.stats.submissions, 1)
        XCTAssertEqual(sim.simulator.stats.lostAnswers, 1)
    }

    func testCancelStopsARunningPrediction() async throws {
        try sim.set(["task_seconds": 30])
        let id = try await adapter.submit(request())
        try await adapter.cancel(taskID: id)
        let state = try await adapter.status(taskID: id, request: request())
        XCTAssertEqual(state, .cancelled)
        XCTAssertEqual(sim.simulator.stats.cancels, 1)
        await assertThrows(try await adapter.cancel(taskID: "nope")) { error in
            XCTAssertEqual(error.code, .invalidRequest)
        }
    }

    /// The job's deadline rides along as `Cancel-After`: a prediction nobody follows any more
    /// stops by itself then, uncounted as a cancel of ours.
    func testAPredictionStopsByItselfAtTheJobsDeadline() async throws {
        try sim.set(["task_seconds": 60])
        var timed = request()
        timed.deadline = Date().addingTimeInterval(1)
        XCTAssertEqual(ReplicateAdapter.cancelAfter(timed.deadline), "5s", "Replicate's least")
        XCTAssertEqual(ReplicateAdapter.cancelAfter(Date().addingTimeInterval(599.2)), "600s")
        XCTAssertNil(ReplicateAdapter.cancelAfter(nil))
        let id = try await adapter.submit(timed)
        try await Task.sleep(for: .milliseconds(5_300))
        let state = try await adapter.status(taskID: id, request: timed)
        XCTAssertEqual(state, .cancelled)
        XCTAssertEqual(sim.simulator.stats.cancels, 0)
        XCTAssertEqual(ReplicateAPI.duration("1h30m45s"), 5_445)
        XCTAssertEqual(ReplicateAPI.duration("30"), 30)
        XCTAssertNil(ReplicateAPI.duration("5x"))
    }

    func testASecondSubmissionOfOneAttemptIsCountedAsADuplicate() async throws {
        _ = try await adapter.submit(request(reference: "gen_9-a1"))
        _ = try await adapter.submit(request(reference: "gen_9-a1"))
        _ = try await adapter.submit(request(reference: "gen_9-a2"))
        XCTAssertEqual(sim.simulator.stats.duplicateSubmissions, 1)
    }

    func testModelNamesAndVersions() throws {
        XCTAssertEqual(
            try ReplicateAdapter.target(of: "replicate/black-forest-labs/flux-schnell"),
            .model(owner: "black-forest-labs", name: "flux-schnell"))
        let version = String(repeating: "a1", count: 32)
        XCTAssertEqual(
            try ReplicateAdapter.target(of: "replicate/owner/model:\(version)"), .version("owner/model:\(version)"))
        XCTAssertThrowsError(try ReplicateAdapter.target(of: "replicate/owner/model:short"))
        XCTAssertThrowsError(try ReplicateAdapter.target(of: "replicate/../x"))
    }

    func testCancellingAFinishedPredictionSaysItWasAlreadyPaid() async throws {
        let id = try await adapter.submit(request())
        _ = try await finish(adapter, id, request()).state
        do {
            try await adapter.cancel(taskID: id)
            XCTFail("a finished prediction cannot be cancelled")
        } catch let ended as TaskAlreadyEnded {
            XCTAssertEqual(ended.status, "succeeded")
        }
    }

    /// n outputs are n predictions: each its own seed, none asking for more than one image.
    func testEachPredictionHasItsOwnSeedAndMakesOneImage() async throws {
        var second = request()
        second.outputIndexes = [3]
        second.params["num_outputs"] = .number(4)
        let id = try await adapter.submit(second)
        let answer = try await adapter.http.send(.GET, "/v1/predictions/\(id)", headers: adapter.authorization)
        XCTAssertEqual(answer.json?["input"]?["seed"]?.intValue, 10, "seed 7 + output index 3")
        XCTAssertNil(answer.json?["input"]?["num_outputs"])
    }

    func testTheTokenGoesOnlyToReplicatesOwnHosts() {
        XCTAssertFalse(adapter.credentials(for: "https://replicate.delivery/xezq/out-0.webp").isEmpty)
        XCTAssertFalse(adapter.credentials(for: "https://pbxt.replicate.delivery/a.png").isEmpty)
        XCTAssertFalse(adapter.credentials(for: sim.baseURL + "/_sim/files/x/0.png").isEmpty, "the simulator, locally")
        XCTAssertTrue(adapter.credentials(for: "https://example.com/a.png").isEmpty)
        XCTAssertTrue(adapter.credentials(for: "http://replicate.delivery/a.png").isEmpty, "never in clear text")
        XCTAssertTrue(adapter.credentials(for: "https://replicate.delivery.evil.com/a.png").isEmpty)
    }

    func testABaseURLWithTheVersionPathStillWorks() async throws {
        let copied = ReplicateAdapter(token: "r8_test", endpoint: ProviderEndpoint(baseURL: sim.baseURL + "/v1/"))
        _ = try await copied.submit(request())
        await copied.shutdown()
    }

    /// AsyncHTTPClient refuses a header value with a line break and quotes it in its error; the
    /// error GenGate keeps must not.
    func testAMalformedKeyNeverReachesAnError() async throws {
        let broken = ReplicateAdapter(token: "r8_secret\nvalue", endpoint: ProviderEndpoint(baseURL: sim.baseURL))
        await assertThrows(try await broken.submit(request())) { error in
            XCTAssertFalse(error.message.contains("r8_secret"), error.message)
        }
        await broken.shutdown()
    }
}
