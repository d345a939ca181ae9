import Foundation
import GenGateCore
import XCTest

/// Chains: an image job's output as a video job's input. The later job waits without holding
/// anything, starts when its input's job completes (also after everything was killed in
/// between), and fails without a provider call when that job fails or is cancelled. The Kling
/// simulator plays both: its image models make the image, its video models take it.
final class ChainTests: XCTestCase {
    typealias Sim = ProviderSimulatorTests.SimulatorProcess

    func startKling(taskSeconds: Double) async throws -> Sim {
        // Images of 320 px: above Kling's 300 px minimum for an input.
        try await Sim(
            provider: "kling", key: "ak_test:\(ProviderSimulatorTests.klingSecret)",
            knobs: #"{"task_seconds": \#(taskSeconds), "image_side": 320}"#)
    }

    func status(_ system: GenGateSystem, _ id: String) async throws -> JSONValue {
        try await system.request(.GET, "/v1/generations/\(id)").json
    }

    func waitFor(
        _ system: GenGateSystem, _ id: String, seconds: Double = 60,
        _ done: (JSONValue) -> Bool = {
            ["completed", "failed", "cancelled"].contains($0["status"]?.stringValue ?? "")
        }
    ) async throws -> JSONValue {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let job = try await status(system, id)
            if done(job) { return job }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw SystemError("\(id) did not get there within \(seconds) s: \(try await status(system, id))")
    }

    func submit(_ system: GenGateSystem, _ body: String) async throws -> GenGateSystem.Answer {
        try await system.request(.POST, "/v1/generations", body: body)
    }

    func testALaterStepWaitsStartsWhenItsInputIsThereAndFailsUnpaidWhenItsInputFails() async throws {
        let kling = try await startKling(taskSeconds: 2)
        defer { kling.stop() }
        let system = try await GenGateSystem.start(environment: kling.environment)
        defer { system.stop() }

        // A chain whose first step completes.
        let image = try await submit(system, #"{"model": "kling/image/kling-v2", "prompt": "a lighthouse"}"#)
        let parent = image.json["id"]?.stringValue ?? ""
        var answer = try await submit(
            system,
            #"{"model": "kling/kling-v1-6", "prompt": "waves", "images": [{"generation": "\#(parent)", "output": 0}]}"#)
        XCTAssertEqual(answer.status, 202, String(decoding: answer.body, as: UTF8.self))
        XCTAssertEqual(answer.json["status"]?.stringValue, "waiting")
        let child = answer.json["id"]?.stringValue ?? ""
        let waiting = try await status(system, child)
        XCTAssertEqual(waiting["status"]?.stringValue, "waiting")
        let done = try await waitFor(system, child)
        XCTAssertEqual(done["status"]?.stringValue, "completed", "\(done)")
        let made = try await status(system, parent)
        XCTAssertEqual(
            done["inputs"]?.arrayValue?.first?["original"]?["sha256"]?.stringValue,
            made["outputs"]?.arrayValue?.first?["sha256"]?.stringValue, "the input is the first step's output")
        XCTAssertEqual(done["inputs"]?.arrayValue?.first?["source"]?["generation"]?.stringValue, parent)
        let received = try await kling.stats()["received_images"]?.arrayValue ?? []
        XCTAssertEqual(received.last?["sha256"], done["inputs"]?.arrayValue?.first?["processed"]?["sha256"])

        // A chain whose first step is cancelled: the next fails, and Kling never hears of it.
        let second = try await submit(system, #"{"model": "kling/image/kling-v2", "prompt": "a harbour"}"#)
        let doomed = second.json["id"]?.stringValue ?? ""
        answer = try await submit(
            system,
            #"{"model": "kling/kling-v1-6", "prompt": "boats", "images": [{"generation": "\#(doomed)", "output": 0}]}"#)
        let orphan = answer.json["id"]?.stringValue ?? ""
        _ = try await waitFor(system, doomed, seconds: 20) { $0["status"]?.stringValue == "running" }
        let submissionsBefore = try await kling.stats()["submissions"]?.intValue ?? 0
        _ = try await system.request(.POST, "/v1/generations/\(doomed)/cancel")
        let failed = try await waitFor(system, orphan, seconds: 20)
        XCTAssertEqual(failed["status"]?.stringValue, "failed")
        XCTAssertEqual(failed["error"]?["code"]?.stringValue, "input_unavailable")
        XCTAssertTrue(failed["error"]?["message"]?.stringValue?.contains(doomed) ?? false, "\(failed)")
        XCTAssertEqual(failed["attempts"]?.intValue, 0)
        try await Task.sleep(for: .seconds(1))
        let submissionsAfter = try await kling.stats()["submissions"]?.intValue ?? 0
        XCTAssertEqual(submissionsAfter, submissionsBefore, "the failed chain's next step was never submitted")

        // A chain whose first step fails (the provider refuses its content): the next fails too.
        _ = try await GenGateSystem.rawRequest(
            .POST, kling.baseURL + "/_sim/config", body: Data(#"{"p_policy": 1}"#.utf8), key: nil)
        let refused = try await submit(system, #"{"model": "kling/image/kling-v2", "prompt": "a storm"}"#)
        let refusedID = refused.json["id"]?.stringValue ?? ""
        answer = try await submit(
            system,
            #"{"model": "kling/kling-v1-6", "prompt": "rain", "images": [{"generation": "\#(refusedID)", "output": 0}]}"#
        )
        let stranded = try await waitFor(system, answer.json["id"]?.stringValue ?? "", seconds: 30)
        XCTAssertEqual(stranded["error"]?["code"]?.stringValue, "input_unavailable", "\(stranded)")
        XCTAssertTrue(stranded["error"]?["message"]?.stringValue?.contains("content_policy") ?? false, "\(stranded)")
        _ = try await GenGateSystem.rawRequest(
            .POST, kling.baseURL + "/_sim/config", body: Data(#"{"p_policy": 0}"#.utf8), key: nil)

        // An input that will never be there is refused at once.
        answer = try await submit(
            system,
            #"{"model": "kling/kling-v1-6", "prompt": "x", "images": [{"generation": "\#(doomed)", "output": 0}]}"#)
        XCTAssertEqual(answer.status, 424)
        XCTAssertEqual(answer.json["error"]?["code"]?.stringValue, "input_unavailable")
        answer = try await submit(
            system,
            #"{"model": "kling/kling-v1-6", "prompt": "x", "images": [{"generation": "\#(parent)", "output": 3}]}"#)
        XCTAssertEqual(answer.json["error"]?["code"]?.stringValue, "invalid_image")
        XCTAssertTrue(answer.json["error"]?["message"]?.stringValue?.contains("no output 3") ?? false)
        answer = try await submit(
            system,
            #"{"model": "kling/kling-v1-6", "prompt": "x", "images": [{"generation": "\#(child)", "output": 0}]}"#)
        XCTAssertTrue(answer.json["error"]?["message"]?.stringValue?.contains("makes video") ?? false, "\(answer.json)")
    }

    func testABatchHoldsAWholeChainWhichSurvivesAKillOfEverything() async throws {
        let kling = try await startKling(taskSeconds: 4)
        defer { kling.stop() }
        var system = try await GenGateSystem.start(environment: kling.environment)
        defer { system.stop() }

        // Image → video for two prompts in one call, one job at a time: the chain's later steps
        // wait without taking the batch's room, then take their turn.
        var answer = try await system.request(
            .POST, "/v1/batches",
            body: """
                {"max_concurrency": 1, "requests": [
                  {"model": "kling/image/kling-v2", "prompt": "a fox"},
                  {"model": "kling/kling-v1-6", "prompt": "the fox runs", "images": [{"request": 0, "output": 0}]},
                  {"model": "kling/image/kling-v2", "prompt": "an owl"},
                  {"model": "kling/kling-v1-6", "prompt": "the owl flies", "images": [{"request": 2, "output": 0}]}
                ]}
                """)
        XCTAssertEqual(answer.status, 202, String(decoding: answer.body, as: UTF8.self))
        let batch = answer.json["id"]?.stringValue ?? ""
        XCTAssertEqual(answer.json["counts"]?["waiting"]?.intValue, 2)
        XCTAssertEqual(answer.json["counts"]?["queued"]?.intValue, 1)
        let listed = try await system.request(.GET, "/v1/batches/\(batch)").json
        let jobs = listed["jobs"]?.arrayValue?.compactMap { $0["id"]?.stringValue } ?? []
        XCTAssertEqual(
            listed["jobs"]?.arrayValue?.map { $0["status"]?.stringValue ?? "" }.filter { $0 == "waiting" }.count, 2)
        XCTAssertEqual(jobs.count, 4)
        // A forward reference is refused.
        let forward = try await system.request(
            .POST, "/v1/batches",
            body: """
                {"requests": [{"model": "kling/kling-v1-6", "prompt": "x", "images": [{"request": 1, "output": 0}]},
                              {"model": "kling/image/kling-v2", "prompt": "y"}]}
                """)
        XCTAssertEqual(forward.status, 400)
        XCTAssertEqual(
            forward.json["error"]?["details"]?.arrayValue?.first?["path"]?.stringValue, "requests[0].images[0]")

        // Everything killed while the first image is being made; started again on the same data.
        _ = try await waitFor(system, jobs[0], seconds: 30) { $0["status"]?.stringValue == "running" }
        system.killEverything()
        system = try await GenGateSystem.start(environment: kling.environment, dataDir: system.dataDir)

        let deadline = Date().addingTimeInterval(120)
        var view = JSONValue.null
        while Date() < deadline {
            view = try await system.request(.GET, "/v1/batches/\(batch)").json
            if view["status"]?.stringValue != "processing" { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        XCTAssertEqual(view["status"]?.stringValue, "completed", "\(view)")
        XCTAssertEqual(view["counts"]?["completed"]?.intValue, 4)
        for (video, image) in [(jobs[1], jobs[0]), (jobs[3], jobs[2])] {
            let job = try await status(system, video)
            let made = try await status(system, image)
            XCTAssertEqual(
                job["inputs"]?.arrayValue?.first?["original"]?["sha256"]?.stringValue,
                made["outputs"]?.arrayValue?.first?["sha256"]?.stringValue)
        }
        let stats = try await kling.stats()
        XCTAssertEqual(stats["duplicate_submissions"]?.intValue, 0, "\(stats)")
        // A chain's later step, once its input is there, waits its turn too: one task at a time.
        XCTAssertEqual(stats["peak_active"]?.intValue, 1, "\(stats)")
    }
}
