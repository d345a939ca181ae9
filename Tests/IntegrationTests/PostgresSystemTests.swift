import Foundation
import GenGateCore
import GenGateLocalPorts
import XCTest

/// The whole system on the PostgreSQL store, as `gengate up` runs it with `GENGATE_STORE_URL`.
final class PostgresSystemTests: XCTestCase {
    func testJobsInFlightSurviveADatabaseRestartAndSubmissionsMeanwhileAreRefusedClearly() async throws {
        let server = try LocalPostgres()
        defer { try? server.stop() }
        let system = try await GenGateSystem.start(environment: [
            "GENGATE_STORE_URL": try server.createDatabase(), "GENGATE_SIM_LATENCY_MS": "1500",
        ])
        defer { system.stop() }
        XCTAssertFalse(
            FileManager.default.fileExists(atPath: system.dataDir.appendingPathComponent("gengate.sqlite").path),
            "no SQLite store beside PostgreSQL")
        let written = try String(
            contentsOf: system.dataDir.appendingPathComponent("run/config.json"), encoding: .utf8)
        XCTAssertTrue(written.contains("postgres://"))
        XCTAssertFalse(written.contains(LocalPostgres.password), "the database password is not written to files")
        var ids: [String] = []
        for index in 0..<10 {
            ids.append(try await system.submit(#"{"model": "sim/image", "prompt": "through a restart \#(index)"}"#))
        }
        try await Task.sleep(for: .milliseconds(300))
        try server.stop()
        // While it is down: a clear 503, never a hang or a crash.
        let refused = try await system.request(
            .POST, "/v1/generations", body: #"{"model": "sim/image", "prompt": "while the database is down"}"#)
        XCTAssertEqual(refused.status, 503, String(decoding: refused.body, as: UTF8.self))
        try await Task.sleep(for: .seconds(2))
        try server.start()
        for id in ids {
            let done = try await system.waitForStatus(id, "completed", timeout: .seconds(90))
            XCTAssertEqual(done["error"], .null)
        }
        // Every service is still there (none crashed for good on the way).
        let accepted = try await system.submit(#"{"model": "sim/image", "prompt": "after the restart"}"#)
        _ = try await system.waitForStatus(accepted, "completed", timeout: .seconds(60))
    }
}
