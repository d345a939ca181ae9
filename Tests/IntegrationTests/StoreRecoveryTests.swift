import Foundation
import GenGateBus
import GenGateCore
import GenGateStore
import XCTest

/// States a crash leaves behind, written straight into a running system's store, and what the
/// dispatcher's sweep makes of them; plus garbage on the bus.
final class StoreRecoveryTests: XCTestCase {
    var system: GenGateSystem!
    var store: SQLiteStore!
    var owner: APIKey!

    override func setUp() async throws {
        system = try await GenGateSystem.start(environment: [
            "GENGATE_SIM_LATENCY_MS": "200", "GENGATE_SWEEP_INTERVAL_SECONDS": "0.2",
            "GENGATE_STALE_AFTER_SECONDS": "0.5",
        ])
        store = try SQLiteStore(path: system.dataDir.appendingPathComponent("gengate.sqlite").path)
        owner = try await store.apiKey(secret: system.adminKey)
    }

    override func tearDown() {
        system?.stop()
    }

    func generation(status: GenerationStatus, n: Int = 1, created: Date = Date(), deadline: TimeInterval = 600)
        -> Generation
    {
        Generation(
            id: Identifier.make("gen", at: created), ownerKeyID: owner.id,
            request: GenerationRequest(model: "sim/image", prompt: "left behind", n: n), provider: "sim",
            status: status, version: 1, progress: 0, attempts: 0, error: nil, providerTaskID: nil, leaseOwner: nil,
            leaseExpiresAt: nil, nextActionAt: created, deadlineAt: created.addingTimeInterval(deadline),
            createdAt: created,
            updatedAt: created, phaseTimes: [:], outputs: [])
    }

    /// What a dispatcher that died mid-submission leaves: the job in `dispatching` under an
    /// expired lease, and attempt 1 on record in `state`.
    func leftInDispatching(n: Int, attempt state: Attempt.State, taskID: String? = nil) async throws -> Generation {
        let past = Date().addingTimeInterval(-30)
        let left = generation(status: .pending, n: n, created: past)
        try await store.insert(
            left,
            event: Event(.generationCreated(.init(model: "sim/image", provider: "sim", n: 1)), generationID: left.id))
        // A lease that runs out a second from now: long enough to set the scene before the
        // running sweep may take the job over.
        let claimed = try await store.claim(
            id: left.id, statuses: [.pending], owner: "dispatcher-dead",
            leaseUntil: Date().addingTimeInterval(1), now: past)
        var change = Transition.of(try XCTUnwrap(claimed), to: .dispatching, at: past)
        change.attempts = 1
        let dispatching = try await store.transition(change)
        try await store.recordAttempt(
            Attempt(
                generationID: left.id, number: 1, provider: "sim", clientReference: "\(left.id)-a1",
                providerTaskID: taskID, outputIndexes: Array(0..<n), state: state, error: nil,
                createdAt: past, finishedAt: nil))
        return try XCTUnwrap(dispatching)
    }

    /// Rule 4 (docs/ARCHITECTURE.md): a dispatcher died after recording an attempt, before the provider
    /// answered. The sim cannot be asked whether the submission arrived, so the job is submitted
    /// again and the possible double charge is counted.
    func testAnInterruptedSubmissionIsResubmittedAndCountedAsAPossibleDoubleCharge() async throws {
        let left = try await leftInDispatching(n: 2, attempt: .submitting)
        let done = try await system.waitForStatus(left.id, "completed", timeout: .seconds(20))
        XCTAssertEqual(done["attempts"]?.intValue, 2)
        guard case .array(let outputs)? = done["outputs"] else { return XCTFail("\(done)") }
        XCTAssertEqual(outputs.count, 2)
        let attempts = try await store.attempts(generationID: left.id)
        XCTAssertEqual(attempts.map(\.state), [.abandoned, .succeeded])

        let metrics = try await system.metrics(containing: "gengate_possible_double_charges")
        XCTAssertTrue(metrics.contains(#"gengate_possible_double_charges{provider="sim"} 1"#), metrics)
    }

    /// A job whose submission was recorded with its task id (the dispatcher died just after) is
    /// picked up where it was: polled, not submitted again.
    func testARecordedSubmissionIsPolledNotResubmitted() async throws {
        let submitted = Int64(Date().addingTimeInterval(-30).timeIntervalSince1970 * 1_000)
        let task = "simt_01m82a9dd9hakyymdpzm5nc16q.\(submitted).\(submitted + 100).o"
        let left = try await leftInDispatching(n: 1, attempt: .submitted, taskID: task)
        let done = try await system.waitForStatus(left.id, "completed", timeout: .seconds(20))
        XCTAssertEqual(done["attempts"]?.intValue, 1, "no second submission")
    }

    /// A poller on another host stopped beating (its host was lost) while it held a status check
    /// with ten minutes of lease left: the sweep voids the lease as soon as the heartbeat is older
    /// than the poller's own `silent_after`, and the job completes in seconds, not ten minutes.
    /// A job held mid-submission by a silent dispatcher is left to its lease running out instead,
    /// since a process taken for gone may be alive and paying for the call.
    func testAJobHeldByAProcessWhoseHeartbeatStoppedMovesOnInSeconds() async throws {
        let now = Date()
        let submitted = Int64(now.addingTimeInterval(-5).timeIntervalSince1970 * 1_000)
        let task = "simt_01m82a9dd9hakyymdpzm5nc16q.\(submitted).\(submitted + 100).o"
        let poller = "poller-4242@lost-host"
        // Taken, submitted and left running under the lost poller's lease, well before the sweep
        // would re-drive it (stale after 0.5 s).
        let checking = generation(status: .pending, created: now)
        try await store.insert(
            checking,
            event: Event(
                .generationCreated(.init(model: "sim/image", provider: "sim", n: 1)), generationID: checking.id))
        let claimed = try await store.claim(
            id: checking.id, statuses: [.pending], owner: poller, leaseUntil: now.addingTimeInterval(600), now: now)
        var dispatch = Transition.of(try XCTUnwrap(claimed), to: .dispatching, at: now)
        dispatch.attempts = 1
        dispatch.newAttempt = Attempt(
            generationID: checking.id, number: 1, provider: "sim", clientReference: "\(checking.id)-a1",
            providerTaskID: task, outputIndexes: [0], state: .submitted, error: nil, createdAt: now, finishedAt: nil)
        let dispatching = try await store.transition(dispatch)
        var run = Transition.of(try XCTUnwrap(dispatching), to: .running, at: now)
        run.providerTaskID = .some(task)
        run.nextActionAt = .some(now)
        let running = try await store.transition(run)
        XCTAssertEqual(running?.leaseOwner, poller)

        let dispatcher = "dispatcher-4242@lost-host"
        let submitting = try await leftInDispatching(n: 1, attempt: .submitting)
        let held = try await store.claim(
            id: submitting.id, statuses: [.dispatching], owner: dispatcher, leaseUntil: now.addingTimeInterval(600),
            now: now)
        for instance in [poller, dispatcher] {
            try await store.present(instance: instance, at: now.addingTimeInterval(-11), silentAfter: 10)
        }

        let started = ContinuousClock.now
        let done = try await system.waitForStatus(checking.id, "completed", timeout: .seconds(20))
        XCTAssertEqual(done["attempts"]?.intValue, 1)
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(10), "moved on at once, not after the lease")
        if held != nil {
            let still = try await store.generation(id: submitting.id)
            XCTAssertEqual(still?.leaseOwner, dispatcher, "a submission's lease is left to run out")
            XCTAssertEqual(still?.status, .dispatching)
        }
    }

    func testAJobPastItsDeadlineFailsWithTaskTimeout() async throws {
        let stuck = generation(status: .pending, created: Date().addingTimeInterval(-120), deadline: 60)
        try await store.insert(
            stuck,
            event: Event(.generationCreated(.init(model: "sim/image", provider: "sim", n: 1)), generationID: stuck.id))
        let failed = try await system.waitForStatus(stuck.id, "failed", timeout: .seconds(10))
        XCTAssertEqual(failed["error"]?["code"]?.stringValue, "task_timeout")
        XCTAssertEqual(failed["error"]?["retryable"], .bool(false))
    }

    func testGarbageOnTheBusIsRejectedWithoutHarm() async throws {
        let dispatcher = try XCTUnwrap(system.pid(of: "dispatcher"))
        let monitor = try XCTUnwrap(system.pid(of: "monitor"))
        let context = try ZMQContext()
        let run = system.dataDir.appendingPathComponent("run").path
        let work = try await BusSocket.open(
            context: context, type: .push, name: "garbage", endpoints: [.connect("ipc://\(run)/dispatch-in.sock")])
        let events = try await BusSocket.open(
            context: context, type: .pub, name: "garbage-events",
            endpoints: [.connect("ipc://\(run)/events-in.sock")])
        try await Task.sleep(for: .milliseconds(300))  // let the PUB connection settle
        let future =
            #"{"v":99,"type":"work.dispatch","id":"m","at":"2026-01-01T00:00:00.000Z","source":"x","payload":{}}"#
        for frames in [
            [Data("not json".utf8)], [Data(future.utf8)], [Data(), Data("two frames".utf8)],
            [Data(repeating: 0xff, count: 10_000)],
        ] {
            work.send(frames)
            events.send([Data("generation.completed".utf8)] + frames)
        }
        let metrics = try await system.metrics(containing: "gengate_bus_rejected_messages_total")
        XCTAssertTrue(metrics.contains(#"gengate_bus_rejected_messages_total{channel="events"}"#), metrics)
        await work.close()
        await events.close()

        // Both services are still the same processes, and still work.
        let id = try await system.submit(#"{"model": "sim/text", "prompt": "after the garbage"}"#)
        _ = try await system.waitForStatus(id, "completed")
        XCTAssertEqual(system.pid(of: "dispatcher"), dispatcher)
        XCTAssertEqual(system.pid(of: "monitor"), monitor)
        let log = try String(contentsOf: system.logFile, encoding: .utf8)
        XCTAssertTrue(log.contains("schema version 99"), "an unknown version is rejected loudly")
    }
}
