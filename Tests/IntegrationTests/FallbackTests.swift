import Foundation
import GenGateCore
import XCTest

/// Fallback aliases, Cancel-After and per-model deadlines through the whole stack.
final class FallbackTests: XCTestCase {
    typealias Sim = ProviderSimulatorTests.SimulatorProcess

    /// An alias over Flux then Replicate, three images (Flux makes one a task). Flux makes the
    /// first, then fails every call: the job moves to Replicate, which is asked only for the
    /// images still missing; the job ends with exactly three, each saying who made it.
    func testAJobFallsBackMidwayAndAsksTheFallbackOnlyForWhatIsMissing() async throws {
        let flux = try await Sim(provider: "flux", key: "bfl_test", knobs: #"{"task_seconds": 0.3}"#)
        defer { flux.stop() }
        let replicate = try await Sim(provider: "replicate", key: "r8_test", knobs: #"{"task_seconds": 0.3}"#)
        defer { replicate.stop() }
        let system = try await GenGateSystem.start(
            environment: flux.environment.merging(replicate.environment) { $1 },
            config:
                #"{"model_aliases": {"image-default": ["flux/flux-pro-1.1", "replicate/black-forest-labs/flux-1.1-pro"]}}"#
        )
        defer { system.stop() }

        let models = try await system.request(.GET, "/v1/models").json
        guard case .array(let list)? = models["data"] else { return XCTFail("\(models)") }
        let alias = list.first { $0["id"]?.stringValue == "image-default" }
        XCTAssertEqual(alias?["available"], .bool(true))
        XCTAssertEqual(alias?["kind"]?.stringValue, "image")

        let id = try await system.submit(#"{"model": "image-default", "prompt": "a harbour", "n": 3}"#)
        _ = try await system.waitFor(id) { ($0["outputs"]?.arrayValue?.count ?? 0) >= 1 }
        _ = try await GenGateSystem.rawRequest(
            .POST, flux.baseURL + "/_sim/config", body: Data(#"{"p_5xx": 1}"#.utf8), key: nil)
        let done = try await system.waitForStatus(id, "completed")

        XCTAssertEqual(done["model"]?.stringValue, "image-default")
        XCTAssertEqual(
            done["route"], .array([.string("flux/flux-pro-1.1"), .string("replicate/black-forest-labs/flux-1.1-pro")]))
        let outputs = try XCTUnwrap(done["outputs"]?.arrayValue)
        XCTAssertEqual(outputs.map { $0["index"]?.intValue }, [0, 1, 2], "exactly n outputs")
        let makers = outputs.map { $0["provider"]?.stringValue ?? "?" }
        XCTAssertEqual(makers.first, "flux")
        XCTAssertTrue(makers.contains("replicate"), "\(makers)")
        XCTAssertEqual(outputs.first?["model"]?.stringValue, "flux/flux-pro-1.1")
        for output in outputs {
            let bytes = try await system.request(
                .GET, "/v1/generations/\(id)/outputs/\(output["index"]?.intValue ?? -1)")
            XCTAssertEqual(bytes.status, 200)
        }
        // Replicate made exactly the outputs Flux did not: one submission each, none twice.
        let replicateStats = try await replicate.stats()
        XCTAssertEqual(
            replicateStats["submissions"]?.intValue, makers.filter { $0 == "replicate" }.count, "\(replicateStats)")
        XCTAssertEqual(replicateStats["duplicate_submissions"]?.intValue, 0)
        let metrics = try await system.metrics(containing: "gengate_generation_fallbacks_total{")
        XCTAssertTrue(
            metrics.contains(
                #"gengate_generation_fallbacks_total{from="flux/flux-pro-1.1",to="replicate/black-forest-labs/flux-1.1-pro"}"#
            ),
            metrics)
        let history = try XCTUnwrap(done["attempt_history"]?.arrayValue)
        XCTAssertTrue(
            history.contains { $0["provider"]?.stringValue == "flux" && $0["state"]?.stringValue == "failed" },
            "\(history)")
    }

    /// `Cancel-After` cancels a job still unfinished after it, with reason `deadline`, and stops
    /// its provider task; a client's cancel says `client`; a malformed one is refused.
    func testCancelAfterCancelsAnUnfinishedJobWithItsOwnReason() async throws {
        let system = try await GenGateSystem.start(environment: ["GENGATE_SIM_LATENCY_MS": "60000"])
        defer { system.stop() }
        let answer = try await system.request(
            .POST, "/v1/generations", body: #"{"model": "sim/image", "prompt": "too slow"}"#,
            headers: [("Cancel-After", "2s")])
        XCTAssertEqual(answer.status, 202)
        let id = try XCTUnwrap(answer.json["id"]?.stringValue)
        let shown = try await system.request(.GET, "/v1/generations/\(id)").json
        XCTAssertNotNil(shown["cancel_at"]?.stringValue)
        XCTAssertEqual(shown["deadline_at"], shown["cancel_at"], "the Cancel-After comes before the deadline")
        _ = try await system.waitForStatus(id, "running")
        let cancelled = try await system.waitForStatus(id, "cancelled", timeout: .seconds(10))
        XCTAssertEqual(cancelled["error"]?["code"]?.stringValue, "cancelled")
        XCTAssertEqual(cancelled["error"]?["reason"]?.stringValue, "deadline")
        let history = try XCTUnwrap(cancelled["attempt_history"]?.arrayValue)
        // The sweep (every second) stops the task of the ended job.
        var closed: [JSONValue]?
        let swept = ContinuousClock.now + .seconds(10)
        repeat {
            try await Task.sleep(for: .milliseconds(200))
            closed = try await system.request(.GET, "/v1/generations/\(id)").json["attempt_history"]?.arrayValue
        } while closed?.first?["state"]?.stringValue == "submitted" && ContinuousClock.now < swept
        XCTAssertEqual(history.count, 1)
        XCTAssertNotEqual(
            closed?.first?["state"]?.stringValue, "submitted", "the provider task was stopped: \(closed ?? [])")

        let other = try await system.submit(#"{"model": "sim/image", "prompt": "cancelled by hand"}"#)
        _ = try await system.request(.POST, "/v1/generations/\(other)/cancel")
        let byClient = try await system.waitForStatus(other, "cancelled")
        XCTAssertEqual(byClient["error"]?["reason"]?.stringValue, "client")

        for bad in ["soon", "-5s", "0", "3x", "1m1h", String(repeating: "9", count: 40)] {
            let refused = try await system.request(
                .POST, "/v1/generations", body: #"{"model": "sim/image", "prompt": "x"}"#,
                headers: [("Cancel-After", bad)])
            XCTAssertEqual(refused.status, 400, bad)
            XCTAssertEqual(refused.json["error"]?["code"]?.stringValue, "invalid_request", bad)
        }
    }

    /// A video job's deadline is an hour, others' the default half hour, unless the request says.
    func testDeadlinesFollowTheKindOfModel() async throws {
        let system = try await GenGateSystem.start()
        defer { system.stop() }
        for (model, seconds) in [("sim/video", 3_600.0), ("sim/text", 1_800), ("sim/image", 1_800)] {
            let id = try await system.submit(#"{"model": "\#(model)", "prompt": "how long"}"#)
            let job = try await system.request(.GET, "/v1/generations/\(id)").json
            let created = try XCTUnwrap(job["created_at"]?.stringValue.flatMap(Timestamp.parse))
            let deadline = try XCTUnwrap(job["deadline_at"]?.stringValue.flatMap(Timestamp.parse))
            XCTAssertEqual(deadline.timeIntervalSince(created), seconds, accuracy: 1, model)
        }
    }
}

/// A provider that stops answering: its circuit opens after a few submissions, and from then on
/// its alias's jobs go straight to the fallback without waiting out a timeout each.
final class CircuitFallbackTests: XCTestCase {
    typealias Sim = ProviderSimulatorTests.SimulatorProcess

    func testAProviderWhoseCircuitIsOpenSendsItsTrafficToTheFallbackAtOnce() async throws {
        let flux = try await Sim(provider: "flux", key: "bfl_test", knobs: #"{"task_seconds": 0.3, "p_timeout": 1}"#)
        defer { flux.stop() }
        let replicate = try await Sim(provider: "replicate", key: "r8_test", knobs: #"{"task_seconds": 0.3}"#)
        defer { replicate.stop() }
        let system = try await GenGateSystem.start(
            environment: flux.environment.merging(replicate.environment) { $1 },
            config:
                #"{"model_aliases": {"image-default": ["flux/flux-pro-1.1", "replicate/black-forest-labs/flux-schnell"]}, "providers": {"flux": {"request_timeout_seconds": 1}}, "jobs": {"circuit_threshold": 3, "circuit_cool_down_seconds": 60}}"#
        )
        defer { system.stop() }

        // Three jobs each wait out Flux's timeout, then fall back: the circuit opens.
        for index in 0..<3 {
            let id = try await system.submit(#"{"model": "image-default", "prompt": "before \#(index)"}"#)
            let done = try await system.waitForStatus(id, "completed")
            let providers = done["attempt_history"]?.arrayValue?.compactMap { $0["provider"]?.stringValue }
            XCTAssertEqual(providers, ["flux", "replicate"])
        }
        _ = try await system.metrics(containing: #"gengate_provider_circuit_opened_total{provider="flux"}"#)
        // From now on: straight to Replicate, no timeout waited.
        for index in 0..<5 {
            let started = ContinuousClock.now
            let id = try await system.submit(#"{"model": "image-default", "prompt": "after \#(index)"}"#)
            let done = try await system.waitForStatus(id, "completed")
            let took = ContinuousClock.now - started
            let providers = done["attempt_history"]?.arrayValue?.compactMap { $0["provider"]?.stringValue }
            XCTAssertEqual(providers, ["replicate"], "no attempt on the provider that is down")
            XCTAssertEqual(done["outputs"]?.arrayValue?.first?["provider"]?.stringValue, "replicate")
            XCTAssertLessThan(took, .seconds(5), "sent to the fallback within seconds")
        }
    }
}
