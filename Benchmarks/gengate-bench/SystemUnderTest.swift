import Foundation
import GenGateLocalPorts

/// One `gengate up` started for a scenario: release binaries, free ports, a fresh private data
/// directory, the configuration the scenario asks for. `stop()` ends it and removes its data.
final class SystemUnderTest: @unchecked Sendable {
    let dataDir: URL
    let httpPort: Int
    let eventsPort: Int
    let process: Process
    let adminKey: String
    /// The PostgreSQL database the system's store is in, when it is not SQLite.
    var postgres: (server: LocalPostgres, database: String)?
    /// Its `GENGATE_STORE_URL`, for more processes sharing that database.
    var storeURL: String?

    var baseURL: String { "http://127.0.0.1:\(httpPort)" }
    var storePath: String { dataDir.appendingPathComponent("gengate.sqlite").path }

    static func start(
        binaries: URL, environment extra: [String: String], config: String? = nil, postgres: LocalPostgres? = nil
    ) async throws
        -> SystemUnderTest
    {
        let ports = try FreePorts.take(3)
        var extra = extra
        var database: String?
        var storeURL: String?
        if let postgres {
            let url = try postgres.createDatabase()
            extra["GENGATE_STORE_URL"] = url
            storeURL = url
            database = String(url.split(separator: "/").last!.split(separator: "?")[0])
        }
        let dataDir = URL(fileURLWithPath: "/tmp/ggbench-\(UUID().uuidString.prefix(8).lowercased())")
        try FileManager.default.createDirectory(at: dataDir, withIntermediateDirectories: true)
        var arguments = [
            "up", "--data-dir", dataDir.path, "--http-port", "\(ports[0])", "--monitor-port", "\(ports[1])",
            "--events-port", "\(ports[2])",
        ]
        if let config {
            let file = dataDir.appendingPathComponent("bench-config.json")
            try config.write(to: file, atomically: true, encoding: .utf8)
            arguments += ["--config", file.path]
        }
        let process = Process()
        process.executableURL = binaries.appendingPathComponent("gengate")
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("GENGATE_") }
        environment["GENGATE_LOG_LEVEL"] = "warning"
        environment.merge(extra) { $1 }
        process.environment = environment
        let log = dataDir.appendingPathComponent("gengate.log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if !process.isRunning {
                throw BenchError("gengate up exited: \(try String(contentsOf: log, encoding: .utf8))")
            }
            if let key = try? String(contentsOf: dataDir.appendingPathComponent("admin.key"), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines), !key.isEmpty,
                (try? await HTTPLoad.get("http://127.0.0.1:\(ports[0])/health")) == 200
            {
                let system = SystemUnderTest(
                    dataDir: dataDir, httpPort: ports[0], eventsPort: ports[2], process: process, adminKey: key)
                if let postgres, let database { system.postgres = (postgres, database) }
                system.storeURL = storeURL
                try await Task.sleep(for: .seconds(1))  // every service up and connected
                return system
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        process.terminate()
        throw BenchError("gengate up did not become healthy in 60 s")
    }

    private init(dataDir: URL, httpPort: Int, eventsPort: Int, process: Process, adminKey: String) {
        self.dataDir = dataDir
        self.httpPort = httpPort
        self.eventsPort = eventsPort
        self.process = process
        self.adminKey = adminKey
    }

    func pid(of service: String) -> Int32? {
        let text = try? String(contentsOf: dataDir.appendingPathComponent("run/\(service).pid"), encoding: .utf8)
        return text.flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Resident memory of a service now, in MiB.
    func rss(of service: String) -> Double? {
        guard let pid = pid(of: service),
            let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Double(line.split(separator: " ").dropFirst().first ?? "")
        else { return nil }
        return kib / 1_024
    }

    /// A service's proportional share of memory (PSS: each shared page divided by the processes
    /// mapping it) and its private dirty memory (its own heap and stacks), in MiB.
    func sharedMemory(of service: String) -> (pss: Double, privateDirty: Double)? {
        guard let pid = pid(of: service),
            let rollup = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8)
        else { return nil }
        func field(_ name: String) -> Double? {
            rollup.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") })
                .flatMap { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first }
                .flatMap { Double($0) }.map { $0 / 1_024 }
        }
        guard let pss = field("Pss"), let dirty = field("Private_Dirty") else { return nil }
        return (pss, dirty)
    }

    func stop() {
        process.stop(within: 40)
        try? FileManager.default.removeItem(at: dataDir)
    }
}

extension Process {
    /// SIGTERM, then SIGKILL if it has not ended within `seconds`.
    func stop(within seconds: TimeInterval) {
        guard isRunning else { return }
        terminate()
        let deadline = Date().addingTimeInterval(seconds)
        while isRunning && Date() < deadline { usleep(50_000) }
        if isRunning { kill(processIdentifier, SIGKILL) }
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
