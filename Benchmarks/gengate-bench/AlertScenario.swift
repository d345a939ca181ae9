import Foundation
import GRDB

extension Scenarios {
    /// What the monitor's alert rules cost: its CPU over a minute of evaluations every 15 s, with
    /// an empty store, then with `tasks` attempts and jobs ended in the last hour (100,000 is a
    /// steady 28 jobs a second; 360,000, 100 a second), all read at each evaluation.
    func alerts() async throws -> [Row] {
        let system = try await SystemUnderTest.start(
            binaries: binaries, environment: ["GENGATE_ALERT_EVALUATE_EVERY_SECONDS": "15"])
        defer { system.stop() }
        try await Task.sleep(for: .seconds(5))
        let window: Duration = .seconds(60)
        let idle = try await monitorCPU(system, over: window)
        let started = ContinuousClock.now
        try await loadEnded(tasks: tasks, into: system)
        log("alerts: \(tasks) ended jobs written in \(Int(HTTPLoad.seconds(ContinuousClock.now - started))) s")
        let loaded = try await monitorCPU(system, over: window)
        let perEvaluation = loaded / 4
        return [
            Row(
                scenario: "alert rules: monitor CPU, empty store", target: "—",
                measured: String(format: "%.1f%% of a core", idle / HTTPLoad.seconds(window) * 100), met: nil,
                notes: "a minute of evaluations every 15 s, with the event stream's heartbeats"),
            Row(
                scenario: "alert rules: monitor CPU, \(tasks.formatted()) jobs ended in the hour",
                target: "—",
                measured: String(format: "%.1f%% of a core", loaded / HTTPLoad.seconds(window) * 100), met: nil,
                notes: String(
                    format:
                        "each evaluation reads every attempt and job of the windows (1 h and 5 min): about %.0f ms of CPU each",
                    perEvaluation * 1_000)),
        ]
    }

    /// The monitor's CPU seconds (user and system) over `window`.
    func monitorCPU(_ system: SystemUnderTest, over window: Duration) async throws -> Double {
        func seconds() -> Double {
            guard let pid = system.pid(of: "monitor"),
                let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return .nan }
            // Fields after the name: state is the 3rd field of the whole line, utime the 14th.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 13, let user = Double(fields[11]), let kernel = Double(fields[12]) else { return .nan }
            return (user + kernel) / Double(sysconf(Int32(_SC_CLK_TCK)))
        }
        let before = seconds()
        try await Task.sleep(for: window)
        return seconds() - before
    }

    /// `tasks` jobs that ended in the last hour, each with its attempt: nine in ten completed.
    func loadEnded(tasks: Int, into system: SystemUnderTest) async throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(30)
        let queue = try DatabaseQueue(path: system.storePath, configuration: configuration)
        let owner = try await queue.read { db in try String.fetchOne(db, sql: "SELECT id FROM api_keys LIMIT 1") } ?? ""
        let now = Date().timeIntervalSince1970
        for batch in stride(from: 0, to: tasks, by: 10_000) {
            try await queue.write { db in
                for number in batch..<min(tasks, batch + 10_000) {
                    let ended = now - 3_500 * Double(number) / Double(tasks)
                    let id = String(format: "gen_ended%011d", number)
                    let failed = number % 10 == 0
                    let error = failed ? #"{"code":"provider_error","message":"down","retryable":true}"# : nil
                    try db.execute(
                        sql: """
                            INSERT INTO generations (id, owner_key_id, model, provider, request, n, status, version, progress,
                                attempts, error, deadline_at, created_at, updated_at)
                            VALUES (?, ?, 'sim/image', 'sim', ?, 1, ?, 5, 100, 1, ?, ?, ?, ?)
                            """,
                        arguments: [
                            id, owner,
                            #"{"model":"sim/image","prompt":"done \#(number)","n":1,"params":{},"metadata":{}}"#,
                            failed ? "failed" : "completed", error, ended + 1_800, ended - 2, ended,
                        ])
                    try db.execute(
                        sql: """
                            INSERT INTO attempts (generation_id, number, provider, client_reference, output_indexes, state,
                                error, created_at, finished_at, model) VALUES (?, 1, 'sim', ?, '[0]', ?, ?, ?, ?, 'sim/image')
                            """,
                        arguments: [id, "\(id)-a1", failed ? "failed" : "succeeded", error, ended - 2, ended])
                }
            }
        }
    }
}
