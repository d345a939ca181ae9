import ArgumentParser
import Foundation
import GenGateBus
import GenGateCore
import GenGateJobs
import GenGateObjects
import GenGateProviders
import GenGateStore
import Logging

/// The command-line options every service executable takes.
public struct ServiceOptions: ParsableArguments {
    @Option(name: .long, help: "Configuration file (JSON); GENGATE_CONFIG also sets it.")
    public var config: String?

    @Option(name: .long, help: "Data directory (default ./.gengate; GENGATE_DATA_DIR).")
    public var dataDir: String?

    public init() {}

    /// The configuration these options select, with `overrides` (key paths set by a command's
    /// own flags) on top.
    public func load(overrides extra: [([String], JSONValue)] = []) throws -> GenGateConfig {
        var overrides: [([String], JSONValue)] = []
        if let dataDir { overrides.append((["data_dir"], .string(dataDir))) }
        return try ConfigLoader.load(file: config, overrides: overrides + extra)
    }
}

/// Everything a service is given at start: its configuration, logger, store, object storage,
/// providers, bus context and event publisher. Built once in `start`, then passed down.
public struct ServiceEnvironment: Sendable {
    /// "dispatcher", "poller", …
    public let service: String
    /// Unique per process: "poller-4242@host".
    public let instance: String
    public let config: GenGateConfig
    public let logger: Logger
    public let topology: BusTopology
    public let zmq: ZMQContext
    public let store: any GenerationStore
    public let objects: any ObjectStore
    public let providers: ProviderRegistry
    public let events: EventPublisher
    public let startedAt: Date
    /// Test-only fail points, armed by `GENGATE_FAILPOINTS` (see `FailPoints`).
    public let failPoints: FailPoints

    /// Loads configuration, sets up logging, opens the store (which must be migrated already),
    /// and connects the event publisher. Throws with a message that says what to fix.
    public static func start(service: String, options: ServiceOptions) async throws -> ServiceEnvironment {
        let config = try options.load()
        ParentWatch.install(graceSeconds: config.jobs.drainSeconds + 5)
        let instance = instanceName(service: service, pid: getpid())
        LogSetup.bootstrap(config: config, service: service, instance: instance)
        var logger = Logger(label: "gengate.\(service)")
        logger[metadataKey: "service"] = "\(service)"
        let topology = BusTopology(config: config)
        let zmq = try ZMQContext()
        let store = try await config.openStore(logger: logger)
        let objects = try config.objectStore()
        let failPoints = try FailPoints(
            spec: ProcessInfo.processInfo.environment["GENGATE_FAILPOINTS"] ?? "",
            markerDirectory: config.runDirectory)
        let events = try await EventPublisher.connect(
            context: zmq, endpoint: topology.eventsPublisherEndpoint, source: instance)
        return ServiceEnvironment(
            service: service, instance: instance, config: config, logger: logger, topology: topology,
            zmq: zmq, store: store, objects: objects, providers: Self.providers(config: config),
            events: events, startedAt: Date(), failPoints: failPoints)
    }

    public static let hostName = ProcessInfo.processInfo.hostName

    /// The name a service process goes by, as owner of the leases it takes: "poller-4242@host".
    public static func instanceName(service: String, pid: Int32) -> String { "\(service)-\(pid)@\(hostName)" }

    /// The parts of an instance name, or nil if it is not one.
    public static func parseInstance(_ name: String) -> (service: String, pid: Int32, host: String)? {
        guard let at = name.lastIndex(of: "@") else { return nil }
        let head = name[..<at]
        guard let dash = head.lastIndex(of: "-"), let pid = Int32(head[head.index(after: dash)...]) else { return nil }
        return (String(head[..<dash]), pid, String(name[name.index(after: at)...]))
    }

    /// The providers this configuration offers: the built-in sim, and each real provider whose
    /// credentials are in `environment` (the others are listed as unavailable, with what is missing).
    public static func providers(
        config: GenGateConfig, environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> ProviderRegistry {
        let sim = SimProvider(
            settings: .init(
                latency: .milliseconds(config.sim.latencyMs), failureRate: config.sim.failureRate,
                submitLatency: .milliseconds(config.sim.submitLatencyMs),
                maxOutputsPerCall: config.sim.maxOutputsPerCall,
                ledger: config.sim.ledger.map { URL(fileURLWithPath: $0) },
                findsByReference: config.sim.findsByReference))
        var adapters: [any ProviderAdapter] = [sim]
        var unavailable: [ProviderRegistry.Unavailable] = []
        var tokens: [String: CallbackToken] = [:]
        var limits: [String: ProviderLimits] = [
            sim.name: ProviderLimits(
                maxConcurrency: config.sim.maxConcurrency.flatMap { $0 > 0 ? $0 : nil },
                maxRequestsPerSecond: config.sim.maxRequestsPerSecond.flatMap { $0 > 0 ? $0 : nil })
        ]
        for provider in RealProvider.all {
            let connection = config.providers[keyPath: provider.connection]
            var values: [String] = []
            var missing: String?
            for variable in provider.credentials {
                let value = environment[variable]?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
                if value.isEmpty {
                    missing = "\(variable) is not set"
                } else if !value.unicodeScalars.allSatisfy({ (0x21...0x7e).contains($0.value) }) {
                    // A key goes into a header (or a signature): one with control or non-ASCII
                    // characters would be refused there, by a library that quotes it in its error.
                    missing = "\(variable) holds characters a key cannot have"
                }
                if missing != nil { break }
                values.append(value)
            }
            if missing == nil { missing = provider.problem(values) }
            if let missing {
                unavailable.append(
                    .init(provider: provider.name, models: provider.models(connection), missing: missing))
                continue
            }
            tokens[provider.name] = CallbackToken(credentials: values)
            let adapter = provider.make(
                values,
                ProviderEndpoint(
                    baseURL: connection.baseUrl ?? provider.defaultBaseURL,
                    connectTimeoutSeconds: connection.connectTimeoutSeconds,
                    requestTimeoutSeconds: connection.requestTimeoutSeconds,
                    maxConnections: connection.maxConnections), provider.models(connection))
            adapters.append(adapter)
            limits[provider.name] = connection.limits(over: adapter.capabilities.limits)
        }
        return ProviderRegistry(
            adapters: adapters, unavailable: unavailable, callbackTokens: tokens, limits: limits,
            aliases: config.modelAliases)
    }

    /// How long a stopping service lets its in-flight work finish.
    public var drain: Duration { .milliseconds(Int(config.jobs.drainSeconds * 1_000)) }

    /// The job engine's view of this service; `notify` sends its hints to the work queues,
    /// `images` prepares input images where jobs are submitted.
    public func jobs(
        notify: @escaping @Sendable (Lifecycle.Step, String, String) -> Void = { _, _, _ in },
        images: (any InputImagePreparer)? = nil
    ) -> JobContext {
        JobContext(
            instance: instance, store: store, providers: providers, objects: objects, policy: config.policy,
            logger: logger,
            failPoints: failPoints, objectPrefix: config.objects.prefix, publicBaseURL: config.publicBaseURL,
            callbackBase: config.http.publicUrl == nil ? nil : config.publicBaseURL,
            publish: { [events] in for event in $0 { events.publish(event) } }, images: images,
            notify: notify, prices: config.pricing.table)
    }

    /// Publishes `events` (already committed to the store) on the event stream.
    public func publish(_ events: [Event]) {
        for event in events { self.events.publish(event) }
    }
}

/// Makes a supervised child exit when its supervisor dies, so a killed `gengate up` leaves no
/// orphans holding ports and the database.
///
/// The supervisor gives each child a pipe as standard input and never writes to it; when the
/// supervisor dies, however it dies, the pipe reports end-of-file and the child shuts down
/// (SIGTERM to itself, and a hard exit if it has not drained within its drain time and 5 s). `prctl(PR_SET_PDEATHSIG)`
/// is not used: it fires when the *thread* that spawned the child exits, and Foundation spawns
/// from pool threads that come and go (seen here: every child got SIGTERM after ~5 s).
enum ParentWatch {
    static func install(graceSeconds: Double) {
        guard let text = ProcessInfo.processInfo.environment["GENGATE_SUPERVISOR_PID"], let supervisor = Int32(text)
        else { return }
        if getppid() != supervisor {
            FileHandle.standardError.write(Data("supervisor \(supervisor) is gone; exiting\n".utf8))
            exit(1)
        }
        let watcher = Thread {
            var byte: UInt8 = 0
            while true {
                let count = read(STDIN_FILENO, &byte, 1)
                if count > 0 || (count < 0 && errno == EINTR) { continue }
                FileHandle.standardError.write(Data("supervisor \(supervisor) is gone; shutting down\n".utf8))
                kill(getpid(), SIGTERM)
                Thread.sleep(forTimeInterval: graceSeconds)
                _exit(1)
            }
        }
        watcher.name = "parent-watch"
        watcher.start()
    }
}
