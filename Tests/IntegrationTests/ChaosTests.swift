import Foundation
import GRDB
import GenGateCore
import XCTest

@testable import GenGateStore

/// The whole stack against faulty provider simulators while services are SIGKILLed at random,
/// checked the way a user would: every job ends, none is lost, each completed one has exactly its
/// n readable outputs, and every provider task GenGate cannot account for is counted as a
/// possible double charge.
///
/// Short by default (`.ci/run`); the long form is the same test with more jobs and kills:
/// `GENGATE_CHAOS_JOBS=600 GENGATE_CHAOS_KILL_SECONDS=300 swift test --skip-build --filter ChaosTests`.
/// It prints its figures on a `chaos:` line.
final class ChaosTests: XCTestCase {
    typealias Sim = ProviderSimulatorTests.SimulatorProcess

    static let faults =
        #"{"task_seconds": 1, "p_429": 0.05, "retry_after_s": 1, "p_5xx": 0.05, "p_reset": 0.03, "p_timeout": 0.01, "p_malformed": 0.03, "p_stuck": 0.01, "p_empty": 0.02, "p_lost_answer": 0.03}"#

    /// What a job was submitted as.
    struct Submitted {
        var id: String
        var model: String
        var n: Int
    }

    func testEveryJobEndsWithItsOutputsAndNothingIsPaidForUnnoticedWhileServicesAreKilled() async throws {
        let environment = ProcessInfo.processInfo.environment
        let jobCount = Int(environment["GENGATE_CHAOS_JOBS"] ?? "") ?? 90
        let killSeconds = Double(environment["GENGATE_CHAOS_KILL_SECONDS"] ?? "") ?? 30
        // Long enough for the whole load to get through the providers' limits while the kills go on.
        let deadline = Int(max(60, killSeconds + 60))

        let replicate = try await Sim(provider: "replicate", key: "r8_test", knobs: Self.faults)
        defer { replicate.stop() }
        let flux = try await Sim(provider: "flux", key: "bfl_test", knobs: Self.faults)
        defer { flux.stop() }
        let klingSecret = ProviderSimulatorTests.klingSecret
        let kling = try await Sim(provider: "kling", key: "ak_test:\(klingSecret)", knobs: Self.faults)
        defer { kling.stop() }
        let sims = ["replicate": replicate, "flux": flux, "kling": kling]

        // Short timeouts and back-offs so a run takes a minute, not an hour; a 5 s lease so a
        // killed dispatcher's submissions are taken over quickly.
        let provider = #"{"request_timeout_seconds": 3, "connect_timeout_seconds": 2}"#
        let system = try await GenGateSystem.start(
            environment: sims.values.reduce(into: [:]) { $0.merge($1.environment) { $1 } },
            config: """
                {"model_aliases": {"chaos-image": ["flux/flux-pro-1.1", "replicate/black-forest-labs/flux-schnell"]},
                 "providers": {"replicate": \(provider), "flux": \(provider), "kling": \(provider)},
                 "jobs": {"lease_seconds": 5, "retry_base_seconds": 0.5, "retry_max_seconds": 4,
                          "rate_limit_base_seconds": 2, "max_attempts": 6,
                          "check_schedules": {"image": {"first_seconds": 0.5, "factor": 1.5, "max_seconds": 2, "jitter": 0.1}}}}
                """)
        defer { system.stop() }

        let started = ContinuousClock.now
        // The killer runs while jobs are submitted and worked on.
        let killer = Self.startKilling(system, for: killSeconds)
        let models = [
            "replicate/black-forest-labs/flux-schnell", "kling/image/kling-v2", "chaos-image",
        ]
        var submitted: [Submitted] = []
        var resubmissions = 0
        for index in 0..<jobCount {
            let model = models[index % models.count]
            let n = 1 + index % 4
            let (id, tries) = try await Self.submit(
                system,
                #"{"model": "\#(model)", "prompt": "chaos \#(index)", "n": \#(n), "deadline_seconds": \#(deadline)}"#)
            resubmissions += tries - 1
            submitted.append(Submitted(id: id, model: model, n: n))
            try await Task.sleep(for: .milliseconds(Int(killSeconds * 500) / max(1, jobCount)))
        }
        let kills = try await killer.value

        // Every job ends.
        var ended: [String: JSONValue] = [:]
        let giveUp = ContinuousClock.now + .seconds(deadline + 120)
        while ended.count < submitted.count && ContinuousClock.now < giveUp {
            for job in submitted where ended[job.id] == nil {
                guard let answer = try? await system.request(.GET, "/v1/generations/\(job.id)"), answer.status == 200
                else { continue }
                let status = answer.json["status"]?.stringValue ?? ""
                if ["completed", "failed", "cancelled"].contains(status) { ended[job.id] = answer.json }
            }
            if ended.count < submitted.count { try await Task.sleep(for: .milliseconds(500)) }
        }
        let elapsed = ContinuousClock.now - started
        let unfinished = submitted.filter { ended[$0.id] == nil }
        XCTAssertEqual(unfinished.count, 0, "jobs that never ended: \(unfinished.map(\.id).prefix(10))")

        // Completed jobs have exactly n stored outputs, each readable and as recorded.
        var completed = 0
        var failures: [String: Int] = [:]
        var messages: [String: String] = [:]
        var failedModels: [String: Int] = [:]
        var retries = 0
        var fallbacks = 0
        for job in submitted {
            guard let json = ended[job.id] else { continue }
            let history = json["attempt_history"]?.arrayValue ?? []
            retries += history.filter { $0["state"]?.stringValue != "succeeded" }.count
            if Set(history.compactMap { $0["provider"]?.stringValue }).count > 1 { fallbacks += 1 }
            switch json["status"]?.stringValue {
            case "completed":
                completed += 1
                let outputs = json["outputs"]?.arrayValue ?? []
                XCTAssertEqual(outputs.map { $0["index"]?.intValue ?? -1 }, Array(0..<job.n), "\(job.id)")
                for output in outputs {
                    let bytes = try await system.request(
                        .GET, "/v1/generations/\(job.id)/outputs/\(output["index"]?.intValue ?? -1)")
                    XCTAssertEqual(bytes.status, 200, job.id)
                    XCTAssertEqual(Digest.sha256Hex(bytes.body), output["sha256"]?.stringValue, job.id)
                }
            default:
                let code = json["error"]?["code"]?.stringValue ?? "?"
                failures[code, default: 0] += 1
                failedModels["\(job.model) \(code) after \(history.count) attempts", default: 0] += 1
                messages[code] = "\(job.model): \(json["error"]?["message"]?.stringValue ?? "")"
            }
        }
        // Most jobs succeed despite the faults; those that fail do for a reason a fault explains.
        XCTAssertGreaterThan(completed, submitted.count * 7 / 10, "failures: \(failures)")
        for code in failures.keys {
            XCTAssertTrue(
                ["task_timeout", "provider_error", "rate_limited", "provider_unavailable", "provider_timeout"].contains(
                    code), "unexpected failure \(code): \(messages[code] ?? "")")
        }

        // Nothing paid for unnoticed: every task a simulator made is a task GenGate has on
        // record, or one it counted as a possible double charge.
        let store = try SQLiteStore(path: system.dataDir.appendingPathComponent("gengate.sqlite").path)
        let known = try await store.pool.read { db in
            try Dictionary(
                uniqueKeysWithValues: Row.fetchAll(
                    db,
                    sql:
                        "SELECT provider, COUNT(*) AS known FROM attempts WHERE provider_task_id IS NOT NULL GROUP BY provider"
                ).map { ($0["provider"] as String, $0["known"] as Int) })
        }
        let counted = try await store.possibleDoubleCharges()
        var paidTwice = 0
        var duplicates = 0
        for (name, sim) in sims {
            let stats = try await sim.stats()
            let made = stats["submissions"]?.intValue ?? 0
            let unaccounted = made - (known[name] ?? 0)
            XCTAssertGreaterThanOrEqual(unaccounted, 0, "\(name): more tasks on record than made")
            XCTAssertLessThanOrEqual(
                unaccounted, counted[name] ?? 0,
                "\(name): \(unaccounted) tasks made but not on record, \(counted[name] ?? 0) counted: \(stats)")
            XCTAssertEqual(stats["duplicate_submissions"]?.intValue, 0, "\(name): a client reference sent twice")
            paidTwice += unaccounted
            duplicates += stats["duplicate_submissions"]?.intValue ?? 0
        }
        let restart = kills.map(\.restart).sorted()
        func seconds(_ duration: Duration?) -> String {
            guard let duration else { return "-" }
            return String(
                format: "%.2f", Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
        }
        print(
            "chaos: jobs=\(submitted.count) completed=\(completed) failed=\(failures) kills=\(kills.count) "
                + "(\(Dictionary(grouping: kills, by: \.service).mapValues(\.count))) lost=\(unfinished.count) "
                + "duplicates=\(duplicates) unaccounted_tasks=\(paidTwice) counted_double_charges=\(counted.values.reduce(0, +)) "
                + "retries=\(retries) fallback_jobs=\(fallbacks) resubmitted_requests=\(resubmissions) "
                + "restart_p50=\(seconds(restart.isEmpty ? nil : restart[restart.count / 2]))s "
                + "restart_max=\(seconds(restart.last))s elapsed=\(seconds(elapsed))s failed_by_model=\(failedModels)")
    }

    /// One kill: which service, and how long until its replacement was up.
    struct Kill {
        var service: String
        var restart: Duration
    }

    static func startKilling(_ system: GenGateSystem, for seconds: Double) -> Task<[Kill], any Error> {
        Task { try await killAtRandom(system, for: seconds) }
    }

    /// SIGKILLs a random service (dispatcher, poller, uploader or api-ingress) every second or
    /// two for `seconds`, each time waiting for the supervisor to start its replacement.
    static func killAtRandom(_ system: GenGateSystem, for seconds: Double) async throws -> [Kill] {
        var kills: [Kill] = []
        let end = ContinuousClock.now + .milliseconds(Int(seconds * 1_000))
        while ContinuousClock.now < end {
            try await Task.sleep(for: .milliseconds(Int.random(in: 1_000...2_000)))
            let service = ["dispatcher", "poller", "uploader", "api-ingress"].randomElement()!
            guard let pid = system.pid(of: service), kill(pid, 0) == 0 else { continue }
            let killed = ContinuousClock.now
            kill(pid, SIGKILL)
            // Up again: a new process, alive (the supervisor backs off when one dies often).
            while ContinuousClock.now - killed < .seconds(30) {
                if let next = system.pid(of: service), next != pid, kill(next, 0) == 0 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            kills.append(Kill(service: service, restart: ContinuousClock.now - killed))
        }
        return kills
    }

    /// Submits as a careful client does while the ingress may be down: with an Idempotency-Key,
    /// trying again (the same key) until it answers 202. Returns the job's id and the tries.
    static func submit(_ system: GenGateSystem, _ body: String) async throws -> (String, Int) {
        let key = UUID().uuidString
        for attempt in 1...600 {
            if let answer = try? await system.request(
                .POST, "/v1/generations", body: body, headers: [("Idempotency-Key", key)]),
                answer.status == 202, let id = answer.json["id"]?.stringValue
            {
                return (id, attempt)
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw SystemError("the ingress never took the submission")
    }
}
