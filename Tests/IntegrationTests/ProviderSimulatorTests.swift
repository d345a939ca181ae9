import Foundation
import GenGateBus
import GenGateCore
import GenGateLocalPorts
import GenGateProviders
import GenGateStore
import XCTest

/// `provider-sim` as a process: the whole stack running real adapters against it, and the
/// providers' official SDKs driving it.
final class ProviderSimulatorTests: XCTestCase {
    /// One simulator process on a free port, stopped at the end of the test.
    final class SimulatorProcess: @unchecked Sendable {
        let process = Process()
        let port: Int
        var baseURL: String { "http://127.0.0.1:\(port)" }

        let provider: String
        let key: String

        init(provider: String, key: String, knobs: String = "{}") async throws {
            self.provider = provider
            self.key = key
            port = try FreePorts.take(1)[0]
            process.executableURL = GenGateSystem.binDirectory.appendingPathComponent("provider-sim")
            process.arguments = ["--provider", provider, "--key", key, "--port", "\(port)", "--knobs", knobs]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            for _ in 0..<100 {
                if let stats = try? await GenGateSystem.rawRequest(
                    .GET, "http://127.0.0.1:\(port)/_sim/stats", body: nil, key: nil), stats.status == 200
                {
                    return
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            process.terminate()
            throw SystemError("provider-sim did not start")
        }

        /// What GenGate needs to use this simulator as its provider: the credentials and the
        /// base URL, in the variables GenGate reads.
        var environment: [String: String] {
            let parts = key.split(separator: ":", maxSplits: 1).map(String.init)
            let credentials: [String: String]
            switch provider {
            case "flux": credentials = ["BFL_API_KEY": key]
            case "kling": credentials = ["KLING_ACCESS_KEY": parts[0], "KLING_SECRET_KEY": parts.last ?? ""]
            case "hunyuan":
                credentials = ["TENCENTCLOUD_SECRET_ID": parts[0], "TENCENTCLOUD_SECRET_KEY": parts.last ?? ""]
            case "replicate": credentials = ["REPLICATE_API_TOKEN": key]
            default: credentials = ["\(provider.uppercased())_API_KEY": key]
            }
            let base = baseURL + (["dashscope": "/api/v1", "openai": "/v1", "pollo": "/api/platform"][provider] ?? "")
            return credentials.merging(["GENGATE_\(provider.uppercased())_BASE_URL": base]) { $1 }
        }

        func stats() async throws -> JSONValue {
            try await GenGateSystem.rawRequest(.GET, baseURL + "/_sim/stats", body: nil, key: nil).json
        }

        func stop() {
            if process.isRunning {
                process.terminate()
                // A call the simulator holds open on purpose (`p_timeout`) must not hold up the end.
                let deadline = Date().addingTimeInterval(3)
                while process.isRunning && Date() < deadline { usleep(20_000) }
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                process.waitUntilExit()
            }
        }
    }

    /// Each real provider with its simulator: how it is reached, one generation it makes, and
    /// what that costs it (Replicate and Flux make one task per image, DashScope and Kling one
    /// task for all of them).
    struct Case {
        var provider: String
        /// The simulator's credential, and the variables that carry it to GenGate.
        var key: String
        var credentials: [String: String]
        var model: String
        var basePath = ""
        var outputs = 2
        var submissions = 2
        var kind = "image"

        var contentType: String { kind == "video" ? "video/mp4" : "image/png" }
        /// The first bytes of an output: PNG's signature, or an MP4's size and `ftyp` box.
        func looksRight(_ bytes: Data) -> Bool {
            kind == "video"
                ? bytes.count > 8 && bytes[bytes.startIndex + 4..<bytes.startIndex + 8] == Data("ftyp".utf8)
                : bytes.prefix(4) == Data([0x89, 0x50, 0x4E, 0x47])
        }
    }

    static let klingSecret = "sk_test_0123456789abcdef0123456789"

    static let cases = [
        Case(
            provider: "replicate", key: "r8_test", credentials: ["REPLICATE_API_TOKEN": "r8_test"],
            model: "replicate/black-forest-labs/flux-schnell"),
        Case(provider: "flux", key: "bfl_test", credentials: ["BFL_API_KEY": "bfl_test"], model: "flux/flux-pro-1.1"),
        Case(
            provider: "dashscope", key: "sk-test", credentials: ["DASHSCOPE_API_KEY": "sk-test"],
            model: "dashscope/wanx2.1-t2i-turbo", basePath: "/api/v1", submissions: 1),
        Case(
            provider: "kling", key: "ak_test:\(klingSecret)",
            credentials: ["KLING_ACCESS_KEY": "ak_test", "KLING_SECRET_KEY": klingSecret],
            model: "kling/image/kling-v2", submissions: 1),
        Case(
            provider: "openai", key: "sk-openai-test", credentials: ["OPENAI_API_KEY": "sk-openai-test"],
            model: "openai/gpt-image-1", basePath: "/v1", submissions: 1),
        Case(
            provider: "hunyuan", key: "AKIDtest:secret_test",
            credentials: ["TENCENTCLOUD_SECRET_ID": "AKIDtest", "TENCENTCLOUD_SECRET_KEY": "secret_test"],
            model: "hunyuan/hunyuan-image", submissions: 1),
        Case(
            provider: "pollo", key: "pollo_test", credentials: ["POLLO_API_KEY": "pollo_test"],
            model: "pollo/pollo-v1-6", basePath: "/api/platform", outputs: 1, submissions: 1, kind: "video"),
    ]

    /// One `gengate up` with every real provider's adapter pointed at its simulator: each model
    /// listed as available; a generation per provider completes with its outputs stored (images
    /// as PNG, videos as MP4), as many submissions as the provider needs and no duplicate; no key
    /// in the log. Videos are checked on a quick schedule here (their default starts at 15 s).
    func testEveryRealProviderRunsAGenerationThroughTheWholeStack() async throws {
        var sims: [String: SimulatorProcess] = [:]
        defer { sims.values.forEach { $0.stop() } }
        let config = FileManager.default.temporaryDirectory.appendingPathComponent("gg-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: config) }
        try Data(
            #"{"jobs": {"check_schedules": {"video": {"first_seconds": 0.5, "factor": 1.5, "max_seconds": 2, "jitter": 0.1}}}}"#
                .utf8
        ).write(to: config)
        var environment = ["GENGATE_CONFIG": config.path]
        let cases =
            Self.cases + [
                Case(
                    provider: "kling", key: "ak_test:\(Self.klingSecret)", credentials: [:], model: "kling/kling-v1-6",
                    outputs: 1, submissions: 1, kind: "video")
            ]
        for item in Self.cases {
            let sim = try await SimulatorProcess(
                provider: item.provider, key: item.key, knobs: #"{"task_seconds": 0.5}"#)
            sims[item.provider] = sim
            environment.merge(item.credentials) { $1 }
            environment["GENGATE_\(item.provider.uppercased())_BASE_URL"] = sim.baseURL + item.basePath
        }
        let system = try await GenGateSystem.start(environment: environment)
        defer { system.stop() }

        let models = try await system.request(.GET, "/v1/models").json
        guard case .array(let list)? = models["data"] else { return XCTFail("\(models)") }
        var ids: [String] = []
        for item in cases {
            let listed = list.first { $0["id"]?.stringValue == item.model }
            XCTAssertEqual(listed?["available"], .bool(true), item.model)
            XCTAssertEqual(listed?["kind"]?.stringValue, item.kind, item.model)
            ids.append(
                try await system.submit(
                    #"{"model": "\#(item.model)", "prompt": "a lighthouse", "n": \#(item.outputs)}"#))
        }
        var submissions: [String: Int] = [:]
        for (item, id) in zip(cases, ids) {
            submissions[item.provider, default: 0] += item.submissions
            let done = try await system.waitForStatus(id, "completed", timeout: .seconds(30))
            guard case .array(let outputs)? = done["outputs"] else { return XCTFail("\(done)") }
            XCTAssertEqual(outputs.count, item.outputs, item.model)
            for output in outputs {
                XCTAssertEqual(output["content_type"]?.stringValue, item.contentType, item.model)
                let index = output["index"]?.intValue ?? -1
                let bytes = try await system.request(.GET, "/v1/generations/\(id)/outputs/\(index)")
                XCTAssertEqual(bytes.status, 200, item.model)
                XCTAssertTrue(item.looksRight(bytes.body), item.model)
            }
        }
        for (provider, expected) in submissions {
            let stats = try await XCTUnwrap(sims[provider]).stats()
            XCTAssertEqual(stats["submissions"]?.intValue, expected, "\(provider): \(stats)")
            XCTAssertEqual(stats["duplicate_submissions"]?.intValue, 0, provider)
        }
        let log = try String(contentsOf: system.logFile, encoding: .utf8)
        for item in Self.cases {
            for secret in item.credentials.values {
                XCTAssertFalse(log.contains(secret), "a \(item.provider) key reached the log")
            }
        }
    }

    /// `gengate up --simulate-providers`: every real provider tried with no keys, on a data
    /// directory of its own, each simulator's address in `simulators.json` (gone after the stop).
    func testSimulateProvidersLetsEveryProviderBeTriedWithoutKeys() async throws {
        let system = try await GenGateSystem.start(arguments: ["--simulate-providers"])
        defer { system.stop() }
        let file = system.dataDir.appendingPathComponent("simulators.json")
        let addresses = try JSONCoding.decode(JSONValue.self, from: Data(contentsOf: file))
        XCTAssertEqual(system.dataDir.lastPathComponent, "simulated")
        for provider in ["replicate", "flux", "dashscope", "pollo", "kling", "hunyuan", "openai"] {
            XCTAssertTrue(addresses[provider]?.stringValue?.hasPrefix("http://127.0.0.1:") ?? false, "\(addresses)")
        }
        let models = try await system.request(.GET, "/v1/models").json
        guard case .array(let list)? = models["data"] else { return XCTFail("\(models)") }
        XCTAssertTrue(list.allSatisfy { $0["available"] == .bool(true) }, "every model available: \(list)")
        let id = try await system.submit(#"{"model": "dashscope/wanx2.1-t2i-turbo", "prompt": "a lighthouse"}"#)
        _ = try await system.waitForStatus(id, "completed", timeout: .seconds(30))
        let base = try XCTUnwrap(addresses["dashscope"]?.stringValue)
        let stats = try await GenGateSystem.rawRequest(.GET, base + "/_sim/stats", body: nil, key: nil).json
        XCTAssertEqual(stats["submissions"]?.intValue, 1)
        let log = try String(contentsOf: system.logFile, encoding: .utf8)
        XCTAssertFalse(log.contains("sim_dashscope_"), "a simulator's key reached the log")
        system.stop(keepData: true)
        XCTAssertFalse(FileManager.default.fileExists(atPath: file.path), "no stale addresses after the stop")
    }

    func testAModelOfAProviderWithoutCredentialsIsRefusedAtOnceSayingWhatIsMissing() async throws {
        let system = try await GenGateSystem.start()
        defer { system.stop() }
        let answer = try await system.request(
            .POST, "/v1/generations", body: #"{"model": "replicate/black-forest-labs/flux-schnell", "prompt": "x"}"#)
        XCTAssertEqual(answer.status, 400)
        XCTAssertEqual(answer.json["error"]?["code"]?.stringValue, "provider_not_configured")
        XCTAssertTrue(
            answer.json["error"]?["message"]?.stringValue?.contains("REPLICATE_API_TOKEN") ?? false, "\(answer.json)")
        let models = try await system.request(.GET, "/v1/models").json
        guard case .array(let list)? = models["data"] else { return XCTFail("\(models)") }
        let replicate = list.filter { $0["provider"]?.stringValue == "replicate" }
        XCTAssertFalse(replicate.isEmpty)
        XCTAssertTrue(replicate.allSatisfy { $0["available"] == .bool(false) })
        XCTAssertTrue(list.contains { $0["id"]?.stringValue == "sim/image" && $0["available"] == .bool(true) })
    }

    /// Replicate's official Python client (`replicate` on PyPI, pinned in Tests/SDK/requirements.txt)
    /// creates, polls, runs with `Prefer: wait`, reads outputs and cancels against the simulator,
    /// and gets a 401 for a wrong token.
    func testTheOfficialReplicateClientWorksAgainstTheSimulator() async throws {
        let sim = try await SimulatorProcess(provider: "replicate", key: "r8_test", knobs: #"{"task_seconds": 0.3}"#)
        defer { sim.stop() }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("SDK/replicate_client.py")
        let output = try runPython(script, arguments: [sim.baseURL, "r8_test"])
        let seen = try JSONCoding.decode(JSONValue.self, from: Data(output.utf8))
        XCTAssertEqual(seen["polled_outputs"]?.intValue, 2)
        XCTAssertEqual(seen["cancelled"]?.stringValue, "canceled")
        XCTAssertEqual(seen["wrong_token_status"]?.intValue, 401)
    }

    /// Alibaba's official DashScope SDK (`dashscope` on PyPI) submits, fetches, waits, cancels and
    /// meets a wrong key and a bad size against the simulator.
    func testTheOfficialDashScopeSDKWorksAgainstTheSimulator() async throws {
        let sim = try await SimulatorProcess(provider: "dashscope", key: "sk-test", knobs: #"{"task_seconds": 1}"#)
        defer { sim.stop() }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("SDK/dashscope_client.py")
        let output = try runPython(script, arguments: [sim.baseURL + "/api/v1", "sk-test"])
        let seen = try JSONCoding.decode(JSONValue.self, from: Data(output.utf8))
        XCTAssertEqual(seen["images"]?.intValue, 2)
        XCTAssertEqual(seen["cancelled"]?.stringValue, "CANCELED")
        XCTAssertEqual(seen["wrong_key"]?.stringValue, "InvalidApiKey")
    }

    /// With a public URL, providers that call back do: every job completes within seconds though
    /// its polling would first look a minute and more later, each with one status check (the
    /// one the callback made due). A forged callback is refused; a replayed one changes nothing.
    func testProviderCallbacksMoveJobsOnAtOnceAndForgeriesChangeNothing() async throws {
        var sims: [String: SimulatorProcess] = [:]
        defer { sims.values.forEach { $0.stop() } }
        let config = FileManager.default.temporaryDirectory.appendingPathComponent("gg-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: config) }
        let slow = #"{"first_seconds": 20, "factor": 1.5, "max_seconds": 60, "jitter": 0.1}"#
        try Data(#"{"jobs": {"check_schedules": {"image": \#(slow), "video": \#(slow)}}}"#.utf8).write(to: config)
        var environment = ["GENGATE_CONFIG": config.path]
        let cases = Self.cases.filter { ["replicate", "flux", "kling", "pollo"].contains($0.provider) }
        for item in cases {
            let sim = try await SimulatorProcess(provider: item.provider, key: item.key, knobs: #"{"task_seconds": 1}"#)
            sims[item.provider] = sim
            environment.merge(item.credentials) { $1 }
            environment["GENGATE_\(item.provider.uppercased())_BASE_URL"] = sim.baseURL + item.basePath
        }
        let system = try await GenGateSystem.start(environment: environment, publicURL: true)
        defer { system.stop() }
        let started = Date()
        var ids: [String: String] = [:]
        for item in cases {
            ids[item.provider] = try await system.submit(
                #"{"model": "\#(item.model)", "prompt": "a lighthouse", "n": 1}"#)
        }
        for item in cases {
            _ = try await system.waitForStatus(try XCTUnwrap(ids[item.provider]), "completed", timeout: .seconds(15))
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 15, "polling alone would take 80 s")
        for item in cases {
            let stats = try await XCTUnwrap(sims[item.provider]).stats()
            XCTAssertEqual(stats["callbacks"]?.intValue, 1, "\(item.provider): \(stats)")
            XCTAssertEqual(stats["failed_callbacks"]?.intValue, 0, "\(item.provider): \(stats)")
            XCTAssertEqual(stats["status_calls"]?.intValue, 1, "one check, made due by the callback: \(item.provider)")
        }

        // Replicate's callback URL for the job, as GenGate made it, and its signing key as the
        // simulator derives it: a delivery can be forged, replayed and signed at will here.
        let id = try XCTUnwrap(ids["replicate"])
        let before = try await system.request(.GET, "/v1/generations/\(id)").json
        let url = CallbackToken(credentials: ["r8_test"]).url(
            base: "http://127.0.0.1:\(system.httpPort)", provider: "replicate", generationID: id, attempt: 1)
        let key = Digest.sha256(Data("replicate webhooks r8_test".utf8))
        let body = Data(#"{"id": "x", "status": "failed", "error": "forged"}"#.utf8)
        func deliver(to target: String, at time: Date = Date(), signedWith signingKey: [UInt8]) async throws -> Int {
            let stamp = Int(time.timeIntervalSince1970)
            let signature = StandardWebhooks.sign(key: signingKey, id: "msg_1", timestamp: stamp, body: body)
            return try await GenGateSystem.rawRequest(
                .POST, target, body: body, key: nil,
                headers: [
                    ("Content-Type", "application/json"), ("webhook-id", "msg_1"), ("webhook-timestamp", "\(stamp)"),
                    ("webhook-signature", signature),
                ]
            ).status
        }
        let forgedToken = String(url.dropLast(8)) + "00000000"
        let status = try await deliver(to: forgedToken, signedWith: key)
        XCTAssertEqual(status, 404, "a URL GenGate did not make")
        let unsigned = try await deliver(to: url, signedWith: Array(repeating: 7, count: 32))
        XCTAssertEqual(unsigned, 401, "not signed with the account's secret")
        let stale = try await deliver(to: url, at: Date().addingTimeInterval(-600), signedWith: key)
        XCTAssertEqual(stale, 401, "a replay after five minutes")
        let replayed = try await deliver(to: url, signedWith: key)
        XCTAssertEqual(replayed, 200, "a genuine late delivery is taken…")
        let after = try await system.request(.GET, "/v1/generations/\(id)").json
        XCTAssertEqual(after["status"], .string("completed"), "…and changes nothing")
        XCTAssertEqual(after["outputs"], before["outputs"])

        // A signed callback saying "failed" for a task that still runs: the job is checked at
        // once (one status call) and goes on running, since the body is never believed.
        let replicate = try XCTUnwrap(sims["replicate"])
        _ = try await GenGateSystem.rawRequest(
            .POST, replicate.baseURL + "/_sim/config", body: Data(#"{"p_stuck": 1}"#.utf8), key: nil)
        let stuck = try await system.submit(
            #"{"model": "replicate/black-forest-labs/flux-schnell", "prompt": "still"}"#)
        _ = try await system.waitForStatus(stuck, "running", timeout: .seconds(10))
        let calls = try await replicate.stats()["status_calls"]?.intValue ?? -1
        let stuckURL = CallbackToken(credentials: ["r8_test"]).url(
            base: "http://127.0.0.1:\(system.httpPort)", provider: "replicate", generationID: stuck, attempt: 1)
        let forgedEnd = try await deliver(to: stuckURL, signedWith: key)
        XCTAssertEqual(forgedEnd, 200)
        try await Task.sleep(for: .milliseconds(1_500))
        let still = try await system.request(.GET, "/v1/generations/\(stuck)").json
        XCTAssertEqual(still["status"], .string("running"), "the callback's body is never believed")
        let callsAfter = try await replicate.stats()["status_calls"]?.intValue ?? -1
        XCTAssertEqual(callsAfter, calls + 1, "the callback made one check due, at once")
    }

    /// A chat through the whole stack: the provider's streamed text reaches the event stream as
    /// `generation.stream_chunk` events while the job runs, and the whole text is its output.
    func testAChatStreamsItsTextOnTheEventStream() async throws {
        let sim = try await SimulatorProcess(provider: "openai", key: "sk-openai-test", knobs: #"{"task_seconds": 1}"#)
        defer { sim.stop() }
        let system = try await GenGateSystem.start(environment: [
            "OPENAI_API_KEY": "sk-openai-test", "GENGATE_OPENAI_BASE_URL": sim.baseURL + "/v1",
        ])
        defer { system.stop() }
        let context = try ZMQContext()
        let subscriber = try await EventSubscriber.connect(
            context: context, endpoint: "tcp://127.0.0.1:\(system.eventsPort)")
        let collector = Task { () -> (id: String?, chunks: [String]) in
            var chunks: [(Int, String)] = []
            var target: String?
            for await result in subscriber.events {
                guard let received = try? result.get() else { continue }
                if received.event.type == .serviceHeartbeat, target == nil {
                    target = try? await system.submit(
                        #"{"model": "openai/gpt-4o-mini", "prompt": "the lamp is lit at dusk"}"#)
                    continue
                }
                guard let target, received.event.generationID == target else { continue }
                if case .generationStreamChunk(let chunk) = received.event.payload {
                    chunks.append((chunk.index, chunk.text))
                }
                if received.event.type == .generationCompleted { break }
            }
            return (target, chunks.sorted { $0.0 < $1.0 }.map(\.1))
        }
        let timeout = Task {
            try? await Task.sleep(for: .seconds(30))
            collector.cancel()
        }
        let (target, chunks) = await collector.value
        timeout.cancel()
        await subscriber.close()
        let id = try XCTUnwrap(target)
        let done = try await system.waitForStatus(id, "completed", timeout: .seconds(10))
        guard case .array(let outputs)? = done["outputs"], let first = outputs.first else { return XCTFail("\(done)") }
        XCTAssertEqual(first["content_type"]?.stringValue, "text/plain; charset=utf-8", "\(done)")
        let output = try await system.request(.GET, "/v1/generations/\(id)/outputs/0")
        let text = String(decoding: output.body, as: UTF8.self)
        XCTAssertEqual(text, "Echo: the lamp is lit at dusk")
        XCTAssertGreaterThan(chunks.count, 3, "the text came in pieces while the job ran")
        XCTAssertEqual(chunks.joined(), text)
    }

    /// A synchronous provider's outputs arrive with its answer, so a process stopped between the
    /// answer and its record has lost what it paid for: killed there, the job is made again and
    /// the second charge counted; asked to stop there, it finishes recording first and pays once;
    /// killed after the record, nothing is asked twice.
    func testAStoppedSynchronousCallIsPaidOnceOrCounted() async throws {
        for (point, submissions, charges) in [
            ("submit.after_call=kill", 2, 1), ("submit.after_call=term", 1, 0), ("submit.after_record=kill", 1, 0),
        ] {
            let sim = try await SimulatorProcess(
                provider: "openai", key: "sk-openai-test", knobs: #"{"task_seconds": 0.2}"#)
            defer { sim.stop() }
            let system = try await GenGateSystem.start(environment: [
                "OPENAI_API_KEY": "sk-openai-test", "GENGATE_OPENAI_BASE_URL": sim.baseURL + "/v1",
                "GENGATE_FAILPOINTS": point,
                // As in StopTests: a killed worker's hints are lost; the sweep re-drives its jobs soon.
                "GENGATE_SWEEP_INTERVAL_SECONDS": "0.2", "GENGATE_STALE_AFTER_SECONDS": "0.5",
            ])
            defer { system.stop() }
            let id = try await system.submit(#"{"model": "openai/gpt-image-1", "prompt": "\#(point)", "n": 2}"#)
            let done = try await system.waitForStatus(id, "completed", timeout: .seconds(30))
            guard case .array(let outputs)? = done["outputs"] else { return XCTFail("\(done)") }
            XCTAssertEqual(outputs.count, 2, point)
            XCTAssertTrue(
                try String(contentsOf: system.logFile, encoding: .utf8).contains(
                    "fail point \(point.split(separator: "=")[0])"), "\(point) was never reached")
            let stats = try await sim.stats()
            XCTAssertEqual(stats["submissions"]?.intValue, submissions, point)
            XCTAssertEqual(stats["duplicate_submissions"]?.intValue, 0, "each call its own reference: \(point)")
            let store = try SQLiteStore(path: system.dataDir.appendingPathComponent("gengate.sqlite").path)
            let counted = try await store.possibleDoubleCharges()["openai"] ?? 0
            XCTAssertEqual(counted, charges, point)
        }
    }

    /// OpenAI's official Python SDK (`openai` on PyPI) makes images (base64 and URL), edits two
    /// (multipart), streams a chat and reads it whole, lists models, and meets a wrong key and a
    /// bad `n`.
    func testTheOfficialOpenAISDKWorksAgainstTheSimulator() async throws {
        let sim = try await SimulatorProcess(
            provider: "openai", key: "sk-openai-test", knobs: #"{"task_seconds": 0.3}"#)
        defer { sim.stop() }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("SDK/openai_client.py")
        let output = try runPython(script, arguments: [sim.baseURL + "/v1", "sk-openai-test"])
        let seen = try JSONCoding.decode(JSONValue.self, from: Data(output.utf8))
        XCTAssertEqual(seen["b64_images"]?.intValue, 2)
        XCTAssertEqual(seen["url_images"]?.intValue, 1)
        XCTAssertEqual(seen["edited"]?.intValue, 1)
        let received = try await sim.stats()["received_images"]?.arrayValue ?? []
        XCTAssertEqual(
            received.map { $0["field"]?.stringValue }, ["image[]", "image[]"], "the SDK's edit, as it sent it")
        XCTAssertEqual(seen["streamed"]?.stringValue, "Echo: the tide comes in")
        XCTAssertEqual(seen["whole"]?.stringValue, "Echo: hello")
        XCTAssertEqual(seen["wrong_key"]?.stringValue, "invalid_api_key")
        XCTAssertEqual(seen["bad_n"]?.stringValue, "n")
    }

    /// Tencent Cloud's official Hunyuan SDK (`tencentcloud-sdk-python-hunyuan`) submits and
    /// queries a job against the simulator, whose TC3 signature check accepts the SDK's
    /// signatures and refuses one made with the wrong key, as Tencent does.
    func testTheOfficialTencentCloudSDKWorksAgainstTheSimulator() async throws {
        let sim = try await SimulatorProcess(
            provider: "hunyuan", key: "AKIDtest:secret_test", knobs: #"{"task_seconds": 0.5}"#)
        defer { sim.stop() }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("SDK/hunyuan_client.py")
        let output = try runPython(script, arguments: [sim.baseURL, "AKIDtest", "secret_test"])
        let seen = try JSONCoding.decode(JSONValue.self, from: Data(output.utf8))
        XCTAssertEqual(seen["images"]?.intValue, 2)
        XCTAssertEqual(seen["bad_signature"]?.stringValue, "AuthFailure.SignatureFailure")
        XCTAssertEqual(seen["bad_num"]?.stringValue, "InvalidParameterValue")
        let stats = try await sim.stats()
        XCTAssertEqual(stats["submissions"]?.intValue, 1, "refused calls create nothing")
    }

    /// Runs a Python script and returns its last line of output; fails with all it printed.
    func runPython(_ script: URL, arguments: [String]) throws -> String {
        let (status, text) = try Python.run(script, arguments: arguments)
        guard status == 0 else {
            throw SystemError(
                "\(script.lastPathComponent) failed (install its client: pip install -r Tests/SDK/requirements.txt):\n\(text)"
            )
        }
        return text.split(separator: "\n").last.map(String.init) ?? ""
    }
}
