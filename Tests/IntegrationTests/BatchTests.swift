import Foundation
import GenGateCore
import XCTest

/// Batches over real HTTP against a whole system.
final class BatchTests: XCTestCase {
    func requests(_ count: Int, failing: Set<Int> = []) -> String {
        (0..<count).map { index in
            failing.contains(index)
                ? #"{"model": "sim/image", "prompt": "job \#(index)", "params": {"sim_fail": true}}"#
                : #"{"model": "sim/image", "prompt": "job \#(index)"}"#
        }.joined(separator: ", ")
    }

    func create(_ system: GenGateSystem, _ body: String) async throws -> String {
        let answer = try await system.request(.POST, "/v1/batches", body: body)
        XCTAssertEqual(answer.status, 202, String(decoding: answer.body, as: UTF8.self))
        return try XCTUnwrap(answer.json["id"]?.stringValue)
    }

    /// Polls the batch until it has ended, checking `each` view on the way.
    func waitForEnd(
        _ system: GenGateSystem, _ id: String, timeout: Duration = .seconds(60), each: (JSONValue) -> Void = { _ in }
    ) async throws -> JSONValue {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let view = try await system.request(.GET, "/v1/batches/\(id)").json
            each(view)
            if view["status"] != .string("processing") { return view }
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTFail("batch \(id) did not end in \(timeout)")
        throw SystemError("timeout")
    }

    func testABatchRunsWithinItsWindowAndEndsCompleted() async throws {
        let system = try await GenGateSystem.start(environment: ["GENGATE_SIM_LATENCY_MS": "400"])
        defer { system.stop() }
        let id = try await create(
            system, #"{"requests": [\#(requests(12))], "max_concurrency": 3, "metadata": {"run": 7}}"#)
        var busiest = 0
        let ended = try await waitForEnd(system, id) { view in
            let counts = view["counts"]
            busiest = max(busiest, (counts?["pending"]?.intValue ?? 0) + (counts?["running"]?.intValue ?? 0))
        }
        XCTAssertLessThanOrEqual(busiest, 3, "never more than max_concurrency at once")
        XCTAssertGreaterThan(busiest, 1)
        XCTAssertEqual(ended["status"], .string("completed"))
        XCTAssertEqual(ended["progress"], .number(100))
        XCTAssertEqual(ended["counts"]?["completed"], .number(12))
        XCTAssertEqual(ended["metadata"]?["run"], .number(7))
        let jobs = try XCTUnwrap(ended["jobs"]?.arrayValue)
        XCTAssertEqual(jobs.map { $0["index"]?.intValue ?? -1 }, Array(0..<12))
        XCTAssertTrue(jobs.allSatisfy { $0["status"] == .string("completed") })
        let job = try await system.request(.GET, "/v1/generations/\(jobs[5]["id"]!.stringValue!)").json
        XCTAssertEqual(job["batch_id"], .string(id))
        let page = try await system.request(.GET, "/v1/batches/\(id)?jobs_after=9&jobs_limit=5").json
        XCTAssertEqual(page["jobs"]?.arrayValue?.map { $0["index"]?.intValue ?? -1 }, [10, 11])
        let list = try await system.request(.GET, "/v1/batches").json
        XCTAssertEqual(list["data"]?.arrayValue?.first?["id"], .string(id))
    }

    func testSomeFailuresMakeItPartialAndStopOnErrorCancelsTheRest() async throws {
        let system = try await GenGateSystem.start(environment: [
            "GENGATE_SIM_LATENCY_MS": "300", "GENGATE_MAX_ATTEMPTS": "1",
        ])
        defer { system.stop() }
        let partial = try await create(system, #"{"requests": [\#(requests(6, failing: [2, 4]))]}"#)
        let mixed = try await waitForEnd(system, partial)
        XCTAssertEqual(mixed["status"], .string("partial_failed"))
        XCTAssertEqual(mixed["counts"]?["failed"], .number(2))
        XCTAssertEqual(mixed["counts"]?["completed"], .number(4))
        XCTAssertEqual(mixed["jobs"]?.arrayValue?[2]["error_code"], .string("provider_error"))

        let allFail = try await create(system, #"{"requests": [\#(requests(2, failing: [0, 1]))]}"#)
        let failed = try await waitForEnd(system, allFail)
        XCTAssertEqual(failed["status"], .string("failed"))

        // One at a time; the second fails: the rest never start.
        let stopping = try await create(
            system,
            #"{"requests": [\#(requests(5, failing: [1]))], "max_concurrency": 1, "stop_on_error": true, "priority": "high"}"#
        )
        let stopped = try await waitForEnd(system, stopping)
        XCTAssertEqual(stopped["status"], .string("partial_failed"))
        XCTAssertEqual(stopped["counts"]?["completed"], .number(1))
        XCTAssertEqual(stopped["counts"]?["failed"], .number(1))
        XCTAssertEqual(stopped["counts"]?["cancelled"], .number(3))
        XCTAssertEqual(stopped["stop_reason"], .string("error"))
        XCTAssertEqual(stopped["priority"], .string("high"))
        let cancelledJob = try await system.request(
            .GET, "/v1/generations/\(stopped["jobs"]!.arrayValue![3]["id"]!.stringValue!)"
        ).json
        XCTAssertEqual(cancelledJob["error"]?["reason"], .string("batch"))
    }

    func testCancellingABatchEndsItsJobsAndBadBatchesAreRefused() async throws {
        let system = try await GenGateSystem.start(environment: ["GENGATE_SIM_LATENCY_MS": "5000"])
        defer { system.stop() }
        let id = try await create(system, #"{"requests": [\#(requests(8))], "max_concurrency": 2}"#)
        let cancelled = try await system.request(.POST, "/v1/batches/\(id)/cancel")
        XCTAssertEqual(cancelled.status, 200)
        let ended = try await waitForEnd(system, id, timeout: .seconds(20))
        XCTAssertEqual(ended["status"], .string("cancelled"))
        XCTAssertEqual(ended["counts"]?["cancelled"], .number(8))
        XCTAssertEqual(ended["stop_reason"], .string("client"))

        let bad = try await system.request(
            .POST, "/v1/batches",
            body:
                #"{"requests": [{"model": "sim/image", "prompt": "ok"}, {"model": "sim/image"}, {"prompt": "x", "model": "nope/nope"}], "max_concurrency": 0, "priority": "urgent"}"#
        )
        XCTAssertEqual(bad.status, 400)
        let paths = bad.json["error"]?["details"]?.arrayValue?.compactMap { $0["path"]?.stringValue } ?? []
        XCTAssertEqual(Set(paths), ["max_concurrency", "priority", "requests[1].prompt", "requests[2].model"])
        let empty = try await system.request(.POST, "/v1/batches", body: #"{"requests": []}"#)
        XCTAssertEqual(empty.status, 400)
        let other = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "other"}"#).json
        let stranger = try await system.request(.GET, "/v1/batches/\(id)", key: .some(other["key"]!.stringValue!))
        XCTAssertEqual(stranger.status, 404)
    }

    /// 10,000 requests in one call: accepted at once, and another caller's job right after it
    /// is not kept waiting behind them.
    func testTenThousandRequestsAreAcceptedInOneCallAndStarveNobody() async throws {
        let system = try await GenGateSystem.start(environment: ["GENGATE_SIM_LATENCY_MS": "1000"])
        defer { system.stop() }
        let other = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "someone else"}"#).json
        let otherKey = try XCTUnwrap(other["key"]?.stringValue)
        let started = ContinuousClock.now
        let id = try await create(system, #"{"requests": [\#(requests(10_000))], "priority": "low"}"#)
        let accepted = ContinuousClock.now - started
        let submitted = ContinuousClock.now
        let theirs = try await system.submit(#"{"model": "sim/image", "prompt": "mine"}"#, key: otherKey)
        _ = try await system.waitForStatus(theirs, "completed", key: otherKey, timeout: .seconds(30))
        let waited = ContinuousClock.now - submitted
        print("a 10,000-request batch accepted in \(accepted); another caller's job done \(waited) after it")
        XCTAssertLessThan(waited, .seconds(10), "the batch's 10,000 jobs do not go first")
        let view = try await system.request(.GET, "/v1/batches/\(id)?jobs_limit=0").json
        XCTAssertEqual(view["total"], .number(10_000))
        XCTAssertNil(view["jobs"])
        let cancel = try await system.request(.POST, "/v1/batches/\(id)/cancel")
        XCTAssertEqual(cancel.status, 200)
    }
}
