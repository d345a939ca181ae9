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

    @Option(name: .long, parsing: .upToNextOption, help: "Services to run (default: all five).")
    var services: [String] = Supervisor.allServices

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
        if let dataDir = options.dataDir { overrides.append((["data_dir"], .string(dataDir))) }
        if let httpPort { overrides.append((["http", "port"], .number(Double(httpPort)))) }
        if let monitorPort { overrides.append((["monitor", "port"], .number(Double(monitorPort)))) }
        if let eventsPort { overrides.append((["bus", "events_port"], .number(Double(eventsPort)))) }
        var config: GenGateConfig
        do {
            config = try ConfigLoader.load(file: options.config, overrides: overrides)
        } catch {
            throw ValidationError("\(error)")
        }
        for service in services where !Supervisor.allServices.contains(service) {
            throw ValidationError(
                "unknown service \(service); known: \(Supervisor.allServices.joined(separator: ", "))")
        }
        if simulateProviders {
            // Simulated jobs never share a store with real ones: a real job resumed against a
            // simulator would be lost (and its task left running, billed), a simulated one
            // resumed against the real provider would be paid for.
            config.dataDir = config.dataDirectory.appendingPathComponent("simulated").path
            config.store.path = nil
            config.objects.directory = nil
        }
        LogSetup.bootstrap(config: config, service: "gengate", instance: "gengate-\(getpid())")
        let logger = Logger(label: "gengate.supervisor")
        // Everything this process and its children create (the store, outputs, sockets, keys)
        // is readable by this user only.
        umask(0o077)

        let lock = try DataDirectoryLock.acquire(config: config)
        defer { lock.release() }
        let store = try await Preparation.prepare(config: config, logger: logger)
        var simulated = ProviderSimulation()
        if simulateProviders {
            simulated = try await ProviderSimulation.start(config: &config, logger: logger)
        }
        defer { simulated.stop() }
        let configPath = try Preparation.writeResolvedConfig(config)
        let devices = try await BusDevices.start(config: config, logger: logger)

        let leases = LeaseReaper(store: store, staleAfterSeconds: config.jobs.staleAfterSeconds, logger: logger)
        await leases.reapGoneProcesses()
        let supervisor = Supervisor(
            config: config, configPath: configPath, services: services, logger: logger, leases: leases,
            extraEnvironment: simulated.credentials)
        logger.info(
            "GenGate is starting",
            metadata: [
                "http": "\(config.http.host):\(config.http.port)",
                "monitor": "\(config.monitor.host):\(config.monitor.port)",
                "events": "\(devices.publicEvents)", "data_dir": "\(config.dataDirectory.path)",
            ])
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: supervisor)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        await devices.stop()
        logger.info("GenGate stopped")
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
        _ = try await Preparation.prepare(config: config, logger: Logger(label: "gengate.migrate"))
    }
}
