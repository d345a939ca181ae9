import Foundation
import XCTest
import GenGateCore
import GenGateObjects
@testable import GenGateRuntime

final class ConfigTests: XCTestCase {
    func file(_ text: String) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("gg-config-\(UUID().uuidString).json")
        try text.write(to: url, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url.path
    }

    func testDefaultsNeedNoFile() throws {
        let config = try ConfigLoader.load(file: nil, environment: [:])
        XCTAssertEqual(config.http.port, 8080)
        XCTAssertEqual(config.monitor.port, 9464)
        XCTAssertEqual(config.bus.eventsPort, 5560)
        XCTAssertEqual(config.dataDir, ".gengate")
        XCTAssertEqual(config.publicBaseURL, "http://127.0.0.1:8080")
    }

    func testFileThenEnvironmentThenFlags() throws {
        let path = try file(
            #"{"http": {"port": 9000, "public_url": "https://gate.example/"}, "sim": {"latency_ms": 10}, "log": {"format": "json"}}"#
        )
        let fromFile = try ConfigLoader.load(file: path, environment: [:])
        XCTAssertEqual(fromFile.http.port, 9000)
        XCTAssertEqual(fromFile.sim.latencyMs, 10)
        XCTAssertEqual(fromFile.publicBaseURL, "https://gate.example")
        let fromEnvironment = try ConfigLoader.load(
            file: path, environment: ["GENGATE_HTTP_PORT": "9100", "GENGATE_SIM_FAILURE_RATE": "0.25"])
        XCTAssertEqual(fromEnvironment.http.port, 9100)
        XCTAssertEqual(fromEnvironment.sim.failureRate, 0.25)
        let fromFlags = try ConfigLoader.load(
            file: path, environment: ["GENGATE_HTTP_PORT": "9100"],
            overrides: [(["http", "port"], .number(9200))])
        XCTAssertEqual(fromFlags.http.port, 9200)
        let viaVariable = try ConfigLoader.load(file: nil, environment: ["GENGATE_CONFIG": path])
        XCTAssertEqual(viaVariable.http.port, 9000)
    }

    /// An OpenAI-compatible server offers its own models: the configuration lists them, and they
    /// replace the defaults; a provider without credentials lists them as unavailable, saying why.
    func testAProvidersModelsCanBeConfigured() async throws {
        let path = try file(
            #"{"providers": {"openai": {"base_url": "http://127.0.0.1:1/v1", "models": [{"id": "openai/qwen2.5:7b", "kind": "text"}, {"id": "openai/Kwai-Kolors/Kolors", "kind": "image", "max_outputs": 4, "max_outputs_per_call": 1}]}}}"#
        )
        let config = try ConfigLoader.load(file: path, environment: [:])
        let registry = ServiceEnvironment.providers(config: config, environment: ["OPENAI_API_KEY": "sk-x"])
        defer { Task { await registry.shutdown() } }
        let adapter = try registry.adapter("openai")
        XCTAssertEqual(adapter.models.map(\.id), ["openai/qwen2.5:7b", "openai/Kwai-Kolors/Kolors"])
        XCTAssertEqual(registry.model("openai/Kwai-Kolors/Kolors")?.maxOutputsPerCall, 1)
        XCTAssertEqual(registry.model("openai/qwen2.5:7b")?.kind, .text)
        XCTAssertNil(registry.model("openai/gpt-4o-mini"), "the defaults are replaced")
        let without = ServiceEnvironment.providers(config: config, environment: [:])
        XCTAssertEqual(
            without.unavailableReason(model: "openai/qwen2.5:7b").map { $0.contains("OPENAI_API_KEY") }, true)
        for bad in [
            #"{"providers": {"openai": {"models": []}}}"#,
            #"{"providers": {"openai": {"models": [{"id": "flux/x", "kind": "image"}]}}}"#,
            #"{"providers": {"openai": {"models": [{"id": "openai/a b", "kind": "image"}]}}}"#,
            #"{"providers": {"openai": {"models": [{"id": "openai/x", "kind": "sound"}]}}}"#,
            #"{"providers": {"openai": {"models": [{"id": "openai/x", "kind": "text", "max_outputs": 0}]}}}"#,
        ] {
            XCTAssertThrowsError(try ConfigLoader.load(file: try file(bad), environment: [:]), bad)
        }
    }

    /// Retries can be set per provider, over the general settings; a provider that does not
    /// exist, or numbers out of range, are refused.
    func testRetriesCanBeSetPerProvider() throws {
        let config = try ConfigLoader.load(
            file: try file(
                #"{"jobs": {"max_attempts": 3, "provider_retry": {"kling": {"max_attempts": 6, "rate_limit_base_seconds": 60}}}}"#
            ), environment: ["GENGATE_RATE_LIMIT_BASE_SECONDS": "20"])
        let policy = config.policy
        XCTAssertEqual(policy.retry(for: "kling").maxAttempts, 6)
        XCTAssertEqual(policy.retry(for: "kling").rateLimitBaseSeconds, 60)
        XCTAssertEqual(policy.retry(for: "kling").baseSeconds, 2, "unset: the general value")
        XCTAssertEqual(policy.retry(for: "flux").maxAttempts, 3)
        XCTAssertEqual(policy.retry(for: "flux").rateLimitBaseSeconds, 20)
        for bad in [
            #"{"jobs": {"provider_retry": {"klingg": {"max_attempts": 2}}}}"#,
            #"{"jobs": {"provider_retry": {"kling": {"max_attempts": 0}}}}"#,
            #"{"jobs": {"provider_retry": {"kling": {"retry_base_seconds": 90, "retry_max_seconds": 10}}}}"#,
            #"{"jobs": {"rate_limit_base_seconds": 0}}"#,
            #"{"jobs": {"provider_retry": {"kling": {"max_attempt": 8}}}}"#,
            #"{"jobs": {"provider_retry": {"kling": {}}}}"#,
        ] {
            XCTAssertThrowsError(try ConfigLoader.load(file: try file(bad), environment: [:]), bad)
        }
    }

    func testBadConfigurationSaysWhatIsWrong() throws {
        func message(_ body: () throws -> GenGateConfig) -> String {
            do {
                _ = try body()
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertTrue(
            message { try ConfigLoader.load(file: try file(#"{"http": {"prot": 1}}"#), environment: [:]) }
                .contains("unknown setting http.prot"))
        XCTAssertTrue(
            message { try ConfigLoader.load(file: try file("{nope"), environment: [:]) }.contains("not valid JSON"))
        XCTAssertTrue(
            message { try ConfigLoader.load(file: "/nonexistent.json", environment: [:]) }.contains("cannot read"))
        XCTAssertTrue(
            message { try ConfigLoader.load(file: nil, environment: ["GENGATE_HTTP_PORT": "eighty"]) }
                .contains("GENGATE_HTTP_PORT must be a number"))
        XCTAssertTrue(
            message { try ConfigLoader.load(file: nil, environment: ["GENGATE_HTTP_PORT": "70000"]) }.contains(
                "http.port"))
        XCTAssertTrue(
            message { try ConfigLoader.load(file: nil, environment: ["GENGATE_SIM_FAILURE_RATE": "1.5"]) }
                .contains("sim.failure_rate"))
        XCTAssertTrue(
            message { try ConfigLoader.load(file: try file(#"{"http": {"port": "x"}}"#), environment: [:]) }
                .contains("http.port"))
        XCTAssertTrue(
            message {
                try ConfigLoader.load(
                    file: try file(#"{"bus": {"endpoints": {"bogus": "ipc://x"}}}"#), environment: [:])
            }
            .contains("bus.endpoints.bogus"))
        XCTAssertTrue(
            message {
                try ConfigLoader.load(
                    file: try file(#"{"pricing": {"models": {"x/y": {"per_image": -1}}}}"#), environment: [:])
            }
            .contains("pricing.models.x/y has a negative price"))
        XCTAssertTrue(
            message {
                try ConfigLoader.load(file: try file(#"{"pricing": {"models": {"x/y": {}}}}"#), environment: [:])
            }
            .contains("pricing.models.x/y names no price"))
        XCTAssertTrue(
            message { try ConfigLoader.load(file: try file(#"{"images": {"keep_days": 9}}"#), environment: [:]) }
                .contains("images.keep_days"))
    }

    func testIPCSocketsMoveToAShortDirectoryWhenTheDataDirIsDeep() throws {
        var config = GenGateConfig()
        config.dataDir = "/tmp/short"
        XCTAssertEqual(BusTopology(config: config).endpoints["poll-in"], "ipc:///tmp/short/run/poll-in.sock")
        config.dataDir = "/tmp/" + String(repeating: "deep/", count: 25)
        let endpoint = try XCTUnwrap(BusTopology(config: config).endpoints["dispatch-out"])
        XCTAssertTrue(endpoint.hasPrefix("ipc:///tmp/gengate-"), endpoint)
        XCTAssertLessThanOrEqual(endpoint.dropFirst("ipc://".count).utf8.count, 107)
        config.bus.endpoints["poll-in"] = "tcp://10.0.0.1:7000"
        XCTAssertEqual(BusTopology(config: config).producerEndpoint(.poll), "tcp://10.0.0.1:7000")
    }
}

final class DeployExampleTests: XCTestCase {
    /// deploy/gengate.example.json documents every setting with its default; keep it true.
    func testTheExampleConfigurationIsTheDefaults() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let example = root.appendingPathComponent("deploy/gengate.example.json").path
        XCTAssertEqual(try ConfigLoader.load(file: example, environment: [:]), GenGateConfig())
        XCTAssertEqual(
            try String(contentsOfFile: example, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
            String(decoding: try ConfigLoader.encoded(GenGateConfig()), as: UTF8.self),
            "regenerate it with `gengate config > deploy/gengate.example.json`")
    }

}

/// Where the bus and the outputs are, for a deployment on several hosts.
final class TopologyConfigTests: XCTestCase {
    func testBusHostPutsTheBusOnTCP() throws {
        let local = BusTopology(config: try ConfigLoader.load(file: nil, environment: ["GENGATE_DATA_DIR": "/tmp/gg"]))
        XCTAssertEqual(local.producerEndpoint(.dispatch), "ipc:///tmp/gg/run/dispatch-in.sock")
        XCTAssertEqual(local.bindEndpoints, local.endpoints)

        let config = try ConfigLoader.load(
            file: nil, environment: ["GENGATE_BUS_HOST": "10.0.0.5", "GENGATE_BUS_PORT": "6000"])
        let remote = BusTopology(config: config)
        XCTAssertEqual(remote.producerEndpoint(.dispatch), "tcp://10.0.0.5:6000")
        XCTAssertEqual(remote.consumerEndpoint(.upload), "tcp://10.0.0.5:6005")
        XCTAssertEqual(remote.eventsSubscriberEndpoint, "tcp://10.0.0.5:6007")
        XCTAssertEqual(remote.bindEndpoints["events-out"], "tcp://*:6007", "the bus binds every interface")
        let ipv6 = BusTopology(
            config: try ConfigLoader.load(file: nil, environment: ["GENGATE_BUS_HOST": "fd00::5"]))
        XCTAssertEqual(ipv6.producerEndpoint(.poll), "tcp://[fd00::5]:5572")
        // One endpoint set by hand wins over the host's.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("gg-bus-\(UUID().uuidString).json")
            .path
        try #"{"bus": {"host": "bus.internal", "endpoints": {"poll-in": "tcp://10.1.1.1:7000"}}}"#.write(
            toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let mixed = BusTopology(config: try ConfigLoader.load(file: path, environment: [:]))
        XCTAssertEqual(mixed.producerEndpoint(.poll), "tcp://10.1.1.1:7000")
        XCTAssertEqual(mixed.bindEndpoints["poll-in"], "tcp://10.1.1.1:7000")
        XCTAssertEqual(mixed.consumerEndpoint(.poll), "tcp://bus.internal:5573")
        XCTAssertThrowsError(try ConfigLoader.load(file: nil, environment: ["GENGATE_BUS_PORT": "65530"]))
        XCTAssertThrowsError(try ConfigLoader.load(file: nil, environment: ["GENGATE_BUS_HOST": "tcp://x"]))
    }

    func testS3IsConfiguredFromTheEnvironment() throws {
        let environment = [
            "GENGATE_S3_BUCKET": "outputs", "GENGATE_S3_ENDPOINT": "http://minio:9000",
            "GENGATE_S3_REGION": "eu-west-1",
            "GENGATE_S3_PREFIX": "gen", "GENGATE_S3_PATH_STYLE": "1", "AWS_ACCESS_KEY_ID": "AKID",
            "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token",
            "GENGATE_S3_URL_ENDPOINT": "https://files.example.com", "GENGATE_S3_MEMORY_MIB": "64",
        ]
        let config = try ConfigLoader.load(file: nil, environment: environment)
        XCTAssertEqual(config.objects.prefix, "gen")
        let settings = try XCTUnwrap(try config.s3Settings(environment: environment))
        XCTAssertEqual(settings.endpoint, "http://minio:9000")
        XCTAssertEqual(settings.bucket, "outputs")
        XCTAssertEqual(settings.region, "eu-west-1")
        XCTAssertTrue(settings.pathStyle)
        XCTAssertEqual(settings.partSize, 16 << 20)
        XCTAssertEqual(settings.urlEndpoint, "https://files.example.com")
        XCTAssertEqual(settings.memory, 64 << 20)
        XCTAssertEqual(settings.credentials.sessionToken, "token")
        XCTAssertEqual(try config.objectStore(environment: environment).publicURL(key: "a"), nil)
        // AWS's own endpoint when none is given.
        let aws = try ConfigLoader.load(file: nil, environment: ["GENGATE_S3_BUCKET": "outputs"])
        XCTAssertEqual(
            try aws.s3Settings(environment: ["AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"])?.endpoint,
            "https://s3.us-east-1.amazonaws.com")
        // No bucket: the local directory. A bucket without credentials: what to set.
        XCTAssertNil(try ConfigLoader.load(file: nil, environment: [:]).s3Settings(environment: [:]))
        XCTAssertThrowsError(try aws.s3Settings(environment: [:])) { error in
            XCTAssertTrue("\(error)".contains("AWS_ACCESS_KEY_ID"), "\(error)")
        }
        let badBucket = try ConfigLoader.load(file: nil, environment: ["GENGATE_S3_BUCKET": "Not_A_Bucket"])
        XCTAssertThrowsError(try badBucket.objectStore(environment: environment))
        XCTAssertThrowsError(
            try ConfigLoader.load(file: nil, environment: ["GENGATE_S3_URL_LIFETIME_SECONDS": "700000"]))
        XCTAssertThrowsError(try ConfigLoader.load(file: nil, environment: ["GENGATE_S3_MEMORY_MIB": "1"]))
        // Memory for less than one part still holds one part.
        let small = try ConfigLoader.load(
            file: nil, environment: environment.merging(["GENGATE_S3_MEMORY_MIB": "8"]) { $1 })
        XCTAssertEqual(try small.s3Settings(environment: environment)?.memory, 16 << 20)
        // A timeout that would not fit a deadline is refused, not a crash at the first upload.
        let timeout = #"{"objects": {"s3": {"request_timeout_seconds": 1e300}}}"#
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("s3-timeout-\(UUID()).json")
        try Data(timeout.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        XCTAssertThrowsError(try ConfigLoader.load(file: file.path, environment: [:]))
    }
}
