import Foundation
import GenGateLocalPorts

extension Scenarios {
    /// End-to-end throughput as dispatchers, pollers and uploaders are added: the bus on TCP, a
    /// first `gengate up` with every service (one of each), then `gengate up --services
    /// dispatcher,poller,uploader` processes sharing its store and bus, as worker hosts would,
    /// for 1, 2 and 4 of each. 64 clients submit for the load phase; the provider (sim) answers
    /// after 200 ms.
    func scale(workers counts: [Int] = [1, 2, 4]) async throws -> [Row] {
        var rows: [Row] = []
        var baseline: Double?
        var curve = Figure.Series(label: postgres == nil ? "SQLite" : "PostgreSQL", x: [], y: [])
        for count in counts {
            let busPort = try FreePorts.consecutive(8)
            let environment = [
                "GENGATE_SIM_LATENCY_MS": "200", "GENGATE_BUS_HOST": "127.0.0.1", "GENGATE_BUS_PORT": "\(busPort)",
            ]
            let config =
                #"{"jobs": {"model_check_schedules": {"sim/image": {"first_seconds": 0.1, "factor": 1.5, "max_seconds": 1, "jitter": 0.2}}}}"#
            let system = try await SystemUnderTest.start(
                binaries: binaries, environment: environment, config: config, postgres: postgres)
            // The workers share the first host's store: its database, or its SQLite file.
            let store = system.storeURL.map { ["GENGATE_STORE_URL": $0] } ?? ["GENGATE_STORE_PATH": system.storePath]
            defer { system.stop() }
            var extra: [(Process, URL)] = []
            defer {
                for (process, directory) in extra {
                    process.stop(within: 40)
                    try? FileManager.default.removeItem(at: directory)
                }
            }
            for _ in 1..<count {
                let directory = URL(fileURLWithPath: "/tmp/ggbench-w-\(UUID().uuidString.prefix(8).lowercased())")
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                let process = Process()
                process.executableURL = binaries.appendingPathComponent("gengate")
                process.arguments = [
                    "up", "--data-dir", directory.path, "--services", "dispatcher,poller,uploader",
                    "--config", system.dataDir.appendingPathComponent("bench-config.json").path,
                ]
                process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("GENGATE_") }
                    .merging(
                        environment.merging(store.merging(["GENGATE_LOG_LEVEL": "warning"]) { $1 }) { $1 }
                    ) { $1 }
                process.standardOutput = FileHandle.nullDevice
                process.standardError = FileHandle.nullDevice
                try process.run()
                extra.append((process, directory))
            }
            try await Task.sleep(for: .seconds(2))  // the extra workers connect
            if let gone = extra.first(where: { !$0.0.isRunning }) {
                throw BenchError("an extra worker (gengate up --services …) exited: \(gone.0.terminationStatus)")
            }
            let body: @Sendable (Int) -> String = {
                #"{"model": "sim/image", "prompt": "scale \#($0)", "width": 16, "height": 16}"#
            }
            let load = await HTTPLoad.closedLoop(system, clients: 64, duration: duration, body: body)
            let done = try await waitForCompletion(system, ids: load.ids)
            log("scale \(count): \(load.ids.count) submitted, \(Int(done.rate))/s completed")
            let relative = baseline.map { String(format: "%.2f× one of each", done.rate / $0) } ?? "the baseline"
            baseline = baseline ?? done.rate
            curve.x.append(Double(count))
            curve.y.append(done.rate)
            rows.append(
                Row(
                    scenario:
                        "end to end, \(count) of each: dispatcher\(count == 1 ? "" : "s"), poller\(count == 1 ? "" : "s") and uploader\(count == 1 ? "" : "s") (\(postgres == nil ? "SQLite" : "PostgreSQL"), bus on TCP)",
                    target: "—", measured: "\(Int(done.rate)) jobs/s", met: nil,
                    notes:
                        "\(relative); \(done.latencies.count) of \(load.ids.count) completed, p50 \(ms(done.latencies.quantile(0.5))), p99 \(ms(done.latencies.quantile(0.99))); sim answers after 200 ms"
                ))
        }
        figures.add(
            Figure(
                name: "scale-\(postgres == nil ? "sqlite" : "postgres")",
                title: "Jobs/s end to end against processes of each worker service (\(curve.label))",
                xLabel: "dispatchers, pollers and uploaders (of each)", yLabel: "jobs/s completed", series: [curve]))
        return rows
    }
}
