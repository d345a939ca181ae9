import Foundation
import GenGateCore
import GenGateLocalPorts
import XCTest

/// Prices and estimates: what a submission or a batch would cost, answered before anything is
/// submitted, by the configuration's prices or GenGate's shipped defaults (said to be defaults).
final class CostTests: XCTestCase {
    func testEstimatesComeBeforeSpendingAndSubmitNothing() async throws {
        let system = try await GenGateSystem.start(
            config: #"{"pricing": {"currency": "EUR", "models": {"sim/image": {"per_image": 0.01}}}}"#)
        defer { system.stop() }

        let models = try await system.request(.GET, "/v1/models").json["data"]?.arrayValue ?? []
        let sim = models.first { $0["id"]?.stringValue == "sim/image" }
        XCTAssertEqual(sim?["price"]?["per_image"]?.doubleValue, 0.01)
        XCTAssertEqual(sim?["price"]?["default"], .bool(false))
        XCTAssertEqual(sim?["price"]?["currency"]?.stringValue, "EUR")
        let kling = models.first { $0["id"]?.stringValue == "kling/kling-v1-6" }
        XCTAssertEqual(kling?["price"]?["default"], .bool(true), "a shipped price is marked as such")

        var answer = try await system.request(
            .POST, "/v1/generations?dry_run=true", body: #"{"model": "sim/image", "prompt": "a fox", "n": 4}"#)
        XCTAssertEqual(answer.status, 200, String(decoding: answer.body, as: UTF8.self))
        XCTAssertEqual(answer.json["object"]?.stringValue, "estimate")
        XCTAssertEqual(answer.json["estimate"]?["amount"]?.doubleValue ?? 0, 0.04, accuracy: 1e-9)
        XCTAssertEqual(answer.json["estimate"]?["currency"]?.stringValue, "EUR")
        XCTAssertEqual(answer.json["estimate"]?["basis"]?.stringValue, "4 × 0.01 an image")
        // Invalid requests are refused as a submission would be.
        answer = try await system.request(.POST, "/v1/generations?dry_run=true", body: #"{"model": "sim/image"}"#)
        XCTAssertEqual(answer.status, 400)
        answer = try await system.request(
            .POST, "/v1/generations?dry_run=maybe", body: #"{"model": "sim/image", "prompt": "x"}"#)
        XCTAssertEqual(answer.json["error"]?["details"]?.arrayValue?.first?["path"]?.stringValue, "dry_run")

        answer = try await system.request(
            .POST, "/v1/batches",
            body: """
                {"estimate_only": true, "requests": [
                  {"model": "sim/image", "prompt": "a", "n": 2},
                  {"model": "sim/video", "prompt": "b", "params": {"duration": 8}}]}
                """)
        XCTAssertEqual(answer.status, 200, String(decoding: answer.body, as: UTF8.self))
        XCTAssertEqual(answer.json["total"]?.doubleValue ?? 0, 0.02, accuracy: 1e-9)
        XCTAssertEqual(answer.json["requests"]?.arrayValue?.count, 2)
        XCTAssertEqual(
            answer.json["requests"]?.arrayValue?.last?["estimate"]?["basis"]?.stringValue, "1 × 8 s × 0.0")
        XCTAssertEqual(answer.json["requests"]?.arrayValue?.last?["estimate"]?["default_price"], .bool(true))

        // Nothing was submitted.
        let listed = try await system.request(.GET, "/v1/generations").json["data"]?.arrayValue ?? []
        XCTAssertEqual(listed.count, 0)
        let batches = try await system.request(.GET, "/v1/batches").json["data"]?.arrayValue ?? []
        XCTAssertEqual(batches.count, 0)
    }

    func testJobsCostTheirChargedAttemptsAndUsageAndMetricsSayWhatEachKeySpent() async throws {
        let system = try await GenGateSystem.start(
            config:
                #"{"pricing": {"currency": "EUR", "models": {"sim/image": {"per_image": 0.01}}}, "jobs": {"max_attempts": 2}}"#
        )
        defer { system.stop() }
        let made = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "app"}"#)
        let app = try XCTUnwrap(made.json["key"]?.stringValue)
        let appID = try XCTUnwrap(made.json["id"]?.stringValue)

        let paid = try await system.submit(#"{"model": "sim/image", "prompt": "a fox", "n": 2}"#, key: app)
        // Every attempt of this one fails at the provider, which bills delivered tasks only.
        let unpaid = try await system.submit(
            #"{"model": "sim/image", "prompt": "a fox", "params": {"sim_fail": true}}"#, key: app)
        let admins = try await system.submit(#"{"model": "sim/image", "prompt": "an owl"}"#)
        let done = try await system.waitForStatus(paid, "completed", key: app)
        XCTAssertEqual(done["cost"]?["amount"]?.doubleValue ?? -1, 0.02, accuracy: 1e-9)
        XCTAssertEqual(done["cost"]?["currency"]?.stringValue, "EUR")
        XCTAssertEqual(done["cost"]?["charged_attempts"]?.doubleValue, 1)
        XCTAssertEqual(done["cost"]?["wasted"]?.doubleValue, 0)
        let history = done["attempt_history"]?.arrayValue ?? []
        XCTAssertEqual(history.first?["cost"]?.doubleValue ?? -1, 0.02, accuracy: 1e-9)
        XCTAssertEqual(history.first?["charged"], .bool(true))
        let failed = try await system.waitForStatus(unpaid, "failed", key: app)
        XCTAssertEqual(failed["cost"]?["amount"]?.doubleValue, 0)
        XCTAssertEqual(failed["attempt_history"]?.arrayValue?.map { $0["charged"] }, [.bool(false), .bool(false)])
        _ = try await system.waitForStatus(admins, "completed")

        // The key sees its own spend; an admin sees every key's, by what it asks.
        var usage = try await system.request(.GET, "/v1/usage", key: app)
        XCTAssertEqual(usage.status, 200, String(decoding: usage.body, as: UTF8.self))
        XCTAssertEqual(usage.json["total"]?["amount"]?.doubleValue ?? -1, 0.02, accuracy: 1e-9)
        XCTAssertEqual(usage.json["total"]?["jobs"]?.doubleValue, 2)
        XCTAssertEqual(usage.json["total"]?["attempts"]?.doubleValue, 3)
        XCTAssertEqual(usage.json["total"]?["charged_attempts"]?.doubleValue, 1)
        XCTAssertEqual(usage.json["key"]?["spend"]?["today"]?.doubleValue ?? -1, 0.02, accuracy: 1e-9)
        let row = usage.json["data"]?.arrayValue?.first
        XCTAssertEqual(row?["key"]?.stringValue, appID)
        XCTAssertEqual(row?["model"]?.stringValue, "sim/image")
        XCTAssertEqual(row?["provider"]?.stringValue, "sim")
        XCTAssertNotNil(row?["day"]?.stringValue)
        usage = try await system.request(.GET, "/v1/usage?key=\(appID)", key: app)
        XCTAssertEqual(usage.status, 200)
        usage = try await system.request(.GET, "/v1/usage?key=key_someone_else", key: app)
        XCTAssertEqual(usage.status, 403)
        usage = try await system.request(.GET, "/v1/usage?group_by=key")
        XCTAssertEqual(usage.json["data"]?.arrayValue?.count, 2, "two keys spent")
        XCTAssertEqual(usage.json["total"]?["amount"]?.doubleValue ?? -1, 0.03, accuracy: 1e-9)
        XCTAssertEqual(usage.json["data"]?.arrayValue?.first?["day"], nil, "days summed")
        usage = try await system.request(.GET, "/v1/usage?group_by=provider&from=2020-01-01&to=2020-01-31")
        XCTAssertEqual(usage.json["data"]?.arrayValue?.count, 0)
        for bad in [
            "from=2026-13-01", "from=yesterday", "group_by=colour", "from=2026-12-07&to=2026-12-01",
            "from=2020-01-01&to=2026-01-01",
        ] {
            usage = try await system.request(.GET, "/v1/usage?\(bad)")
            XCTAssertEqual(usage.status, 400, bad)
            XCTAssertEqual(usage.json["error"]?["code"]?.stringValue, "invalid_request", bad)
        }

        // Spend counters, read from the store.
        let metrics = try await system.metrics(containing: "gengate_spend_total{")
        let line = metrics.split(separator: "\n").first {
            $0.hasPrefix("gengate_spend_total{") && $0.contains(#"model="sim/image""#)
        }
        XCTAssertNotNil(line, metrics)
        XCTAssertEqual(line.flatMap { Double($0.split(separator: " ").last ?? "") } ?? -1, 0.03, accuracy: 1e-9)
        XCTAssertTrue(line?.contains(#"currency="EUR""#) ?? false)
    }

    func testABudgetHoldsUnderConcurrentSubmittersOnTwoIngressProcesses() async throws {
        let system = try await GenGateSystem.start(
            config: #"{"pricing": {"models": {"sim/image": {"per_image": 0.01}}}}"#)
        defer { system.stop() }
        // A key that may commit 0.105 a day: ten jobs of one image.
        var answer = try await system.request(
            .POST, "/v1/admin/keys", body: #"{"name": "capped", "budget_daily": 0.105}"#)
        XCTAssertEqual(answer.status, 201, String(decoding: answer.body, as: UTF8.self))
        XCTAssertEqual(answer.json["budget_daily"]?.doubleValue, 0.105)
        let capped = try XCTUnwrap(answer.json["key"]?.stringValue)
        let cappedID = try XCTUnwrap(answer.json["id"]?.stringValue)

        // A second api-ingress process on the same store, as a second host would run one.
        let port = try FreePorts.take(1)[0]
        let second = Process()
        second.executableURL = GenGateSystem.binDirectory.appendingPathComponent("api-ingress")
        second.arguments = ["--config", system.dataDir.appendingPathComponent("run/config.json").path]
        second.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("GENGATE_") }
            .merging(["GENGATE_HTTP_PORT": "\(port)"]) { $1 }
        second.standardInput = Pipe()
        let log = system.dataDir.appendingPathComponent("second-ingress.log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        second.standardOutput = try FileHandle(forWritingTo: log)
        second.standardError = second.standardOutput
        try second.run()
        defer {
            kill(second.processIdentifier, SIGTERM)
            second.waitUntilExit()
        }
        let secondURL = "http://127.0.0.1:\(port)"
        for _ in 0..<200 {
            if (try? await GenGateSystem.rawRequest(.GET, secondURL + "/health", body: nil, key: nil))?.status == 200 {
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }

        // Forty submissions at once, half through each process.
        let body = Data(#"{"model": "sim/image", "prompt": "a fox"}"#.utf8)
        let statuses = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
            for index in 0..<40 {
                let base = index % 2 == 0 ? system.baseURL : secondURL
                group.addTask {
                    let answer = try await GenGateSystem.rawRequest(
                        .POST, base + "/v1/generations", body: body, key: capped)
                    return (answer.status, answer.json["error"]?["code"]?.stringValue)
                }
            }
            var all: [(Int, String?)] = []
            for try await result in group { all.append(result) }
            return all
        }
        XCTAssertEqual(statuses.filter { $0.0 == 202 }.count, 10, "\(statuses)")
        XCTAssertEqual(statuses.filter { $0.0 == 402 }.count, 30, "\(statuses)")
        XCTAssertTrue(statuses.filter { $0.0 == 402 }.allSatisfy { $0.1 == "budget_exceeded" })

        answer = try await system.request(
            .POST, "/v1/generations", body: #"{"model": "sim/image", "prompt": "x"}"#, key: capped)
        XCTAssertEqual(answer.status, 402)
        let message = answer.json["error"]?["message"]?.stringValue ?? ""
        XCTAssertTrue(message.contains("daily budget of 0.105 USD"), message)
        XCTAssertEqual(
            answer.json["error"]?["details"]?.arrayValue?.map { $0["path"]?.stringValue ?? "" },
            ["budget_daily", "committed", "requested"])
        // A batch is held to the budget whole.
        answer = try await system.request(
            .POST, "/v1/batches", body: #"{"requests": [{"model": "sim/image", "prompt": "a"}]}"#, key: capped)
        XCTAssertEqual(answer.status, 402)

        // Once the jobs end, what they cost is what is committed: never more than the budget.
        let listed = try await system.request(.GET, "/v1/generations?limit=100", key: capped).json["data"]?.arrayValue
        XCTAssertEqual(listed?.count, 10)
        for job in listed ?? [] {
            _ = try await system.waitForStatus(job["id"]?.stringValue ?? "", "completed", key: capped)
        }
        var key = try await system.request(.GET, "/v1/admin/keys/\(cappedID)")
        XCTAssertEqual(key.json["spend"]?["today"]?.doubleValue ?? -1, 0.1, accuracy: 1e-9)
        XCTAssertLessThanOrEqual(key.json["spend"]?["today"]?.doubleValue ?? 1, 0.105)

        // Raised, it takes more; cleared, no limit; bad values are refused.
        key = try await system.request(.PATCH, "/v1/admin/keys/\(cappedID)", body: #"{"budget_daily": 0.2}"#)
        XCTAssertEqual(key.status, 200, String(decoding: key.body, as: UTF8.self))
        XCTAssertEqual(key.json["budget_daily"]?.doubleValue, 0.2)
        _ = try await system.submit(#"{"model": "sim/image", "prompt": "more"}"#, key: capped)
        for bad in [#"{"budget_daily": -1}"#, #"{"budget_monthly": "ten"}"#, #"{"name": "renamed"}"#] {
            answer = try await system.request(.PATCH, "/v1/admin/keys/\(cappedID)", body: bad)
            XCTAssertEqual(answer.status, 400, bad)
        }
        answer = try await system.request(
            .PATCH, "/v1/admin/keys/\(cappedID)", body: #"{"budget_daily": 1}"#, key: capped)
        XCTAssertEqual(answer.status, 403, "only an admin sets budgets")
        answer = try await system.request(.PATCH, "/v1/admin/keys/key_missing", body: #"{"budget_daily": 1}"#)
        XCTAssertEqual(answer.status, 404)
        key = try await system.request(
            .PATCH, "/v1/admin/keys/\(cappedID)", body: #"{"budget_daily": null, "budget_monthly": 5}"#)
        XCTAssertEqual(key.json["budget_daily"], .null)
        XCTAssertEqual(key.json["budget_monthly"]?.doubleValue, 5)
        answer = try await system.request(
            .POST, "/v1/admin/keys", body: #"{"name": "bad", "budget_daily": null}"#)
        XCTAssertEqual(answer.status, 400, "a new key's budget is a number")
    }
}
