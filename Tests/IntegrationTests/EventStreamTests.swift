import AsyncHTTPClient
import Foundation
import GenGateBus
import GenGateCore
import GenGateStore
import NIOCore
import XCTest

/// Server-sent events and `Prefer: wait`, over real HTTP against a whole system.
final class EventStreamTests: XCTestCase {
    /// One message of a `text/event-stream`, parsed here by the WHATWG rules (independently of
    /// the server's code): `id`, `event`, `data` lines, a blank line ends a message, `:` starts
    /// a comment.
    struct Frame: Equatable {
        var id: String?
        var event: String
        var data: String
        var json: JSONValue { (try? JSONCoding.decode(JSONValue.self, from: Data(data.utf8))) ?? .null }
    }

    /// Reads a stream as it comes, keeping its messages and comments.
    final class Stream: @unchecked Sendable {
        private let lock = NSLock()
        private var frames: [Frame] = []
        private var comments: [String] = []
        private var retry: String?
        private var ended = false
        private(set) var status: Int = 0
        private var task: Task<Void, Never>?

        init(url: String, key: String, headers: [String: String] = [:]) async throws {
            var request = HTTPClientRequest(url: url)
            request.headers.add(name: "Authorization", value: "Bearer \(key)")
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
            status = Int(response.status.code)
            task = Task { [weak self] in
                var pending = ""
                var current = Frame(id: nil, event: "message", data: "")
                var hasData = false
                do {
                    for try await buffer in response.body {
                        pending += String(buffer: buffer)
                        while let newline = pending.firstIndex(of: "\n") {
                            let line = String(pending[..<newline])
                            pending = String(pending[pending.index(after: newline)...])
                            guard let self else { return }
                            if line.isEmpty {
                                if hasData { self.append(current) }
                                current = Frame(id: nil, event: "message", data: "")
                                hasData = false
                            } else if line.hasPrefix(":") {
                                self.comment(String(line.dropFirst()).trimmingCharacters(in: .whitespaces))
                            } else {
                                let parts = line.split(separator: ":", maxSplits: 1).map(String.init)
                                let value = parts.count > 1 ? String(parts[1].drop { $0 == " " }) : ""
                                switch parts[0] {
                                case "id": current.id = value
                                case "event": current.event = value
                                case "data":
                                    current.data += (hasData ? "\n" : "") + value
                                    hasData = true
                                case "retry": self.setRetry(value)
                                default: break
                                }
                            }
                        }
                    }
                } catch {}
                self?.end()
            }
        }

        private func append(_ frame: Frame) { lock.withLock { frames.append(frame) } }
        private func comment(_ text: String) { lock.withLock { comments.append(text) } }
        private func setRetry(_ value: String) { lock.withLock { retry = value } }
        private func end() { lock.withLock { ended = true } }

        var received: [Frame] { lock.withLock { frames } }
        var keepAlives: Int { lock.withLock { comments.filter { $0 == "keep-alive" }.count } }
        var retryMilliseconds: String? { lock.withLock { retry } }
        var isEnded: Bool { lock.withLock { ended } }

        /// Waits until `done` holds for what was received, or fails after `timeout`.
        func wait(
            timeout: Duration = .seconds(30), file: StaticString = #filePath, line: UInt = #line,
            _ done: ([Frame]) -> Bool
        ) async throws {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                if done(received) { return }
                try await Task.sleep(for: .milliseconds(20))
            }
            XCTFail("the stream did not get there within \(timeout): \(received)", file: file, line: line)
            throw SystemError("timeout")
        }

        func close() { task?.cancel() }
    }

    func open(
        _ system: GenGateSystem, _ path: String, key: String? = nil, headers: [String: String] = [:]
    ) async throws -> Stream {
        try await Stream(url: system.baseURL + path, key: key ?? system.adminKey, headers: headers)
    }

    func testAJobsStreamSendsEveryEventInOrderThenDoneAndResumesAfterALastEventID() async throws {
        let system = try await GenGateSystem.start(environment: ["GENGATE_SIM_LATENCY_MS": "1500"])
        defer { system.stop() }
        let id = try await system.submit(#"{"model": "sim/image", "prompt": "a lighthouse", "n": 2}"#)
        let stream = try await open(system, "/v1/generations/\(id)/events")
        XCTAssertEqual(stream.status, 200)
        try await stream.wait { $0.last?.event == "done" }
        XCTAssertEqual(stream.retryMilliseconds, "2000")
        // Queue positions (while pending) and the end carry no id: the stored events do.
        let frames = stream.received.filter { $0.event != "queue" }
        XCTAssertEqual(
            frames.map(\.event).filter { $0 != "generation.progress" },
            [
                "generation.created", "generation.started", "generation.output", "generation.output",
                "generation.completed", "done",
            ])
        XCTAssertEqual(frames.last?.json["status"], .string("completed"))
        let ids = frames.compactMap(\.id).compactMap { Int($0) }
        XCTAssertEqual(ids.count, frames.count - 1, "every stored event has an id; done has none")
        XCTAssertEqual(ids, ids.sorted())
        XCTAssertEqual(Set(ids).count, ids.count)
        // Each message's data is the event as the event stream has it.
        XCTAssertEqual(frames[0].json["generation_id"], .string(id))
        XCTAssertEqual(frames[0].json["payload"]?["n"], .number(2))
        stream.close()

        // Resumed after the second event: the rest, and nothing twice.
        let resumed = try await open(system, "/v1/generations/\(id)/events", headers: ["Last-Event-ID": frames[1].id!])
        try await resumed.wait { $0.last?.event == "done" }
        XCTAssertEqual(resumed.received, Array(frames.dropFirst(2)))
        // After the last event: only the end.
        let last = try await open(
            system, "/v1/generations/\(id)/events", headers: ["Last-Event-ID": frames[frames.count - 2].id!])
        try await last.wait { $0.last?.event == "done" }
        XCTAssertEqual(last.received.map(\.event), ["done"])

        for bad in ["x", "12.1", "-3", "1.2.x"] {
            let answer = try await system.request(
                .GET, "/v1/generations/\(id)/events?last_event_id=\(bad)")
            XCTAssertEqual(answer.status, 400, bad)
            XCTAssertEqual(answer.json["error"]?["code"], .string("invalid_request"))
        }
        let other = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "other"}"#).json
        let stranger = try await system.request(
            .GET, "/v1/generations/\(id)/events", key: .some(other["key"]!.stringValue!))
        XCTAssertEqual(stranger.status, 404, "another key's job does not exist for it")
    }

    /// The store can show a job's end before the bus brings the last text chunks streamed ahead
    /// of it. The test plays the dispatcher (only the bus and api-ingress run): a chunk on the
    /// bus, the end committed, a hint that wakes the stream, and only then the last chunk and the
    /// end on the bus. The stream holds the end back until the bus's end comes, so every chunk
    /// goes out before it; when the bus's end never comes, the stream ends a second later anyway,
    /// and at once for a job that cannot have streamed text.
    func testAJobsEndWaitsForTheTextChunksTheBusStillCarries() async throws {
        let system = try await GenGateSystem.start(arguments: ["--services", "bus,api-ingress"])
        defer { system.stop() }
        let store = try SQLiteStore(path: system.dataDir.appendingPathComponent("gengate.sqlite").path)
        let zmq = try ZMQContext()
        let bus = try await EventPublisher.connect(
            context: zmq, endpoint: "ipc://\(system.dataDir.path)/run/events-in.sock", source: "dispatcher-test")
        func chunk(_ id: String, _ index: Int, _ text: String, at: Date) -> Event {
            Event(
                .generationStreamChunk(.init(attempt: 1, index: index, outputIndex: 0, text: text)), generationID: id,
                at: at)
        }
        func end(_ id: String) async throws -> Event {
            let job = try await store.generation(id: id)
            var change = Transition.of(try XCTUnwrap(job), to: .completed)
            change.attempts = 1
            change.events = [
                Event(
                    .generationCompleted(
                        .init(outputs: 1, attempts: 1, provider: "sim", model: job?.model ?? "", durationMs: 10)),
                    generationID: id)
            ]
            let ended = try await store.transition(change)
            XCTAssertNotNil(ended)
            // A hint that is not the end: the stream reads the store and finds the job ended.
            bus.publish(Event(.generationProgress(.init(progress: 50)), generationID: id))
            return change.events[0]
        }

        let id = try await system.submit(#"{"model": "sim/text", "prompt": "the lamp is lit"}"#)
        let stream = try await open(system, "/v1/generations/\(id)/events")
        let first = chunk(id, 0, "the lamp ", at: Date())
        // A publisher's first messages are lost while it connects: sent again until the stream
        // has it (a chunk already sent is not sent twice).
        for _ in 0..<200 where !stream.received.contains(where: { $0.event == "generation.stream_chunk" }) {
            bus.publish(first)
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTAssertTrue(stream.received.contains { $0.event == "generation.stream_chunk" }, "the bus carries events")
        let lastAt = Date()
        let ended = try await end(id)
        try await Task.sleep(for: .milliseconds(250))
        XCTAssertFalse(
            stream.received.contains { $0.event == "generation.completed" || $0.event == "done" },
            "the end waits for the bus: \(stream.received.map(\.event))")
        bus.publish(chunk(id, 1, "is lit", at: lastAt))
        bus.publish(ended)
        try await stream.wait { $0.last?.event == "done" }
        let frames = stream.received.filter { $0.event != "queue" }
        XCTAssertEqual(
            frames.map(\.event),
            [
                "generation.created", "generation.stream_chunk", "generation.stream_chunk", "generation.completed",
                "done",
            ])
        XCTAssertEqual(
            frames.filter { $0.event == "generation.stream_chunk" }.map {
                $0.json["payload"]?["text"]?.stringValue ?? ""
            }
            .joined(), "the lamp is lit")

        // The bus never brings the end: the stream ends after the grace, not never.
        let other = try await system.submit(#"{"model": "sim/text", "prompt": "the lamp is out"}"#)
        let quiet = try await open(system, "/v1/generations/\(other)/events")
        try await quiet.wait { frames in frames.contains { $0.event == "generation.created" } }
        let committed = ContinuousClock.now
        _ = try await end(other)
        try await quiet.wait { $0.last?.event == "done" }
        let waited = ContinuousClock.now - committed
        XCTAssertGreaterThanOrEqual(waited, .milliseconds(900), "held for the bus's end")
        XCTAssertLessThan(waited, .seconds(4), "but not for long")
        XCTAssertEqual(
            quiet.received.filter { $0.event != "queue" }.map(\.event),
            ["generation.created", "generation.completed", "done"])

        // An image job has no text to wait for.
        let image = try await system.submit(#"{"model": "sim/image", "prompt": "a lamp"}"#)
        let plain = try await open(system, "/v1/generations/\(image)/events")
        try await plain.wait { frames in frames.contains { $0.event == "generation.created" } }
        let imageEnded = ContinuousClock.now
        _ = try await end(image)
        try await plain.wait { $0.last?.event == "done" }
        XCTAssertLessThan(ContinuousClock.now - imageEnded, .milliseconds(900), "no wait")
        stream.close()
        quiet.close()
        plain.close()
        await bus.close()
    }

    /// A streamed chat's text chunks come in order between its other events, with ids that
    /// resume them, and a stream opened after the chat ended still gets them.
    func testStreamedTextChunksArriveInOrderAndResume() async throws {
        let sim = try await ProviderSimulatorTests.SimulatorProcess(
            provider: "openai", key: "sk-openai-test", knobs: #"{"task_seconds": 1}"#)
        defer { sim.stop() }
        let system = try await GenGateSystem.start(environment: sim.environment)
        defer { system.stop() }
        let id = try await system.submit(#"{"model": "openai/gpt-4o-mini", "prompt": "the lamp is lit at dusk"}"#)
        let stream = try await open(system, "/v1/generations/\(id)/events")
        try await stream.wait { $0.last?.event == "done" }
        let frames = stream.received
        let chunks = frames.filter { $0.event == "generation.stream_chunk" }
        XCTAssertGreaterThan(chunks.count, 1, "\(frames.map(\.event))")
        XCTAssertEqual(chunks.map { $0.json["payload"]?["index"]?.intValue ?? -1 }, Array(0..<chunks.count))
        let outputAt = try XCTUnwrap(frames.firstIndex { $0.event == "generation.output" })
        XCTAssertLessThan(frames.lastIndex { $0.event == "generation.stream_chunk" }!, outputAt)
        let text = chunks.map { $0.json["payload"]?["text"]?.stringValue ?? "" }.joined()
        let output = try await system.request(.GET, "/v1/generations/\(id)/outputs/0")
        XCTAssertEqual(String(decoding: output.body, as: UTF8.self), text, "the chunks make the stored text")

        // Resumed in the middle of the chunks: the rest of them, then the rest of the events.
        let middle = chunks[chunks.count / 2]
        let resumed = try await open(system, "/v1/generations/\(id)/events", headers: ["Last-Event-ID": middle.id!])
        try await resumed.wait { $0.last?.event == "done" }
        let start = frames.firstIndex(of: middle)! + 1
        XCTAssertEqual(resumed.received, Array(frames[start...]))
    }

    func testAQuietStreamSendsKeepAlivesAndAPendingJobItsPlaceInTheQueue() async throws {
        // One task at a time on a slow provider: the third job waits in the queue.
        let system = try await GenGateSystem.start(environment: [
            "GENGATE_SIM_LATENCY_MS": "4000", "GENGATE_SIM_MAX_CONCURRENCY": "1",
            "GENGATE_EVENT_STREAM_KEEP_ALIVE_SECONDS": "1",
        ])
        defer { system.stop() }
        var ids: [String] = []
        for _ in 0..<3 { ids.append(try await system.submit(#"{"model": "sim/image", "prompt": "a queue"}"#)) }
        let stream = try await open(system, "/v1/generations/\(ids[2])/events")
        try await stream.wait { frames in frames.contains { $0.event == "queue" } }
        let queue = try XCTUnwrap(stream.received.first { $0.event == "queue" })
        XCTAssertEqual(queue.json["generation_id"], .string(ids[2]))
        XCTAssertGreaterThanOrEqual(queue.json["position"]?.intValue ?? -1, 0)
        XCTAssertNil(queue.id, "a queue position is not an event to resume from")
        let deadline = ContinuousClock.now + .seconds(10)
        while stream.keepAlives < 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        XCTAssertGreaterThanOrEqual(stream.keepAlives, 2)
        stream.close()
    }

    /// `GET /v1/events` streams every job of the caller's key and no other key's; a client that
    /// stops reading slows neither the service nor another reader.
    func testTheCallersStreamHasAllItsJobsAndASlowReaderHoldsNobodyBack() async throws {
        let system = try await GenGateSystem.start()
        defer { system.stop() }
        let other = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "other"}"#).json
        let otherKey = try XCTUnwrap(other["key"]?.stringValue)
        let mine = try await open(system, "/v1/events")
        let theirs = try await open(system, "/v1/events", key: otherKey)
        // A reader that never reads: its socket's buffers fill, and only its stream waits.
        let stalled = try StalledReader(
            port: system.httpPort, path: "/v1/events", key: system.adminKey)
        defer { stalled.close() }
        try await Task.sleep(for: .milliseconds(300))
        let started = ContinuousClock.now
        var ids: [String] = []
        for index in 0..<80 {
            ids.append(
                try await system.submit(
                    #"{"model": "sim/text", "prompt": "job \#(index) \#(String(repeating: "x", count: 2_000))"}"#))
        }
        let otherID = try await system.submit(#"{"model": "sim/image", "prompt": "theirs"}"#, key: otherKey)
        for id in ids { _ = try await system.waitForStatus(id, "completed") }
        let elapsed = ContinuousClock.now - started
        try await mine.wait { frames in
            Set(
                frames.filter { $0.event == "generation.completed" }.compactMap {
                    $0.json["generation_id"]?.stringValue
                }
            )
            .isSuperset(of: ids)
        }
        XCTAssertFalse(mine.received.contains { $0.json["generation_id"]?.stringValue == otherID })
        try await theirs.wait { $0.contains { $0.event == "generation.completed" } }
        XCTAssertEqual(
            Set(theirs.received.compactMap { $0.json["generation_id"]?.stringValue }), [otherID],
            "a key sees its own jobs only")
        print("80 jobs with a stalled /v1/events reader attached: \(elapsed)")
        XCTAssertLessThan(elapsed, .seconds(30))
        mine.close()
        theirs.close()
    }

    func testPreferWaitAnswersWithTheFinishedJobOrTheUsual202() async throws {
        let system = try await GenGateSystem.start(environment: ["GENGATE_SIM_LATENCY_MS": "300"])
        defer { system.stop() }
        let quick = try await system.request(
            .POST, "/v1/generations", body: #"{"model": "sim/image", "prompt": "quick", "n": 2}"#,
            headers: [("Prefer", "wait=20")])
        XCTAssertEqual(quick.status, 200, String(decoding: quick.body, as: UTF8.self))
        XCTAssertEqual(quick.json["status"], .string("completed"))
        XCTAssertEqual(quick.json["outputs"]?.arrayValue?.count, 2)
        XCTAssertEqual(quick.headers.first(name: "Preference-Applied"), "wait=20")

        let started = ContinuousClock.now
        let slow = try await system.request(
            .POST, "/v1/generations", body: #"{"model": "sim/video", "prompt": "slow"}"#,
            headers: [("Prefer", "respond-async, wait=1")])
        let waited = ContinuousClock.now - started
        XCTAssertEqual(slow.status, 202)
        XCTAssertNotNil(slow.json["id"]?.stringValue)
        XCTAssertGreaterThanOrEqual(waited, .milliseconds(900))
        XCTAssertLessThan(waited, .seconds(5))

        // Preferences it does not know are ignored, malformed ones too (RFC 7240).
        for other in ["=", "respond-async", "a, =="] {
            let answer = try await system.request(
                .POST, "/v1/generations", body: #"{"model": "sim/image", "prompt": "other"}"#,
                headers: [("Prefer", other)])
            XCTAssertEqual(answer.status, 202, other)
        }
        for bad in ["wait=0", "wait=61", "wait=soon"] {
            let answer = try await system.request(
                .POST, "/v1/generations", body: #"{"model": "sim/image", "prompt": "bad"}"#, headers: [("Prefer", bad)])
            XCTAssertEqual(answer.status, 400, bad)
            XCTAssertEqual(answer.json["error"]?["details"]?.arrayValue?.first?["path"], .string("Prefer"))
        }
    }
}

/// A client that sends a request and then never reads: a small receive buffer, so the server's
/// writes to it block once a few kilobytes are in flight.
final class StalledReader: @unchecked Sendable {
    let descriptor: Int32

    init(port: Int, path: String, key: String) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var size: Int32 = 1_024
        setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw SystemError("cannot connect to 127.0.0.1:\(port)") }
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(key)\r\n\r\n"
        _ = request.withCString { send(descriptor, $0, strlen($0), 0) }
    }

    func close() { _ = Glibc.close(descriptor) }
}
