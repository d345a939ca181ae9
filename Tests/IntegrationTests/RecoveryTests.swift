import Foundation
import GenGateCore
import NIOHTTP1
import XCTest

/// Faults against a real system: processes die, the store and the sweep bring every job home.
final class RecoveryTests: XCTestCase {
    func testKilledPollerIsRestartedAndItsJobsComplete() async throws {
        let system = try await GenGateSystem.start(environment: [
            "GENGATE_SIM_LATENCY_MS": "4000", "GENGATE_LEASE_SECONDS": "2",
            "GENGATE_SWEEP_INTERVAL_SECONDS": "0.5", "GENGATE_STALE_AFTER_SECONDS": "1",
        ])
        defer { system.stop() }
        var ids: [String] = []
        for i in 0..<3 {
            ids.append(try await system.submit(#"{"model": "sim/image", "prompt": "survivor \#(i)", "n": 2}"#))
        }
        // Wait until the poller holds each job (it has reported progress).
        for id in ids {
            _ = try await system.waitFor(id) { ($0["progress"]?.intValue ?? 0) > 0 }
        }
        let victim = try XCTUnwrap(system.pid(of: "poller"))
        XCTAssertEqual(kill(victim, SIGKILL), 0)
        let killedAt = ContinuousClock.now

        var replacement: Int32?
        for _ in 0..<100 {
            if let pid = system.pid(of: "poller"), pid != victim, kill(pid, 0) == 0 {
                replacement = pid
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTAssertNotNil(replacement, "the supervisor must restart the killed poller")

        for id in ids {
            let done = try await system.waitForStatus(id, "completed", timeout: .seconds(30))
            XCTAssertEqual(done["attempts"]?.intValue, 1, "the provider task is resumed, not submitted again")
            guard case .array(let outputs)? = done["outputs"] else { return XCTFail("\(done)") }
            XCTAssertEqual(outputs.count, 2)
        }
        print("3 jobs recovered \(ContinuousClock.now - killedAt) after the poller was killed (lease 2 s)")
    }

    func testRetryableFailuresAreRetriedWithBackOffThenFail() async throws {
        let system = try await GenGateSystem.start(environment: [
            "GENGATE_SIM_LATENCY_MS": "100", "GENGATE_SIM_FAILURE_RATE": "1", "GENGATE_MAX_ATTEMPTS": "3",
            "GENGATE_RETRY_BASE_SECONDS": "0.2", "GENGATE_SWEEP_INTERVAL_SECONDS": "0.2",
        ])
        defer { system.stop() }
        let id = try await system.submit(#"{"model": "sim/image", "prompt": "always fails", "n": 2}"#)
        let failed = try await system.waitForStatus(id, "failed", timeout: .seconds(20))
        XCTAssertEqual(failed["attempts"]?.intValue, 3, "every allowed attempt is made")
        XCTAssertEqual(failed["error"]?["code"]?.stringValue, "provider_error")
        XCTAssertEqual(failed["error"]?["retryable"], .bool(false), "no retries are left")
        XCTAssertTrue(
            failed["error"]?["message"]?.stringValue?.contains("gave up after 3 attempts") ?? false, "\(failed)")
        XCTAssertNotNil(failed["retry_wait_at"]?.stringValue, "it waited between attempts")
        XCTAssertEqual(failed["outputs"], .array([]))
        // Every retry is on the job: each attempt, what it asked for, how it ended and when.
        guard case .array(let history)? = failed["attempt_history"] else { return XCTFail("\(failed)") }
        XCTAssertEqual(history.compactMap { $0["number"]?.intValue }, [1, 2, 3])
        for attempt in history {
            XCTAssertEqual(attempt["state"]?.stringValue, "failed")
            XCTAssertEqual(attempt["provider"]?.stringValue, "sim")
            XCTAssertEqual(attempt["error"]?["code"]?.stringValue, "provider_error")
            XCTAssertNotNil(attempt["started_at"]?.stringValue)
            XCTAssertNotNil(attempt["ended_at"]?.stringValue)
            XCTAssertEqual(attempt["possible_double_charge"], .bool(false))
        }
    }
}
