import Foundation
import GenGateBus
import GenGateCore
import XCTest

/// The public event stream against its documented schema (docs/events.schema.json), checked by
/// an independent JSON Schema validator (Python `jsonschema`), and the README's pyzmq subscriber
/// run against a real system.
final class EventSchemaTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let schema = root.appendingPathComponent("docs/events.schema.json")

    /// One payload of every event type, with its optional fields (`full`) or without: the
    /// switch is exhaustive, so a new event type does not compile until it has samples here,
    /// and the validator then insists that the schema documents it.
    static func sample(_ type: EventType, full: Bool) -> EventPayload {
        let now = Date(timeIntervalSince1970: 1_795_000_000.125)  // milliseconds, as the wire keeps them
        let error = GenGateError(
            .rateLimited, "slow down", retryable: true, retryAfter: full ? 2 : nil, providerCode: full ? "429" : nil,
            reason: full ? "client" : nil)
        switch type {
        case .generationCreated:
            return .generationCreated(
                .init(
                    model: "sim/image", provider: "sim", n: 2, alias: full ? "best" : nil,
                    route: full ? ["sim/image", "flux/flux-dev"] : nil, batchID: full ? "bat_1" : nil))
        case .generationStarted:
            return .generationStarted(.init(attempt: 1, provider: "sim", model: "sim/image", providerTaskID: "t-1"))
        case .generationProgress: return .generationProgress(.init(progress: 40))
        case .generationStreamChunk:
            return .generationStreamChunk(.init(attempt: 1, index: 3, outputIndex: 0, text: "dusk"))
        case .generationOutput:
            return .generationOutput(
                .init(index: 0, contentType: "image/png", bytes: 120, sha256: "ab", url: "http://h/v1/o"))
        case .generationRetrying: return .generationRetrying(.init(attempt: 1, retryAt: now, error: error))
        case .generationFallback:
            return .generationFallback(.init(from: "sim/image", to: "flux/flux-dev", because: "rate_limited"))
        case .generationCompleted:
            return .generationCompleted(
                .init(outputs: 2, attempts: 1, provider: "sim", model: "sim/image", durationMs: 1_200))
        case .generationFailed:
            return .generationFailed(
                .init(
                    error: error, attempts: full ? 3 : nil, provider: full ? "sim" : nil,
                    model: full ? "sim/image" : nil))
        case .generationCancelled: return .generationCancelled(.init(previousStatus: "running", reason: "deadline"))
        case .providerCall:
            return .providerCall(
                .init(
                    provider: "sim", model: "sim/image", operation: "submit", latencyMs: 12,
                    outcome: full ? "error" : "ok", errorCode: full ? "rate_limited" : nil,
                    retryable: full ? true : nil))
        case .providerPossibleDoubleCharge:
            return .providerPossibleDoubleCharge(
                .init(provider: "sim", model: "sim/image", attempt: 2, clientReference: "gen_1-a2"))
        case .providerCircuitOpened: return .providerCircuitOpened(.init(provider: "sim", until: now))
        case .serviceHeartbeat:
            return .serviceHeartbeat(
                .init(
                    service: "poller", instance: "poller-1", pid: 42, startedAt: now, stopping: full,
                    busDropped: full ? ["events-out": 3] : [:]))
        case .pollerChecks:
            return .pollerChecks(
                .init(statusCalls: 5, latenessBounds: [0.1, 1], latenessCounts: [4, 1, 0], latenessMax: 0.4))
        }
    }

    func testEveryEventTypeMatchesTheDocumentedSchema() throws {
        var lines: [String] = []
        for type in EventType.allCases {
            for full in [false, true] {
                let payload = Self.sample(type, full: full)
                XCTAssertEqual(payload.type, type)
                let event = Event(
                    payload, generationID: type.rawValue.hasPrefix("generation.") ? "gen_1" : nil,
                    at: Date(timeIntervalSince1970: 1_795_000_000))
                let data = try Envelope(type: eventMessageType, source: "test-1", payload: event).encoded()
                // What is written reads back as it was.
                let back = try Envelope<Event>.decode(data, expectedType: eventMessageType).payload
                XCTAssertEqual(back.payload, event.payload)
                lines.append(String(decoding: data, as: UTF8.self))
            }
        }
        let result = try Python.run(
            Self.root.appendingPathComponent("Tests/Events/validate_events.py"),
            arguments: [Self.schema.path] + EventType.allCases.map(\.rawValue), input: lines.joined(separator: "\n"))
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("\(lines.count) valid"), result.output)
    }

    func testAPayloadMissingAFieldIsRejectedLoudly() throws {
        let text =
            #"{"v":1,"type":"event","id":"msg_1","at":"2026-11-23T10:00:00.000Z","source":"x","payload":{"type":"generation.progress","at":"2026-11-23T10:00:00.000Z","payload":{}}}"#
        XCTAssertThrowsError(try Envelope<Event>.decode(Data(text.utf8), expectedType: eventMessageType)) {
            XCTAssertTrue("\($0)".contains("progress"), "\($0)")
        }
        let unknown = text.replacingOccurrences(of: "generation.progress", with: "generation.teleported")
        XCTAssertThrowsError(try Envelope<Event>.decode(Data(unknown.utf8), expectedType: eventMessageType)) {
            XCTAssertTrue("\($0)".contains("generation.teleported"), "\($0)")
        }
    }

    /// The README's subscriber (examples/python/subscriber.py, pyzmq) sees a streamed chat from
    /// created to completed, chunks included, and every message it printed is valid.
    func testThePythonSubscriberFollowsAJob() async throws {
        let sim = try await ProviderSimulatorTests.SimulatorProcess(
            provider: "openai", key: "sk-openai-test", knobs: #"{"task_seconds": 1}"#)
        defer { sim.stop() }
        let system = try await GenGateSystem.start(environment: sim.environment)
        defer { system.stop() }
        let subscriber = try Python.start(
            Self.root.appendingPathComponent("examples/python/subscriber.py"),
            arguments: ["tcp://127.0.0.1:\(system.eventsPort)", "generation."])
        defer { subscriber.stop() }
        // A subscription takes a moment to reach the publisher: submit until the subscriber sees one.
        var id = ""
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            id = try await system.submit(#"{"model": "openai/gpt-4o-mini", "prompt": "a haiku about lamps"}"#)
            _ = try await system.waitForStatus(id, "completed")
            try await Task.sleep(for: .milliseconds(300))
            let seen = subscriber.lines()
            if seen.contains(where: { $0.hasPrefix("generation.created \(id) ") }),
                seen.contains(where: { $0.hasPrefix("generation.completed \(id) ") })
            {
                break
            }
        }
        let lines = subscriber.lines().filter { $0.split(separator: " ").dropFirst().first.map(String.init) == id }
        let types = lines.compactMap { $0.split(separator: " ").first.map(String.init) }
        XCTAssertEqual(types.first, "generation.created", "\(lines)")
        XCTAssertEqual(types.last, "generation.completed", "\(lines)")
        XCTAssertTrue(types.contains("generation.stream_chunk"), "\(types)")
        XCTAssertTrue(types.contains("generation.output"), "\(types)")

        let envelopes = subscriber.lines().map { $0.split(separator: " ", maxSplits: 2).last.map(String.init) ?? "" }
        let result = try Python.run(
            Self.root.appendingPathComponent("Tests/Events/validate_events.py"), arguments: [Self.schema.path],
            input: envelopes.joined(separator: "\n"))
        XCTAssertEqual(result.status, 0, result.output)
    }
}

/// Python scripts that tests drive: run to the end, or started and read line by line.
enum Python {
    static func run(_ script: URL, arguments: [String], input: String = "") throws -> (status: Int32, output: String) {
        try run(python: [script.path] + arguments, input: input)
    }

    /// Runs `python3 -c code arguments…` to its end (`in` a working directory).
    static func inline(_ code: String, arguments: [String], in directory: URL? = nil) throws -> (
        status: Int32, output: String
    ) {
        try run(python: ["-c", code] + arguments, in: directory)
    }

    /// Runs `python3 arguments…` with `input` on its standard input; its status and all it printed.
    static func run(python arguments: [String], input: String = "", in directory: URL? = nil) throws -> (
        status: Int32, output: String
    ) {
        try Command.run(["python3"] + arguments, input: input, in: directory)
    }
}

/// Commands tests run to their end (checkers such as `promtool`).
enum Command {
    /// Runs `arguments` (the first found on PATH) with `input` on its standard input; its status
    /// and all it printed. One still running after `timeout` seconds is killed (status 137 then).
    static func run(_ arguments: [String], input: String = "", in directory: URL? = nil, timeout: Double = 300)
        throws -> (status: Int32, output: String)
    {
        let process = Process()
        if let directory { process.currentDirectoryURL = directory }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let stdin = Pipe()
        let output = Pipe()
        process.standardInput = stdin
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let writer = Thread {
            stdin.fileHandleForWriting.write(Data(input.utf8))
            try? stdin.fileHandleForWriting.close()
        }
        writer.start()
        let watchdog = DispatchWorkItem { [process] in
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
        defer { watchdog.cancel() }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

extension Python {
    /// A running script whose output lines are collected as they come.
    final class Running: @unchecked Sendable {
        let process: Process
        private let lock = NSLock()
        private var text = ""

        init(_ process: Process, output: Pipe) {
            self.process = process
            output.fileHandleForReading.readabilityHandler = { [weak self] handle in
                let data = handle.availableData
                guard let self, !data.isEmpty else { return }
                self.lock.lock()
                self.text += String(decoding: data, as: UTF8.self)
                self.lock.unlock()
            }
        }

        /// The complete lines printed so far.
        func lines() -> [String] {
            lock.lock()
            defer { lock.unlock() }
            return text.split(separator: "\n", omittingEmptySubsequences: true).dropLast(text.hasSuffix("\n") ? 0 : 1)
                .map(String.init)
        }

        /// Kills it (a test process may pass a blocked SIGTERM on to its children).
        func stop() {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
    }

    static func start(_ script: URL, arguments: [String]) throws -> Running {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-u", script.path] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        let running = Running(process, output: output)
        try process.run()
        return running
    }

    /// A script that serves on a free port it writes to the file named by its first argument
    /// (then `arguments`): the running script and its port, once it is listening.
    static func serve(_ script: URL, arguments: [String]) async throws -> (Running, Int) {
        let portFile = FileManager.default.temporaryDirectory.appendingPathComponent("port-\(UUID().uuidString)")
        let running = try start(script, arguments: [portFile.path] + arguments)
        for _ in 0..<150 {
            if let text = try? String(contentsOf: portFile, encoding: .utf8), let port = Int(text) {
                try? FileManager.default.removeItem(at: portFile)
                return (running, port)
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        running.stop()
        throw SystemError("\(script.lastPathComponent) did not start: \(running.lines())")
    }
}
