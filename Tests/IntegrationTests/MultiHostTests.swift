import Foundation
import GenGateCore
import GenGateLocalPorts
import XCTest

/// Services split over "hosts" as a deployment on several machines splits them: the bus alone
/// (`gengate bus`) on TCP ports, a first host with every service but the bus, a second with
/// only pollers and uploaders (`gengate up --services poller,uploader`), one shared PostgreSQL
/// store and one S3 bucket. (The hosts are processes with data directories of their own on this
/// machine; they share nothing but the PostgreSQL server, the bucket and the bus's TCP ports.)
final class MultiHostTests: XCTestCase {
    var s3: S3Server!
    var processes: [Process] = []
    var directories: [URL] = []

    override func setUp() async throws {
        s3 = try S3Server()
    }

    override func tearDown() async throws {
        for process in processes where process.isRunning {
            kill(process.processIdentifier, SIGTERM)
        }
        for process in processes { process.waitUntilExit() }
        s3.stop()
        for directory in directories { try? FileManager.default.removeItem(at: directory) }
    }

    func directory(_ name: String) throws -> URL {
        let url = URL(fileURLWithPath: "/tmp/ggm-\(name)-\(UUID().uuidString.prefix(6).lowercased())")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        directories.append(url)
        return url
    }

    func start(_ arguments: [String], environment: [String: String], log: URL) throws -> Process {
        let process = Process()
        process.executableURL = GenGateSystem.binDirectory.appendingPathComponent("gengate")
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("GENGATE_") }
            .merging(environment) { $1 }
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        processes.append(process)
        return process
    }

    func pid(_ directory: URL, _ service: String) -> Int32? {
        (try? String(contentsOf: directory.appendingPathComponent("run/\(service).pid"), encoding: .utf8))
            .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    func testPollersAndUploadersOnTwoHostsShareTheWorkOnPostgreSQLAndALostBusIsSurvived() async throws {
        let busPort = try FreePorts.consecutive(8)
        let eventsPort = try FreePorts.take(1)[0]
        let busDirectory = try directory("bus")
        let firstDirectory = try directory("a")
        let secondDirectory = try directory("b")
        var shared = s3.environment
        shared["GENGATE_BUS_HOST"] = "127.0.0.1"
        shared["GENGATE_BUS_PORT"] = "\(busPort)"
        let database = try LocalPostgres.shared().createDatabase()
        shared["GENGATE_STORE_URL"] = database
        shared["GENGATE_SIM_LATENCY_MS"] = "400"
        shared["GENGATE_HEARTBEAT_SECONDS"] = "0.5"
        shared["GENGATE_STALE_AFTER_SECONDS"] = "2"

        let busArguments = ["bus", "--data-dir", busDirectory.path, "--events-port", "\(eventsPort)"]
        let busLog = busDirectory.appendingPathComponent("bus.log")
        var bus = try start(busArguments, environment: shared, log: busLog)
        let first = try await GenGateSystem.start(
            environment: shared, dataDir: firstDirectory,
            arguments: ["--services", "api-ingress,dispatcher,monitor,poller,uploader"])
        defer { first.stop() }
        let secondLog = secondDirectory.appendingPathComponent("gengate.log")
        _ = try start(
            ["up", "--data-dir", secondDirectory.path, "--services", "poller", "uploader"], environment: shared,
            log: secondLog)
        let deadline = Date().addingTimeInterval(30)
        while pid(secondDirectory, "poller") == nil || pid(secondDirectory, "uploader") == nil {
            guard Date() < deadline else {
                return XCTFail("the second host did not start:\n\(GenGateSystem.tail(secondLog))")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTAssertNil(pid(secondDirectory, "api-ingress"), "only the services asked for run")

        // Who did what, from the public event stream (each event names the process that sent it).
        let subscriber = try Python.start(
            EventSchemaTests.root.appendingPathComponent("examples/python/subscriber.py"),
            arguments: ["tcp://127.0.0.1:\(eventsPort)", ""])
        defer { subscriber.stop() }
        try await Task.sleep(for: .milliseconds(500))  // the subscription reaches the forwarder

        var ids: [String] = []
        for index in 0..<16 {
            ids.append(try await first.submit(#"{"model": "sim/image", "prompt": "shared work \#(index)"}"#))
        }
        for id in ids {
            let done = try await first.waitForStatus(id, "completed", timeout: .seconds(90))
            // Its output is in the bucket, as boto3 reads it.
            guard case .array(let outputs)? = done["outputs"], let output = outputs.first,
                let url = output["url"]?.stringValue
            else { return XCTFail("no output in \(done)") }
            let key = String(url.dropFirst("\(s3.endpoint)/\(s3.bucket)/".count).prefix { $0 != "?" })
            XCTAssertEqual(try s3.command("get \(key)")["sha256"], output["sha256"])
        }

        var sources = Set<String>()
        func worked(_ directory: URL, _ service: String) -> Bool {
            guard let pid = pid(directory, service) else { return false }
            return sources.contains { $0.hasPrefix("\(service)-\(pid)@") }
        }
        // The events travel on through the forwarder and the subscriber's pipe: read until
        // every worker has been heard from, or for 10 s.
        let heard = ContinuousClock.now + .seconds(10)
        repeat {
            for line in subscriber.lines() {
                let parts = line.split(separator: " ", maxSplits: 2)
                // Every event but heartbeats, which each process sends working or not (pollers
                // send `provider.call` for their status checks, uploaders `generation.output`).
                guard parts.count == 3, !parts[0].hasPrefix("service."),
                    let envelope = try? JSONCoding.decode(JSONValue.self, from: Data(parts[2].utf8))
                else { continue }
                if let source = envelope["source"]?.stringValue { sources.insert(source) }
            }
            let all = [firstDirectory, secondDirectory].allSatisfy { directory in
                ["poller", "uploader"].allSatisfy { worked(directory, $0) }
            }
            if all { break }
            try await Task.sleep(for: .milliseconds(200))
        } while ContinuousClock.now < heard
        for service in ["poller", "uploader"] {
            XCTAssertTrue(worked(firstDirectory, service), "the first host's \(service) took no work: \(sources)")
            XCTAssertTrue(worked(secondDirectory, service), "the second host's \(service) took no work: \(sources)")
        }

        // The bus host is lost: jobs are still accepted (the store has them), and nothing is lost.
        kill(bus.processIdentifier, SIGKILL)
        bus.waitUntilExit()
        let waiting = try await first.submit(#"{"model": "sim/image", "prompt": "while the bus is down"}"#)
        try await Task.sleep(for: .seconds(2))
        let meanwhile = try await first.request(.GET, "/v1/generations/\(waiting)")
        XCTAssertEqual(meanwhile.status, 200)
        print("a job submitted while the bus is down, 2 s later: \(meanwhile.json["status"]?.stringValue ?? "?")")
        // It comes back: the services reconnect, and the sweep re-drives whatever waited.
        bus = try start(busArguments, environment: shared, log: busLog)
        let done = try await first.waitForStatus(waiting, "completed", timeout: .seconds(60))
        XCTAssertEqual(done["error"], .null)
    }
}
