import Foundation

/// A server the bench starts beside GenGate (the provider simulator, LiteLLM's proxy): its
/// output goes to a log file, and `start` returns once `ready` answers 200.
final class ServerProcess: @unchecked Sendable {
    let process = Process()
    let log: URL

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:], name: String) {
        log = URL(fileURLWithPath: "/tmp/ggbench-\(name)-\(UUID().uuidString.prefix(8).lowercased()).log")
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }

    func start(ready: String, within limit: Duration = .seconds(60)) async throws {
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            guard process.isRunning else {
                throw BenchError(
                    "\(process.executableURL?.lastPathComponent ?? "server") exited: \((try? String(contentsOf: log, encoding: .utf8))?.suffix(2_000) ?? "")"
                )
            }
            if (try? await HTTPLoad.get(ready)) == 200 { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        stop()
        throw BenchError("\(process.executableURL?.lastPathComponent ?? "server") did not answer \(ready) in time")
    }

    /// SIGTERM, then SIGKILL after 10 s; the log file goes too.
    func stop() {
        process.stop(within: 10)
        try? FileManager.default.removeItem(at: log)
    }
}
