import AsyncHTTPClient
import Foundation
import GenGateCore
import GenGateLocalPorts
import NIOCore
import NIOHTTP1
import XCTest

/// A whole GenGate (`gengate up`) started for a test: built binaries from `.build/debug` (or
/// `GENGATE_BIN_DIR`), free ports, a fresh data dir under /tmp (short, so `ipc://` paths fit).
/// `stop()` kills everything it started, even after a failure.
final class GenGateSystem: @unchecked Sendable {
    let dataDir: URL
    let httpPort: Int
    let monitorPort: Int
    let eventsPort: Int
    let process: Process
    let adminKey: String
    let logFile: URL

    struct Answer {
        var status: Int
        var body: Data
        var headers: HTTPHeaders
        var json: JSONValue { (try? JSONCoding.decoder().decode(JSONValue.self, from: body)) ?? .null }
    }

    static var binDirectory: URL {
        if let path = ProcessInfo.processInfo.environment["GENGATE_BIN_DIR"] { return URL(fileURLWithPath: path) }
        // Tests/IntegrationTests/GenGateSystem.swift → package root
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug")
    }

    /// Starts a system; on `dataDir`, an earlier system's data directory, it starts again where
    /// that one stopped.
    /// Starts `gengate up`; `config` (JSON) becomes its configuration file, in the data dir.
    static func start(
        environment extra: [String: String] = [:], dataDir existing: URL? = nil, arguments: [String] = [],
        publicURL: Bool = false, config: String? = nil
    ) async throws
        -> GenGateSystem
    {
        let ports = try FreePorts.take(3)
        let given = existing ?? URL(fileURLWithPath: "/tmp/ggt-\(UUID().uuidString.prefix(8).lowercased())")
        try FileManager.default.createDirectory(at: given, withIntermediateDirectories: true)
        let logFile = given.appendingPathComponent("gengate.log")
        if existing != nil, let old = try? Data(contentsOf: logFile) {
            try old.write(
                to: given.appendingPathComponent("gengate.\(Int(Date().timeIntervalSince1970 * 1_000)).log"))
        }
        guard FileManager.default.createFile(atPath: logFile.path, contents: nil) else {
            throw SystemError("cannot create \(logFile.path)")
        }
        let process = Process()
        process.executableURL = binDirectory.appendingPathComponent("gengate")
        process.arguments =
            [
                "up", "--data-dir", given.path, "--http-port", "\(ports[0])", "--monitor-port", "\(ports[1])",
                "--events-port", "\(ports[2])",
            ] + arguments
        // Hermetic: no GenGate settings, and no provider credentials, from the developer's shell.
        let credentials: Set<String> = [
            "REPLICATE_API_TOKEN", "BFL_API_KEY", "DASHSCOPE_API_KEY", "POLLO_API_KEY", "KLING_ACCESS_KEY",
            "KLING_SECRET_KEY", "OPENAI_API_KEY", "TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY",
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
        ]
        var environment = ProcessInfo.processInfo.environment.filter {
            !$0.key.hasPrefix("GENGATE_") && !credentials.contains($0.key)
        }
        environment["GENGATE_HEARTBEAT_SECONDS"] = "0.5"
        // Reachable at its own address, as providers reach a deployment's public URL.
        if publicURL { environment["GENGATE_PUBLIC_URL"] = "http://127.0.0.1:\(ports[0])" }
        if let config {
            let file = given.appendingPathComponent("test-config.json")
            try Data(config.utf8).write(to: file)
            environment["GENGATE_CONFIG"] = file.path
        }
        environment.merge(extra) { $1 }
        process.environment = environment
        let log = try FileHandle(forWritingTo: logFile)
        process.standardOutput = log
        process.standardError = log
        guard FileManager.default.isExecutableFile(atPath: process.executableURL!.path) else {
            throw SystemError("no gengate binary at \(process.executableURL!.path): run `swift build` first")
        }
        try process.run()

        // With simulated providers, `up` keeps its state in a directory of its own inside.
        let dataDir =
            arguments.contains("--simulate-providers") ? given.appendingPathComponent("simulated") : given
        let adminKeyFile = dataDir.appendingPathComponent("admin.key")
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if !process.isRunning {
                throw SystemError("gengate up exited with \(process.terminationStatus):\n\(tail(logFile))")
            }
            if let key = try? String(contentsOf: adminKeyFile, encoding: .utf8).trimmingCharacters(
                in: .whitespacesAndNewlines),
                !key.isEmpty,
                let health = try? await rawRequest(.GET, "http://127.0.0.1:\(ports[0])/health", body: nil, key: nil),
                health.status == 200
            {
                return GenGateSystem(
                    dataDir: dataDir, httpPort: ports[0], monitorPort: ports[1], eventsPort: ports[2],
                    process: process, adminKey: key, logFile: logFile)
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let system = GenGateSystem(
            dataDir: dataDir, httpPort: ports[0], monitorPort: ports[1], eventsPort: ports[2],
            process: process, adminKey: "", logFile: logFile)
        system.stop()
        throw SystemError("gengate did not become healthy within 60 s:\n\(tail(logFile))")
    }

    private init(
        dataDir: URL, httpPort: Int, monitorPort: Int, eventsPort: Int, process: Process, adminKey: String, logFile: URL
    ) {
        self.dataDir = dataDir
        self.httpPort = httpPort
        self.monitorPort = monitorPort
        self.eventsPort = eventsPort
        self.process = process
        self.adminKey = adminKey
        self.logFile = logFile
    }

    var baseURL: String { "http://127.0.0.1:\(httpPort)" }

    /// The pid of a service's current process, from the supervisor's pid file.
    func pid(of service: String) -> Int32? {
        let text = try? String(contentsOf: dataDir.appendingPathComponent("run/\(service).pid"), encoding: .utf8)
        return text.flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    var childPIDs: [Int32] {
        ["api-ingress", "dispatcher", "poller", "uploader", "monitor"].compactMap(pid(of:))
    }

    /// SIGKILL to the supervisor and every service at once, as a power cut would leave them.
    func killEverything() {
        let children = childPIDs
        kill(process.processIdentifier, SIGKILL)
        for pid in children { kill(pid, SIGKILL) }
        process.waitUntilExit()
        for pid in children { while kill(pid, 0) == 0 { usleep(10_000) } }
    }

    /// SIGTERM to the supervisor and the time it took to stop everything.
    func terminate(timeout: TimeInterval = 60) -> Duration {
        let started = ContinuousClock.now
        let children = childPIDs
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(timeout)
        while (process.isRunning || children.contains { kill($0, 0) == 0 }) && Date() < deadline { usleep(20_000) }
        return ContinuousClock.now - started
    }

    /// What the sim's ledger says was submitted (needs `GENGATE_SIM_LEDGER` at `ledger`).
    var ledger: URL { dataDir.appendingPathComponent("sim-ledger") }

    func submissions() -> [String] {
        let text = (try? String(contentsOf: ledger, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
    }

    /// SIGTERM to the supervisor, then SIGKILL to anything left after 15 s. Removes the data dir.
    func stop(keepData: Bool = false) {
        let children = childPIDs
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(15)
            while process.isRunning && Date() < deadline { usleep(50_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        for pid in children where kill(pid, 0) == 0 { kill(pid, SIGKILL) }
        if !keepData { try? FileManager.default.removeItem(at: dataDir) }
    }

    func request(
        _ method: HTTPMethod, _ path: String, body: String? = nil, key: String?? = .none,
        headers: [(String, String)] = []
    ) async throws -> Answer {
        let chosen: String? = key ?? adminKey
        let started = ContinuousClock.now
        do {
            return try await Self.rawRequest(
                method, baseURL + path, body: body.map { Data($0.utf8) }, key: chosen, headers: headers)
        } catch {
            // Which request, after how long, and (when it waited) what the services said meanwhile.
            let waited = ContinuousClock.now - started
            throw SystemError(
                "\(method) \(path) failed after \(waited): \(error)"
                    + (waited > .seconds(5) ? "\n" + Self.tail(logFile) : ""))
        }
    }

    func monitor(_ path: String) async throws -> Answer {
        try await Self.rawRequest(.GET, "http://127.0.0.1:\(monitorPort)\(path)", body: nil, key: nil)
    }

    static func rawRequest(
        _ method: HTTPMethod, _ url: String, body: Data?, key: String?,
        headers: [(String, String)] = []
    ) async throws -> Answer {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            if !headers.contains(where: { $0.0.lowercased() == "content-type" }) {
                request.headers.add(name: "Content-Type", value: "application/json")
            }
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 64 * 1_024 * 1_024)
        return Answer(status: Int(response.status.code), body: Data(bytes.readableBytesView), headers: response.headers)
    }

    /// Submits and returns the new generation's id, failing the test on anything but 202.
    func submit(_ body: String, key: String? = nil, file: StaticString = #filePath, line: UInt = #line) async throws
        -> String
    {
        let answer = try await request(.POST, "/v1/generations", body: body, key: key.map { .some($0) } ?? .none)
        XCTAssertEqual(
            answer.status, 202, "submit answered \(answer.status): \(String(decoding: answer.body, as: UTF8.self))",
            file: file, line: line)
        return try XCTUnwrap(answer.json["id"]?.stringValue, file: file, line: line)
    }

    /// Polls a generation until `done` says so, or fails with its last state and the log.
    func waitFor(
        _ id: String, key: String? = nil, timeout: Duration = .seconds(30), file: StaticString = #filePath,
        line: UInt = #line,
        _ done: (JSONValue) -> Bool
    ) async throws -> JSONValue {
        let deadline = ContinuousClock.now + timeout
        var last: JSONValue = .null
        while ContinuousClock.now < deadline {
            last = try await request(.GET, "/v1/generations/\(id)", key: key.map { .some($0) } ?? .none).json
            if done(last) { return last }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTFail(
            "generation \(id) did not get there within \(timeout); last: \(last)\n\(Self.tail(logFile))", file: file,
            line: line)
        throw SystemError("timeout")
    }

    func waitForStatus(
        _ id: String, _ status: String, key: String? = nil, timeout: Duration = .seconds(30),
        file: StaticString = #filePath, line: UInt = #line
    ) async throws -> JSONValue {
        try await waitFor(id, key: key, timeout: timeout, file: file, line: line) {
            $0["status"]?.stringValue == status
        }
    }

    /// The monitor's metrics once they contain `text` (events reach it asynchronously), or the
    /// last scrape after 5 s.
    func metrics(containing text: String) async throws -> String {
        var metrics = ""
        for _ in 0..<50 {
            metrics = String(decoding: try await monitor("/metrics").body, as: UTF8.self)
            if metrics.contains(text) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        return metrics
    }

    /// Runs the `gengate` binary to its end: exit status, standard output, standard error.
    static func command(_ arguments: [String]) throws -> (status: Int32, output: Data, errors: String) {
        let process = Process()
        process.executableURL = binDirectory.appendingPathComponent("gengate")
        process.arguments = arguments
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, data, text)
    }

    /// The last `lines` lines of a log, read from its last 256 KiB (a long test's log is large).
    static func tail(_ url: URL, lines: Int = 60) -> String {
        guard let handle = try? FileHandle(forReadingFrom: url) else { return "" }
        defer { try? handle.close() }
        let end = (try? handle.seekToEnd()) ?? 0
        try? handle.seek(toOffset: end > 262_144 ? end - 262_144 : 0)
        let text = String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }
}

struct SystemError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
