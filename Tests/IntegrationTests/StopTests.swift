import Foundation
import GenGateCore
import GenGateStore
import XCTest

/// Stopping never costs a lost job or an unnoticed double charge: a whole system is stopped or
/// killed at each step of a submission (and of a check, and of an upload) by fail points, with a
/// provider that takes its time to answer and keeps a ledger of what it received.
final class StopTests: XCTestCase {
    func environment(
        _ ledger: URL, failPoint: String? = nil, findsByReference: Bool = false,
        extra: [String: String] = [:]
    ) -> [String: String] {
        var environment = [
            "GENGATE_SIM_LATENCY_MS": "200", "GENGATE_SIM_SUBMIT_LATENCY_MS": "300", "GENGATE_SIM_LEDGER": ledger.path,
            "GENGATE_SIM_FINDS_BY_REFERENCE": findsByReference ? "true" : "false",
            "GENGATE_SWEEP_INTERVAL_SECONDS": "0.2", "GENGATE_STALE_AFTER_SECONDS": "0.5",
        ]
        if let failPoint { environment["GENGATE_FAILPOINTS"] = failPoint }
        return environment.merging(extra) { $1 }
    }

    struct Outcome {
        var submissions: Int
        var attempts: [Attempt.State]
        var doubleCharges: Int
    }

    /// Runs one job through a system armed with `failPoint` and says what the provider saw.
    func run(failPoint: String, findsByReference: Bool) async throws -> Outcome {
        let ledger = URL(fileURLWithPath: "/tmp/ggl-\(UUID().uuidString.prefix(8)).ledger")
        defer { try? FileManager.default.removeItem(at: ledger) }
        let system = try await GenGateSystem.start(
            environment: environment(ledger, failPoint: failPoint, findsByReference: findsByReference))
        defer { system.stop() }
        let id = try await system.submit(#"{"model": "sim/image", "prompt": "stopped at \#(failPoint)", "n": 2}"#)
        let done = try await system.waitForStatus(id, "completed", timeout: .seconds(30))
        guard case .array(let outputs)? = done["outputs"], outputs.count == 2 else {
            XCTFail("\(failPoint): \(done)")
            return Outcome(submissions: -1, attempts: [], doubleCharges: -1)
        }
        XCTAssertTrue(
            try String(contentsOf: system.logFile, encoding: .utf8).contains(
                "fail point \(failPoint.split(separator: "=")[0])"),
            "\(failPoint) was never reached:\n\(GenGateSystem.tail(system.logFile))")
        let store = try SQLiteStore(path: system.dataDir.appendingPathComponent("gengate.sqlite").path)
        let attempts = try await store.attempts(generationID: id).map(\.state)
        let charges = try await store.possibleDoubleCharges()["sim"] ?? 0
        let text = (try? String(contentsOf: ledger, encoding: .utf8)) ?? ""
        let submissions = text.split(separator: "\n").filter { $0.hasPrefix(id) }.count
        return Outcome(submissions: submissions, attempts: attempts, doubleCharges: charges)
    }

    func testAKilledDispatcherNeverCostsAnUnnoticedDoubleCharge() async throws {
        for findsByReference in [true, false] {
            // Killed before the call: nothing reached the provider.
            var outcome = try await run(failPoint: "submit.before_call=kill", findsByReference: findsByReference)
            XCTAssertEqual(outcome.submissions, 1, "before_call, finds=\(findsByReference)")
            XCTAssertEqual(outcome.attempts, [.abandoned, .succeeded])
            XCTAssertEqual(
                outcome.doubleCharges, findsByReference ? 0 : 1,
                "where the provider cannot say, the resubmission is counted (here a false alarm)")

            // Killed after the provider took it, before the answer was recorded.
            outcome = try await run(failPoint: "submit.after_call=kill", findsByReference: findsByReference)
            if findsByReference {
                XCTAssertEqual(outcome.submissions, 1, "found by reference and followed, not submitted again")
                XCTAssertEqual(outcome.attempts, [.succeeded])
                XCTAssertEqual(outcome.doubleCharges, 0)
            } else {
                XCTAssertEqual(outcome.submissions, 2, "after_call: the provider was paid twice…")
                XCTAssertEqual(outcome.doubleCharges, 1, "…and it is counted")
                XCTAssertEqual(outcome.attempts, [.abandoned, .succeeded])
            }

            // Killed after the record: the task is followed, never submitted again.
            outcome = try await run(failPoint: "submit.after_record=kill", findsByReference: findsByReference)
            XCTAssertEqual(outcome.submissions, 1, "after_record, finds=\(findsByReference)")
            XCTAssertEqual(outcome.attempts, [.succeeded])
            XCTAssertEqual(outcome.doubleCharges, 0)
        }
    }

    func testAStoppedDispatcherDrainsItsSubmissionsAtEveryStep() async throws {
        for point in ["submit.before_call", "submit.after_call", "submit.after_record"] {
            let outcome = try await run(failPoint: "\(point)=term", findsByReference: false)
            XCTAssertEqual(outcome.submissions, 1, "SIGTERM at \(point) costs nothing")
            XCTAssertEqual(outcome.attempts, [.succeeded], "SIGTERM at \(point)")
            XCTAssertEqual(outcome.doubleCharges, 0, "SIGTERM at \(point)")
        }
    }

    func testKilledPollersAndUploadersRepeatOnlyWhatIsFree() async throws {
        for point in ["check.after_call=kill", "upload.after_put=kill"] {
            let outcome = try await run(failPoint: point, findsByReference: false)
            XCTAssertEqual(outcome.submissions, 1, point)
            XCTAssertEqual(outcome.attempts, [.succeeded], point)
            XCTAssertEqual(outcome.doubleCharges, 0, point)
        }
    }

    /// SIGTERM to `gengate up` while 20 submissions are in flight at a provider that takes 1.5 s
    /// to answer, with a drain time (0.5 s) shorter than that: the handlers are cancelled, but
    /// calls already made are not, and their answers are recorded. After a restart every job
    /// completes, each paid once.
    func testStoppingTheWholeStackMidSubmissionPaysForEachJobOnce() async throws {
        let dataDir = URL(fileURLWithPath: "/tmp/ggt-\(UUID().uuidString.prefix(8).lowercased())")
        let ledger = dataDir.appendingPathComponent("sim-ledger")
        let settings = environment(
            ledger,
            extra: [
                "GENGATE_SIM_SUBMIT_LATENCY_MS": "1500", "GENGATE_SIM_LATENCY_MS": "500",
                "GENGATE_DRAIN_SECONDS": "0.5",
            ])
        let system = try await GenGateSystem.start(environment: settings, dataDir: dataDir)
        var ids: [String] = []
        for i in 0..<20 { ids.append(try await system.submit(#"{"model": "sim/image", "prompt": "in flight \#(i)"}"#)) }
        let deadline = ContinuousClock.now + .seconds(10)
        while system.submissions().count < 20 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        XCTAssertEqual(system.submissions().count, 20, "all 20 reached the provider before the stop")
        let stopped = system.terminate()
        print("gengate up stopped \(stopped) after SIGTERM with 20 submissions in flight (provider answers in 1.5 s)")
        XCTAssertFalse(system.process.isRunning)

        let again = try await GenGateSystem.start(environment: settings, dataDir: dataDir)
        defer { again.stop() }
        for id in ids {
            let done = try await again.waitForStatus(id, "completed", timeout: .seconds(30))
            XCTAssertEqual(done["attempts"]?.intValue, 1, "\(id) was submitted once")
        }
        XCTAssertEqual(again.submissions().count, 20, "the provider received each job once")
        let store = try SQLiteStore(path: dataDir.appendingPathComponent("gengate.sqlite").path)
        let charges = try await store.possibleDoubleCharges()
        XCTAssertEqual(charges, [:])
    }

    /// Every process killed at once (a power cut): after a restart the jobs that were in flight
    /// move on in seconds, not when their 30-second leases run out.
    func testAfterAWholeStackKillInFlightJobsResumeInSecondsNotALeasePeriod() async throws {
        let dataDir = URL(fileURLWithPath: "/tmp/ggt-\(UUID().uuidString.prefix(8).lowercased())")
        let settings = [
            "GENGATE_SIM_LATENCY_MS": "1000", "GENGATE_SIM_SUBMIT_LATENCY_MS": "1500", "GENGATE_LEASE_SECONDS": "30",
        ]
        let system = try await GenGateSystem.start(environment: settings, dataDir: dataDir)
        var ids: [String] = []
        for i in 0..<12 { ids.append(try await system.submit(#"{"model": "sim/image", "prompt": "power cut \#(i)"}"#)) }
        try await Task.sleep(for: .milliseconds(700))  // submissions under way, leases held
        let store = try SQLiteStore(path: dataDir.appendingPathComponent("gengate.sqlite").path)
        let held = try await store.leaseOwners()
        XCTAssertFalse(held.isEmpty, "the kill must land while leases are held")
        system.killEverything()

        let restarted = ContinuousClock.now
        let again = try await GenGateSystem.start(environment: settings, dataDir: dataDir)
        defer { again.stop() }
        for id in ids { _ = try await again.waitForStatus(id, "completed", timeout: .seconds(20)) }
        let took = ContinuousClock.now - restarted
        print("12 jobs in flight at a whole-stack SIGKILL completed \(took) after the restart (lease 30 s)")
        XCTAssertLessThan(took, .seconds(15), "leases of processes known to be gone are void at once")
    }
}
