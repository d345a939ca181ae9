import Foundation
import GenGateCore
import GenGateLocalPorts
import NIOHTTP1
import XCTest

/// Starting, running side by side, and stopping whole systems.
final class LifecycleTests: XCTestCase {
    func testTwoInstancesRunSideBySide() async throws {
        let first = try await GenGateSystem.start(environment: ["GENGATE_SIM_LATENCY_MS": "200"])
        defer { first.stop() }
        let second = try await GenGateSystem.start(environment: [
            "GENGATE_SIM_LATENCY_MS": "200", "GENGATE_LOG_FORMAT": "json",
        ])
        defer { second.stop() }
        let a = try await first.submit(#"{"model": "sim/text", "prompt": "on the first"}"#)
        let b = try await second.submit(#"{"model": "sim/text", "prompt": "on the second"}"#)
        _ = try await first.waitForStatus(a, "completed")
        _ = try await second.waitForStatus(b, "completed")
        let crossed = try await first.request(.GET, "/v1/generations/\(a)", key: second.adminKey)
        XCTAssertEqual(crossed.status, 401, "each instance has its own keys")

        // The admin key is readable by its owner only, and never logged.
        let mode = try FileManager.default.attributesOfItem(
            atPath: first.dataDir.appendingPathComponent("admin.key").path)[.posixPermissions]
        XCTAssertEqual((mode as? NSNumber)?.intValue, 0o600)
        for system in [first, second] {
            let log = try String(contentsOf: system.logFile, encoding: .utf8)
            XCTAssertFalse(log.contains(system.adminKey), "an API key reached the log")
        }
        // JSON logs: one object per line, naming the service.
        let lines = try String(contentsOf: second.logFile, encoding: .utf8).split(separator: "\n")
        XCTAssertFalse(lines.isEmpty)
        var services = Set<String>()
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            XCTAssertNotNil(object?["msg"], "not a JSON log line: \(line)")
            if let service = object?["service"] as? String { services.insert(service) }
        }
        XCTAssertTrue(
            services.isSuperset(of: ["gengate", "api-ingress", "dispatcher", "poller", "uploader", "monitor"]),
            "\(services)")
    }

    func testSecondUpOnTheSameDataDirIsRefused() async throws {
        let system = try await GenGateSystem.start()
        defer { system.stop() }
        let (status, _, text) = try GenGateSystem.command([
            "up", "--data-dir", system.dataDir.path, "--http-port", "1",
            "--monitor-port", "2", "--events-port", "3",
        ])
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(text.contains("already running"), text)
    }

    func testATakenPortFailsAtOnceNamingTheFlag() throws {
        let taken = try XCTUnwrap(FreePorts.bound(listening: true))
        defer { close(taken.fd) }
        let dataDir = "/tmp/ggt-port-\(UUID().uuidString.prefix(6))"
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let ports = try FreePorts.take(2)
        let (status, _, text) = try GenGateSystem.command([
            "up", "--data-dir", dataDir, "--http-port", "\(taken.port)",
            "--monitor-port", "\(ports[0])", "--events-port", "\(ports[1])",
        ])
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(text.contains("already in use") && text.contains("--http-port"), text)
    }

    func testSIGTERMStopsEveryServiceAndSIGKILLLeavesNoOrphans() async throws {
        let graceful = try await GenGateSystem.start()
        let children = graceful.childPIDs
        XCTAssertEqual(children.count, 5)
        let started = ContinuousClock.now
        kill(graceful.process.processIdentifier, SIGTERM)
        graceful.process.waitUntilExit()
        print("graceful shutdown took \(ContinuousClock.now - started)")
        XCTAssertEqual(graceful.process.terminationStatus, 0)
        for pid in children { XCTAssertNotEqual(kill(pid, 0), 0, "child \(pid) outlived a graceful shutdown") }
        graceful.stop()

        let killed = try await GenGateSystem.start()
        defer { killed.stop() }
        let orphans = killed.childPIDs
        XCTAssertEqual(orphans.count, 5)
        kill(killed.process.processIdentifier, SIGKILL)
        var alive = orphans
        for _ in 0..<100 where !alive.isEmpty {
            try await Task.sleep(for: .milliseconds(100))
            alive = alive.filter { kill($0, 0) == 0 && !isZombie($0) }
        }
        XCTAssertEqual(alive, [], "children must exit when the supervisor is killed")
    }

    /// A child that exited but was not reaped yet (its parent is gone) still answers kill(0).
    private func isZombie(_ pid: Int32) -> Bool {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        return status.contains("State:\tZ") || status.isEmpty
    }
}
