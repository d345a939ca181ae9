import ArgumentParser
import Foundation
import GenGateCore
import GenGateRuntime
import Logging
import ServiceLifecycle

/// `gengate up`: the embedded default. Migrates the store, creates the first admin key, runs the
/// bus devices, and starts every service as a supervised child process.
struct UpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "up", abstract: "Run the whole system on this host.")

    @OptionGroup var options: ServiceOptions

    @Option(name: .long, help: "HTTP API port (default 8080; GENGATE_HTTP_PORT).")
    var httpPort: Int?

    @Option(name: .long, help: "Monitor port for /metrics and /health (default 9464; GENGATE_MONITOR_PORT).")
    var monitorPort: Int?

    @Option(name: .long, help: "Public event stream port, ZeroMQ XPUB (default 5560; GENGATE_EVENTS_PORT).")
    var eventsPort: Int?

    @Option(
        name: .long, parsing: .upToNextOption,
        help: """
            Services to run on this host, by name, separated by spaces or commas: bus, api-ingress, \
            dispatcher, poller, uploader, monitor (default: all). A host without `bus` uses the bus \
            of the host in bus.host (GENGATE_BUS_HOST).
            """)
    var services: [String] = ["bus"] + Supervisor.allServices

    /// The services asked for, commas split, each once, in the order given.
    var chosen: [String] {
        var seen = Set<String>()
        return services.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            .filter { !$0.isEmpty && seen.insert($0).inserted }
    }

    @Flag(
        name: .long,
        help: """
            Start a simulator of every real provider and point its adapter at it, so every provider \
            can be tried with no keys. Runs on <data dir>/simulated (its own store, outputs and \
            admin key); the simulators' addresses go to <data dir>/simulated/simulators.json.
            """)
    var simulateProviders = false

    func run() async throws {
        var overrides: [([String], JSONValue)] = []
        if let httpPort { overrides.append((["http", "port"], .number(Double(httpPort)))) }
        if let monitorPort { overrides.append((["monitor", "port"], .number(Double(monitorPort)))) }
        if let eventsPort { overrides.append((["bus", "events_port"], .number(Double(eventsPort)))) }
        var config: GenGateConfig
        do {
            config = try options.load(overrides: overrides)
        } catch {
            throw ValidationError("\(error)")
        }
        let chosen = self.chosen
        for service in chosen where service != "bus" && !Supervisor.allServices.contains(service) {
            throw ValidationError(
                "unknown service \(service); known: bus, \(Supervisor.allServices.joined(separator: ", "))")
        }
        guard !chosen.isEmpty else { throw ValidationError("--services names no service") }
        let runsBus = chosen.contains("bus")
        let children = chosen.filter { $0 != "bus" }
        if !runsBus, config.bus.host == nil, config.bus.endpoints.isEmpty {
            throw ValidationError(
                "without the bus service, this host needs another's bus: set bus.host (GENGATE_BUS_HOST) to the host that runs it"
            )
        }
        if simulateProviders {
            // Simulated jobs never share a store with real ones: a real job resumed against a
            // simulator would be lost (and its task left running, billed), a simulated one
            // resumed against the real provider would be paid for.
            config.dataDir = config.dataDirectory.appendingPathComponent("simulated").path
            config.store.path = nil
            config.store.url = nil
            config.objects.directory = nil
        }
        LogSetup.bootstrap(config: config, service: "gengate", instance: "gengate-\(getpid())")
        let logger = Logger(label: "gengate.supervisor")
        // Everything this process and its children create (the store, outputs, sockets, keys)
        // is readable by this user only.
        umask(0o077)

        let lock = try DataDirectoryLock.acquire(config: config)
        defer { lock.release() }
        let store = try await Preparation.prepare(config: config, services: children, logger: logger)
        var simulated = ProviderSimulation()
        if simulateProviders {
            simulated = try await ProviderSimulation.start(config: &config, logger: logger)
        }
        defer { simulated.stop() }
        // The store's password goes to the services in their environment, not in the file.
        let (written, storePassword) = config.withoutStorePassword()
        let configPath = try Preparation.writeResolvedConfig(written)
        var childEnvironment = simulated.credentials
        if let storePassword { childEnvironment["PGPASSWORD"] = storePassword }
        let devices = runsBus ? try await BusDevices.start(config: config, logger: logger) : nil

        let leases = LeaseReaper(store: store, staleAfterSeconds: config.jobs.staleAfterSeconds, logger: logger)
        await leases.reapGoneProcesses()
        let supervisor = Supervisor(
            config: config, configPath: configPath, services: children, logger: logger, leases: leases,
            extraEnvironment: childEnvironment)
        logger.info(
            "GenGate is starting",
            metadata: [
                "http": "\(config.http.host):\(config.http.port)",
                "monitor": "\(config.monitor.host):\(config.monitor.port)",
                "events": "\(devices?.publicEvents ?? "on the bus host")",
                "data_dir": "\(config.dataDirectory.path)", "services": "\(chosen.joined(separator: ","))",
            ])
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: supervisor)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        await devices?.stop()
        logger.info("GenGate stopped")
    }
}

/// `gengate bus`: the message bus alone (its queue devices and event forwarder, on TCP ports of
/// `bus.host`), for a deployment whose services run on several hosts. It keeps no state: work
/// in flight while it is down waits in the store, and services reconnect when it is back.
struct BusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bus", abstract: "Run the message bus alone, for services on other hosts.")

    @OptionGroup var options: ServiceOptions

    @Option(name: .long, help: "Public event stream port, ZeroMQ XPUB (default 5560; GENGATE_EVENTS_PORT).")
    var eventsPort: Int?

    func run() async throws {
        let config: GenGateConfig
        do {
            config = try options.load(
                overrides: eventsPort.map { [(["bus", "events_port"], .number(Double($0)))] } ?? [])
        } catch {
            throw ValidationError("\(error)")
        }
        LogSetup.bootstrap(config: config, service: "bus", instance: "bus-\(getpid())")
        let logger = Logger(label: "gengate.bus")
        umask(0o077)
        try FileManager.default.createDirectory(
            atPath: BusTopology.socketDirectory(for: config), withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
        let devices = try await BusDevices.start(config: config, logger: logger)
        logger.info(
            "bus is running",
            metadata: [
                "endpoints": "\(BusTopology(config: config).bindEndpoints.sorted { $0.key < $1.key }.map(\.value))",
                "events": "\(devices.publicEvents)",
            ])
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: UntilShutdown())], gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
        await devices.stop()
        logger.info("bus stopped")
    }
}

/// A service that does nothing until the process is told to stop.
struct UntilShutdown: Service {
    func run() async throws {
        try? await gracefulShutdown()
    }
}

/// `gengate migrate`: brings the store's schema up to this version. `gengate up` does it too.
struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate", abstract: "Create or upgrade the store's schema.")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let config = try options.load()
        LogSetup.bootstrap(config: config, service: "gengate", instance: "gengate-\(getpid())")
        umask(0o077)
        _ = try await Preparation.prepare(config: config, services: [], logger: Logger(label: "gengate.migrate"))
    }
}
