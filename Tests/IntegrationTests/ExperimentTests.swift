import Foundation
import GenGateCore
import XCTest

/// A/B experiments on a running system: made and checked by an admin, requests naming one
/// shared among its variants by subject, rated by the application, judged with a winner, shown
/// on the dashboard, paused (requests go to the control) and completed.
final class ExperimentTests: XCTestCase {
    func testAnExperimentSharesRequestsAmongItsVariantsAndNamesAWinnerOnceItIsSignificant() async throws {
        let system = try await GenGateSystem.start(
            config: #"""
                {"pricing": {"models": {"sim/image": {"per_image": 0.01}}},
                 "jobs": {"max_attempts": 1}}
                """#)
        defer { system.stop() }

        // Checked as a whole, every problem by path.
        var answer = try await system.request(
            .POST, "/v1/admin/experiments",
            body: #"{"name": "Bad Name", "variants": [{"name": "a", "model": "nope/x", "traffic": 60}], "colour": 1}"#)
        XCTAssertEqual(answer.status, 400)
        XCTAssertEqual(
            answer.json["error"]?["details"]?.arrayValue?.compactMap { $0["path"]?.stringValue },
            ["colour", "name", "variants"])
        let definition = #"""
            {"name": "steady-vs-flaky", "description": "does the flaky setting hurt?",
             "variants": [
               {"name": "steady", "model": "sim/image", "traffic": 50},
               {"name": "flaky", "model": "sim/image", "traffic": 50, "params": {"sim_fail": true},
                "prompt_template": "{prompt}, in watercolour"}],
             "metrics": [{"name": "success_rate", "primary": true}, {"name": "duration"}, {"name": "cost"},
                         {"name": "rating"}]}
            """#
        answer = try await system.request(.POST, "/v1/admin/experiments", body: definition)
        XCTAssertEqual(answer.status, 201, String(decoding: answer.body, as: UTF8.self))
        let id = try XCTUnwrap(answer.json["id"]?.stringValue)
        XCTAssertEqual(answer.json["status"]?.stringValue, "draft")
        answer = try await system.request(.POST, "/v1/admin/experiments", body: definition)
        XCTAssertEqual(answer.status, 409, "the name is taken")

        let made = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "app"}"#)
        let key = try XCTUnwrap(made.json["key"]?.stringValue)
        func submit(_ body: String) async throws -> GenGateSystem.Answer {
            try await system.request(.POST, "/v1/generations", body: body, key: key)
        }
        answer = try await submit(#"{"experiment": "steady-vs-flaky", "prompt": "a fox"}"#)
        XCTAssertEqual(answer.status, 409, "a draft takes no requests")
        answer = try await system.request(.POST, "/v1/admin/experiments/\(id)/start")
        XCTAssertEqual(answer.json["status"]?.stringValue, "running")
        XCTAssertNotEqual(answer.json["started_at"], .null)

        for (body, path) in [
            (#"{"experiment": "steady-vs-flaky", "model": "sim/image", "prompt": "a"}"#, "model"),
            (#"{"experiment": "no-such-thing", "prompt": "a"}"#, "experiment"),
            (#"{"subject": "user-1", "model": "sim/image", "prompt": "a"}"#, "experiment"),
            (#"{"experiment": "steady-vs-flaky", "subject": 7, "prompt": "a"}"#, "subject"),
        ] {
            answer = try await submit(body)
            XCTAssertEqual(answer.status, 400, body)
            XCTAssertEqual(answer.json["error"]?["details"]?.arrayValue?.first?["path"]?.stringValue, path, body)
        }

        // Forty users; each job says which variant it got.
        var ids: [String: String] = [:]
        for index in 0..<40 {
            ids["user-\(index)"] = try await system.submit(
                #"{"experiment": "steady-vs-flaky", "subject": "user-\#(index)", "prompt": "a fox"}"#, key: key)
        }
        var variants: [String: String] = [:]
        for (subject, job) in ids {
            let ended = try await system.waitFor(job, key: key, timeout: .seconds(60)) {
                ["completed", "failed"].contains($0["status"]?.stringValue ?? "")
            }
            XCTAssertEqual(ended["experiment"]?["id"]?.stringValue, id)
            let variant = try XCTUnwrap(ended["experiment"]?["variant"]?.stringValue)
            variants[subject] = variant
            // The variant's settings went with the job.
            XCTAssertEqual(ended["status"]?.stringValue, variant == "steady" ? "completed" : "failed", "\(ended)")
            XCTAssertEqual(ended["prompt"]?.stringValue, variant == "steady" ? "a fox" : "a fox, in watercolour")
        }
        let steady = variants.filter { $0.value == "steady" }.count
        XCTAssertTrue((8...32).contains(steady), "about half of 40 each: \(steady) steady")
        // The same subject gets the same variant again.
        let again = try await system.submit(
            #"{"experiment": "steady-vs-flaky", "subject": "user-3", "prompt": "a fox"}"#, key: key)
        let repeated = try await system.request(.GET, "/v1/generations/\(again)", key: key).json
        XCTAssertEqual(repeated["experiment"]?["variant"]?.stringValue, variants["user-3"])

        // Ratings: completed jobs only, 1 to 5, the caller's own.
        let completed = try XCTUnwrap(ids.first { variants[$0.key] == "steady" }?.value)
        let failed = try XCTUnwrap(ids.first { variants[$0.key] == "flaky" }?.value)
        answer = try await system.request(
            .POST, "/v1/generations/\(completed)/rating", body: #"{"rating": 5, "feedback": "lovely"}"#, key: key)
        XCTAssertEqual(answer.status, 200, String(decoding: answer.body, as: UTF8.self))
        answer = try await system.request(
            .POST, "/v1/generations/\(completed)/rating", body: #"{"rating": 4}"#, key: key)
        XCTAssertEqual(answer.json["rating"]?.doubleValue, 4, "a second rating replaces the first")
        let rated = try await system.request(.GET, "/v1/generations/\(completed)", key: key).json
        XCTAssertEqual(rated["rating"]?["rating"]?.doubleValue, 4)
        answer = try await system.request(.POST, "/v1/generations/\(failed)/rating", body: #"{"rating": 1}"#, key: key)
        XCTAssertEqual(answer.status, 409)
        for bad in [#"{"rating": 6}"#, #"{"rating": 2.5}"#, #"{"stars": 3}"#] {
            answer = try await system.request(.POST, "/v1/generations/\(completed)/rating", body: bad, key: key)
            XCTAssertEqual(answer.status, 400, bad)
        }
        answer = try await system.request(.POST, "/v1/generations/\(completed)/rating", body: #"{"rating": 3}"#)
        XCTAssertEqual(answer.status, 404, "another key's job is not found")

        // Every steady job succeeded and every flaky one failed: a clear winner.
        let results = try await system.request(.GET, "/v1/admin/experiments/steady-vs-flaky/results").json
        XCTAssertEqual(results["winner"]?["variant"]?.stringValue, "steady", "\(results)")
        XCTAssertEqual(
            results["variants"]?.arrayValue?.map { $0["requests"]?.doubleValue ?? 0 }.reduce(0, +), 41)
        XCTAssertEqual(results["variants"]?.arrayValue?.first?["success_rate"]?["value"]?.doubleValue, 1)
        XCTAssertEqual(
            results["variants"]?.arrayValue?.first?["cost_per_successful_output"]?["value"]?.doubleValue ?? 0, 0.01,
            accuracy: 1e-9)
        XCTAssertTrue(
            results["recommendation"]?.stringValue?.hasPrefix("steady has a success rate 100 points higher than flaky")
                ?? false, "\(results["recommendation"] ?? .null)")

        // The dashboard shows it while it runs.
        let page = try await GenGateSystem.rawRequest(
            .GET, "http://127.0.0.1:\(system.monitorPort)/dashboard", body: nil, key: system.adminKey)
        let html = String(decoding: page.body, as: UTF8.self)
        XCTAssertTrue(html.contains(#"<p id="experiment-steady-vs-flaky">"#), html)

        // A running experiment's description may change, not its variants.
        answer = try await system.request(
            .PATCH, "/v1/admin/experiments/\(id)", body: #"{"description": "the flaky one fails"}"#)
        XCTAssertEqual(answer.json["description"]?.stringValue, "the flaky one fails")
        answer = try await system.request(
            .PATCH, "/v1/admin/experiments/\(id)",
            body: #"{"variants": [{"name": "x", "model": "sim/image", "traffic": 100}]}"#)
        XCTAssertEqual(answer.status, 409)

        // A request with an Idempotency-Key (and no subject) is placed by the key, and its retry
        // finds the same job, also once the experiment is paused.
        let retried = #"{"experiment": "steady-vs-flaky", "prompt": "once only"}"#
        let first = try await system.request(
            .POST, "/v1/generations", body: retried, key: key, headers: [("Idempotency-Key", "order-77")])
        XCTAssertEqual(first.status, 202)

        // Paused: requests go to the control, not enrolled.
        answer = try await system.request(.POST, "/v1/admin/experiments/\(id)/pause")
        let second = try await system.request(
            .POST, "/v1/generations", body: retried, key: key, headers: [("Idempotency-Key", "order-77")])
        XCTAssertEqual(second.status, 202, String(decoding: second.body, as: UTF8.self))
        XCTAssertEqual(second.json["id"], first.json["id"], "the retry is the first job")
        XCTAssertEqual(answer.json["status"]?.stringValue, "paused")
        let paused = try await system.submit(#"{"experiment": "steady-vs-flaky", "prompt": "a fox"}"#, key: key)
        let pausedJob = try await system.request(.GET, "/v1/generations/\(paused)", key: key).json
        XCTAssertNil(pausedJob["experiment"])
        XCTAssertEqual(pausedJob["model"]?.stringValue, "sim/image")
        answer = try await system.request(.POST, "/v1/admin/experiments/\(id)/complete")
        XCTAssertEqual(answer.json["status"]?.stringValue, "completed")
        XCTAssertNotEqual(answer.json["ended_at"], .null)
        answer = try await system.request(.POST, "/v1/admin/experiments/\(id)/start")
        XCTAssertEqual(answer.status, 409, "a completed experiment stays so")
        answer = try await system.request(.DELETE, "/v1/admin/experiments/\(id)")
        XCTAssertEqual(answer.status, 409, "jobs were sent to it")
        answer = try await system.request(.GET, "/v1/admin/experiments")
        XCTAssertEqual(answer.json["data"]?.arrayValue?.map { $0["name"]?.stringValue ?? "" }, ["steady-vs-flaky"])
        answer = try await system.request(.GET, "/v1/admin/experiments", key: key)
        XCTAssertEqual(answer.status, 403, "admin only")

        // A draft nobody used can go.
        answer = try await system.request(
            .POST, "/v1/admin/experiments",
            body: #"""
                {"name": "unused", "variants": [{"name": "a", "model": "sim/image", "traffic": 50},
                                                  {"name": "b", "model": "sim/text", "traffic": 50}]}
                """#)
        let unused = try XCTUnwrap(answer.json["id"]?.stringValue)
        XCTAssertEqual(answer.json["metrics"]?.arrayValue?.count, 4, "the default metrics")
        answer = try await system.request(.DELETE, "/v1/admin/experiments/\(unused)")
        XCTAssertEqual(answer.status, 200)
        answer = try await system.request(.GET, "/v1/admin/experiments/\(unused)")
        XCTAssertEqual(answer.status, 404)
    }
}
