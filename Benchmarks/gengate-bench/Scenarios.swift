import Foundation
import GRDB
import GenGateBus
import GenGateCore
import GenGateLocalPorts

/// One row of the results table.
struct Row {
    var scenario: String
    var target: String
    var measured: String
    var met: Bool?
    var notes: String
}

/// The benchmark scenarios, each against its own freshly started system.
struct Scenarios: Sendable {
    let binaries: URL
    let duration: Duration
    let tasks: Int
    /// The curves drawn beside the tables.
    let figures: Figures
    /// LiteLLM's proxy command (the overhead scenario's comparison).
    let litellm: String
    /// Runs the store on this PostgreSQL server instead of SQLite (submit, e2e, inflight, scale).
    var postgres: LocalPostgres? = nil
    let log: @Sendable (String) -> Void

    /// Said after a scenario's name when the store is not the default.
    var onStore: String { postgres == nil ? "" : ", PostgreSQL store" }

    /// Durable `POST /v1/generations`: as fast as 64 clients can, then 5,000/s offered.
    func submit() async throws -> [Row] {
        let system = try await SystemUnderTest.start(
            binaries: binaries, environment: ["GENGATE_SIM_LATENCY_MS": "1000"], postgres: postgres)
        defer { system.stop() }
        let body: @Sendable (Int) -> String = { #"{"model": "sim/text", "prompt": "bench \#($0)"}"# }
        _ = await HTTPLoad.closedLoop(system, clients: 64, duration: .seconds(2), body: body)  // warm up
        let closed = await HTTPLoad.closedLoop(system, clients: 64, duration: duration, body: body)
        log(
            "submit closed loop: \(Int(closed.rate))/s, p50 \(ms(closed.latencies.quantile(0.5))), p99 \(ms(closed.latencies.quantile(0.99))), failures \(closed.failures)"
        )
        try await Task.sleep(for: .seconds(3))
        let open = await HTTPLoad.openLoop(system, rate: 5_000, duration: duration, body: body)
        let openP99 = open.latencies.quantile(0.99)
        log(
            "submit open loop 5,000/s: answered \(Int(open.rate))/s, p50 \(ms(open.latencies.quantile(0.5))), p99 \(ms(openP99)), failures \(open.failures)"
        )
        return [
            Row(
                scenario: "submit, 64 clients (closed loop)\(onStore)", target: "≥ 10,000/s",
                measured: "\(Int(closed.rate))/s",
                met: closed.rate >= 10_000,
                notes:
                    "p50 \(ms(closed.latencies.quantile(0.5))), p99 \(ms(closed.latencies.quantile(0.99))), \(closed.latencies.count) accepted, \(closed.failures) failed"
            ),
            Row(
                scenario: "submit, 5,000/s offered (open loop)\(onStore)", target: "p99 ≤ 10 ms",
                measured: "p99 \(ms(openP99))",
                met: openP99 <= 0.010,
                notes:
                    "p50 \(ms(open.latencies.quantile(0.5))), p99.9 \(ms(open.latencies.quantile(0.999))), \(Int(open.rate))/s answered, \(open.failures) failed"
            ),
        ]
    }

    /// Submit → completed with a provider that answers at once, n = 1.
    func endToEnd() async throws -> [Row] {
        // The default image schedule checks first after 0.5 s, which alone is twice the latency
        // target: this scenario measures the engine, so it checks as early as the provider allows.
        let config =
            #"{"jobs": {"model_check_schedules": {"sim/image": {"first_seconds": 0.01, "factor": 1.5, "max_seconds": 1, "jitter": 0.2}}}}"#
        let system = try await SystemUnderTest.start(
            binaries: binaries, environment: ["GENGATE_SIM_LATENCY_MS": "0"], config: config, postgres: postgres)
        defer { system.stop() }
        let body: @Sendable (Int) -> String = {
            #"{"model": "sim/image", "prompt": "e2e \#($0)", "width": 16, "height": 16}"#
        }
        let closed = await HTTPLoad.closedLoop(system, clients: 64, duration: duration, body: body)
        let closedDone = try await waitForCompletion(system, ids: closed.ids)
        log(
            "e2e closed loop: \(closed.ids.count) submitted, \(Int(closedDone.rate))/s completed, p99 \(ms(closedDone.latencies.quantile(0.99)))"
        )
        try await Task.sleep(for: .seconds(2))
        let open = await HTTPLoad.openLoop(system, rate: 1_000, duration: duration, body: body)
        let openDone = try await waitForCompletion(system, ids: open.ids)
        let p99 = openDone.latencies.quantile(0.99)
        log(
            "e2e open loop 1,000/s: \(open.ids.count) submitted, p50 \(ms(openDone.latencies.quantile(0.5))), p99 \(ms(p99))"
        )
        return [
            Row(
                scenario: "end to end, 64 clients, zero-latency provider, n=1\(onStore)", target: "≥ 2,000 jobs/s",
                measured: "\(Int(closedDone.rate)) jobs/s", met: closedDone.rate >= 2_000,
                notes:
                    "\(closedDone.latencies.count) of \(closed.ids.count) completed; p50 \(ms(closedDone.latencies.quantile(0.5))), p99 \(ms(closedDone.latencies.quantile(0.99)))"
            ),
            Row(
                scenario: "end to end, 1,000/s offered\(onStore)", target: "p99 ≤ 250 ms", measured: "p99 \(ms(p99))",
                met: p99 <= 0.25,
                notes:
                    "\(openDone.latencies.count) of \(open.ids.count) completed; p50 \(ms(openDone.latencies.quantile(0.5))); first check after 10 ms ± 20 %"
            ),
        ]
    }

    struct Completion {
        var latencies: [Double]  // completed_at - created_at
        var rate: Double  // completed per second, first created to last completed
    }

    /// Waits until `ids` are all terminal (or 120 s pass), then reads their times from the store.
    func waitForCompletion(_ system: SystemUnderTest, ids: [String]) async throws -> Completion {
        let queue = system.postgres == nil ? try DatabaseQueue(path: system.storePath, configuration: readOnly()) : nil
        let deadline = ContinuousClock.now + .seconds(120)
        let wanted = Set(ids)
        var rows: [(Double, Double?)] = []
        while ContinuousClock.now < deadline {
            if let queue {
                rows = try await queue.read { db in
                    try Row2.fetchAll(db, ids: wanted)
                }
            } else if let (server, database) = system.postgres {
                rows = try server.psql("SELECT id, created_at, completed_at FROM generations", database: database)
                    .split(separator: "\n").compactMap { line in
                        let fields = line.split(separator: "|", omittingEmptySubsequences: false)
                        guard fields.count == 3, wanted.contains(String(fields[0])), let created = Double(fields[1])
                        else { return nil }
                        return (created, Double(fields[2]))
                    }
            }
            if rows.count == wanted.count && rows.allSatisfy({ $0.1 != nil }) { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        let done = rows.compactMap { created, completed in completed.map { ($0, $0 - created) } }
        let first = rows.map(\.0).min() ?? 0
        let last = done.map(\.0).max() ?? first
        return Completion(latencies: done.map(\.1), rate: Double(done.count) / max(last - first, 1e-9))
    }

    /// 100,000 provider tasks of 10 minutes in flight at once, checked by one poller.
    func inFlight() async throws -> [Row] {
        let system = try await SystemUnderTest.start(
            binaries: binaries,
            environment: [
                "GENGATE_SIM_LATENCY_MS": "600000", "GENGATE_HEARTBEAT_SECONDS": "2",
            ], postgres: postgres)
        defer { system.stop() }
        // Steady state of 100,000 ten-minute tasks: written straight into the store as the
        // poller leaves them mid-flight (submitted 5 to 7 minutes ago, checked 8 times, so on the
        // video schedule's 2-minute interval, next checks spread over 2 minutes from 30 s on, once written). This
        // measures the poller; the submit scenarios measure the way in. The poller's reports are
        // collected from before the tasks exist, so every check is counted.
        let context = try ZMQContext()
        let subscriber = try await EventSubscriber.connect(
            context: context, endpoint: "tcp://127.0.0.1:\(system.eventsPort)",
            topics: ["poller.checks"])
        try await Task.sleep(for: .seconds(1))  // the subscription reaches the forwarder
        let started = ContinuousClock.now
        let firstChecks = try await load(tasks: tasks, into: system)
        log(
            "in flight: \(firstChecks.count) running video tasks written in \(Int(HTTPLoad.seconds(ContinuousClock.now - started))) s"
        )
        let window: Duration = .seconds(Int64(min(120, max(60, tasks / 500))))
        var calls = 0
        var buckets: [Double] = []
        var bounds: [Double] = []
        var worst = 0.0
        var rss = 0.0
        let sampler = Task {
            var peak = 0.0
            while !Task.isCancelled {
                peak = max(peak, system.rss(of: "poller") ?? 0)
                try? await Task.sleep(for: .seconds(1))
            }
            return peak
        }
        // The poller reports every 2 s; collect its reports for the window.
        let reports = Task {
            var reports: [EventPayload.PollerChecks] = []
            for await result in subscriber.events {
                if case .success(let received) = result, case .pollerChecks(let checks) = received.event.payload {
                    reports.append(checks)
                }
            }
            return reports
        }
        try await Task.sleep(for: window)
        await subscriber.close()
        for report in await reports.value {
            calls += report.statusCalls
            worst = max(worst, report.latenessMax)
            if buckets.isEmpty { buckets = Array(repeating: 0, count: report.latenessCounts.count) }
            bounds = report.latenessBounds
            for (index, count) in report.latenessCounts.enumerated() where index < buckets.count {
                buckets[index] += Double(count)
            }
        }
        let windowEnd = Date()
        sampler.cancel()
        rss = await sampler.value
        context.terminate()

        // What the schedule asks for in the window: each task's next check, then one every 120 s.
        let end = windowEnd.timeIntervalSince1970
        let expected = firstChecks.reduce(0.0) { sum, first in
            first < end ? sum + 1 + ((end - first) / 120).rounded(.down) : sum
        }
        let total = buckets.reduce(0, +)
        var p99 = Double.nan
        var seen = 0.0
        for (index, count) in buckets.enumerated() {
            seen += count
            if seen >= total * 0.99 {
                p99 = index < bounds.count ? bounds[index] : worst
                break
            }
        }
        let ratio = expected > 0 ? Double(calls) / expected : .nan
        log(
            "in flight: window \(Int(HTTPLoad.seconds(window))) s, \(calls) status calls vs \(Int(expected)) scheduled, lateness p99 ≤ \(p99) s, max \(worst) s, poller RSS \(Int(rss)) MiB"
        )
        return [
            Row(
                scenario: "\(tasks) tasks of 10 min in flight, one poller\(onStore): poller memory",
                target: "RSS ≤ 300 MB",
                measured: "\(Int(rss)) MiB", met: rss <= 300,
                notes:
                    "peak over a \(Int(HTTPLoad.seconds(window))) s window; steady state: tasks mid-flight, checked every 2 min"
            ),
            Row(
                scenario: "… check lateness", target: "p99 ≤ 1 s", measured: "p99 ≤ \(String(format: "%.2f", p99)) s",
                met: p99 <= 1,
                notes: "\(Int(total)) checks, max \(String(format: "%.2f", worst)) s (histogram bucket bound)"),
            Row(
                scenario: "… status calls", target: "≤ 1.2 × the schedule", measured: String(format: "%.2f ×", ratio),
                met: ratio <= 1.2,
                notes:
                    "\(calls) calls vs \(Int(expected)) scheduled in the window (video schedule at its 120 s interval, ±20 % jitter)"
                    + (ratio < 0.9 ? "; fewer because the poller fell behind (see lateness)" : "")),
        ]
    }

    /// Writes `tasks` running generations (sim/video, a 10-minute sim task each, attempt 1
    /// submitted) as the poller leaves them mid-flight. Returns each task's next check time.
    func load(tasks: Int, into system: SystemUnderTest) async throws -> [Double] {
        if let (server, database) = system.postgres {
            return try Self.loadPostgres(tasks: tasks, into: server, database: database)
        }
        var configuration = Configuration()
        configuration.busyMode = .timeout(30)
        let queue = try DatabaseQueue(path: system.storePath, configuration: configuration)
        let owner = try await queue.read { db in try String.fetchOne(db, sql: "SELECT id FROM api_keys LIMIT 1") } ?? ""
        let now = Date().timeIntervalSince1970
        var firstChecks: [Double] = []
        for batch in stride(from: 0, to: tasks, by: 10_000) {
            let checks = try await queue.write { db -> [Double] in
                var checks: [Double] = []
                for number in batch..<min(tasks, batch + 10_000) {
                    let submitted = now - 420 + 120 * Double(number) / Double(tasks)
                    let id = String(format: "gen_bench%011d", number)
                    let submittedMs = Int64(submitted * 1_000)
                    let task = String(format: "simt_bench%016d", number) + ".\(submittedMs).\(submittedMs + 600_000).o"
                    let next = now + 30 + Double.random(in: 0..<120)  // after the writing is done
                    checks.append(next)
                    try db.execute(
                        sql: """
                            INSERT INTO generations (id, owner_key_id, model, provider, request, n, status, version, progress,
                                attempts, provider_task_id, next_action_at, deadline_at, created_at, updated_at, dispatching_at,
                                running_at, checks)
                            VALUES (?, ?, 'sim/video', 'sim', ?, 1, 'running', 3, 0, 1, ?, ?, ?, ?, ?, ?, ?, 8)
                            """,
                        arguments: [
                            id, owner,
                            #"{"model":"sim/video","prompt":"long \#(number)","n":1,"params":{},"metadata":{}}"#,
                            task, next, submitted + 1_800, submitted, submitted, submitted, submitted,
                        ])
                    try db.execute(
                        sql: """
                            INSERT INTO attempts (generation_id, number, provider, client_reference, provider_task_id,
                                output_indexes, state, created_at) VALUES (?, 1, 'sim', ?, ?, '[0]', 'submitted', ?)
                            """, arguments: [id, "\(id)-a1", task, submitted])
                }
                return checks
            }
            firstChecks += checks
        }
        return firstChecks
    }

    /// `load` on PostgreSQL: the same rows, made by the server (`generate_series`).
    static func loadPostgres(tasks: Int, into server: LocalPostgres, database: String) throws -> [Double] {
        let now = Date().timeIntervalSince1970
        let made = try server.psql(
            """
            WITH made AS (
                INSERT INTO generations (id, owner_key_id, model, provider, request, n, status, version, progress,
                    attempts, provider_task_id, next_action_at, deadline_at, created_at, updated_at, dispatching_at,
                    running_at, checks)
                SELECT 'gen_bench' || lpad(i::text, 11, '0'), (SELECT id FROM api_keys LIMIT 1), 'sim/video', 'sim',
                    '{"model":"sim/video","prompt":"long ' || i || '","n":1,"params":{},"metadata":{}}', 1, 'running',
                    3, 0, 1,
                    'simt_bench' || lpad(i::text, 16, '0') || '.' || floor(s * 1000)::bigint || '.'
                        || (floor(s * 1000)::bigint + 600000) || '.o',
                    \(now) + 30 + random() * 120, s + 1800, s, s, s, s, 8
                FROM (SELECT i, \(now) - 420 + 120.0 * i / \(tasks) AS s FROM generate_series(0, \(tasks - 1)) i) t
                RETURNING next_action_at)
            SELECT next_action_at FROM made
            """, database: database)
        _ = try server.psql(
            """
            INSERT INTO attempts (generation_id, number, provider, client_reference, provider_task_id, output_indexes,
                state, created_at)
            SELECT id, 1, 'sim', id || '-a1', provider_task_id, '[0]', 'submitted', created_at
            FROM generations WHERE id LIKE 'gen_bench%'
            """, database: database)
        return made.split(separator: "\n").compactMap { Double($0) }
    }

    /// Memory of each service at rest.
    func idle() async throws -> [Row] {
        let system = try await SystemUnderTest.start(binaries: binaries, environment: [:])
        defer { system.stop() }
        try await Task.sleep(for: .seconds(5))
        var rows: [Row] = []
        for service in ["api-ingress", "dispatcher", "poller", "uploader", "monitor"] {
            let rss = system.rss(of: service) ?? .nan
            let shared = system.sharedMemory(of: service)
            rows.append(
                Row(
                    scenario: "idle: \(service)", target: "≤ 30 MB RSS", measured: String(format: "%.1f MiB", rss),
                    met: rss <= 30,
                    notes: String(
                        format: "5 s after start, no jobs; PSS %.1f MiB, private dirty %.1f MiB (RSS counts the "
                            + "Swift runtime and Foundation pages all five services share)",
                        shared?.pss ?? .nan, shared?.privateDirty ?? .nan)))
        }
        return rows
    }

    func readOnly() -> Configuration {
        var configuration = Configuration()
        configuration.readonly = true
        configuration.busyMode = .timeout(10)
        return configuration
    }

    func ms(_ seconds: Double) -> String { String(format: "%.1f ms", seconds * 1_000) }
}

/// Creation and completion times of generations, by id.
enum Row2 {
    static func fetchAll(_ db: Database, ids: Set<String>) throws -> [(Double, Double?)] {
        var rows: [(Double, Double?)] = []
        for chunk in Array(ids).chunked(500) {
            let marks = Array(repeating: "?", count: chunk.count).joined(separator: ",")
            for row in try GRDB.Row.fetchAll(
                db, sql: "SELECT created_at, completed_at FROM generations WHERE id IN (\(marks))",
                arguments: StatementArguments(chunk))
            {
                rows.append((row["created_at"], row["completed_at"]))
            }
        }
        return rows
    }
}

extension Array {
    func chunked(_ size: Int) -> [[Element]] {
        stride(from: 0, to: count, by: size).map { Array(self[$0..<Swift.min($0 + size, count)]) }
    }
}
