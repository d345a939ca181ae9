import Foundation
import GenGateRuntime
import Logging
import ServiceLifecycle
import Synchronization

/// Runs each service as a child process and keeps it running: a child that exits is started
/// again after a back-off (reset once it has stayed up a while). On graceful shutdown every child
/// gets SIGTERM, and SIGKILL if it has not exited within `stopTimeout`. Children watch a pipe
/// from the supervisor and shut down when it dies (see `ParentWatch`), so none outlives it.
/// Each child's pid is written to `<data dir>/run/<service>.pid`.
struct Supervisor: Service, CustomStringConvertible {
    var description: String { "Supervisor(\(services.joined(separator: ", ")))" }

    static let allServices = ["monitor", "dispatcher", "poller", "uploader", "api-ingress"]

    let config: GenGateConfig
    let configPath: String
    let services: [String]
    let logger: Logger
    /// Where the leases of a child that exited are voided, so its jobs move on at once.
    let leases: LeaseReaper
    /// Set for every child on top of ours (the simulators' credentials).
    let extraEnvironment: [String: String]
    let children: ChildTable

    init(
        config: GenGateConfig, configPath: String, services: [String], logger: Logger, leases: LeaseReaper,
        extraEnvironment: [String: String] = [:]
    ) {
        self.extraEnvironment = extraEnvironment
        self.config = config
        self.configPath = configPath
        self.services = services
        self.logger = logger
        self.leases = leases
        // A child drains for `drain_seconds` on SIGTERM; it is killed only if it takes longer.
        self.children = ChildTable(stopTimeout: .milliseconds(Int(config.jobs.drainSeconds * 1_000)) + .seconds(10))
    }

    func run() async throws {
        // A host that runs only the bus: nothing to supervise until told to stop.
        if services.isEmpty { return try await UntilShutdown().run() }
        let binaries = Self.binaryDirectory()
        let environment = Self.childEnvironment().merging(extraEnvironment) { $1 }
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                for service in services {
                    group.addTask {
                        await keepRunning(
                            service: service, executable: binaries.appendingPathComponent(service),
                            environment: environment)
                    }
                }
            }
        } onGracefulShutdown: {
            children.shutDown(logger: logger)
        }
    }

    /// Starts `service` and restarts it whenever it exits, until shutdown.
    func keepRunning(service: String, executable: URL, environment: [String: String]) async {
        var backoff: Duration = .milliseconds(250)
        let pidFile = config.runDirectory.appendingPathComponent("\(service).pid")
        while !children.isShuttingDown {
            let process = Process()
            process.executableURL = executable
            process.arguments = ["--config", configPath]
            process.environment = environment
            // A fresh pipe per child: Foundation closes the child's end in this process once spawned.
            let lifeline = Pipe()
            process.standardInput = lifeline
            let started = ContinuousClock.now
            let status: String
            var childPID: Int32?
            do {
                status = try await children.run(process, service: service) { pid in
                    childPID = pid
                    try? "\(pid)\n".write(to: pidFile, atomically: true, encoding: .utf8)
                    logger.info("started \(service)", metadata: ["pid": "\(pid)"])
                }
            } catch {
                logger.error(
                    "cannot start \(service)", metadata: ["executable": "\(executable.path)", "error": "\(error)"])
                status = "not started"
            }
            if let childPID {
                await leases.processEnded(ServiceEnvironment.instanceName(service: service, pid: childPID))
            }
            if children.isShuttingDown { break }
            if ContinuousClock.now - started > .seconds(30) { backoff = .milliseconds(250) }
            logger.warning("\(service) ended (\(status)); restarting", metadata: ["in": "\(backoff)"])
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(10))
        }
        try? FileManager.default.removeItem(at: pidFile)
    }

    /// Where the service executables are: next to this one.
    static func binaryDirectory() -> URL {
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            return URL(fileURLWithPath: path).deletingLastPathComponent()
        }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    }

    /// The children's environment: ours, without the settings already resolved into the
    /// configuration file they get (so a flag given to `up` is not undone by the environment),
    /// plus our pid for their parent-death check.
    static func childEnvironment() -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        for name in ConfigLoader.environmentKeys.keys { environment[name] = nil }
        environment["GENGATE_CONFIG"] = nil
        environment["GENGATE_SUPERVISOR_PID"] = "\(getpid())"
        return environment
    }
}

/// The running children, shared by their supervising tasks and the shutdown handler.
final class ChildTable: Sendable {
    private struct State {
        var running: [String: Process] = [:]
        var shuttingDown = false
    }

    private let state = Mutex(State())
    let stopTimeout: Duration

    init(stopTimeout: Duration) {
        self.stopTimeout = stopTimeout
    }

    var isShuttingDown: Bool { state.withLock { $0.shuttingDown } }

    /// Runs `process` until it ends and says how: "exit 1", "signal 9".
    func run(_ process: Process, service: String, onStart: (Int32) -> Void) async throws -> String {
        let (exits, continuation) = AsyncStream<String>.makeStream()
        process.terminationHandler = { finished in
            let how = finished.terminationReason == .uncaughtSignal ? "signal" : "exit"
            continuation.yield("\(how) \(finished.terminationStatus)")
            continuation.finish()
        }
        let refused = state.withLock { state -> Bool in
            if state.shuttingDown { return true }
            state.running[service] = process
            return false
        }
        if refused { return "not started: shutting down" }
        do {
            try process.run()
        } catch {
            _ = state.withLock { $0.running.removeValue(forKey: service) }
            throw error
        }
        onStart(process.processIdentifier)
        // A shutdown that began while this child was starting did not signal it: do it now.
        if isShuttingDown { kill(process.processIdentifier, SIGTERM) }
        var status = "unknown"
        for await how in exits { status = how }
        // The child's standard input (see `ParentWatch`): our write end stays open while it runs.
        try? (process.standardInput as? Pipe)?.fileHandleForWriting.close()
        _ = state.withLock { $0.running.removeValue(forKey: service) }
        return status
    }

    /// SIGTERM to every child now; SIGKILL to any still there after the stop timeout.
    func shutDown(logger: Logger) {
        let processes = state.withLock { state -> [(String, Process)] in
            state.shuttingDown = true
            return Array(state.running)
        }
        for (service, process) in processes where process.isRunning {
            logger.info("stopping \(service)", metadata: ["pid": "\(process.processIdentifier)"])
            kill(process.processIdentifier, SIGTERM)
        }
        Task.detached { [self] in
            try? await Task.sleep(for: stopTimeout)
            let stragglers = state.withLock { Array($0.running) }
            for (service, process) in stragglers where process.isRunning {
                logger.warning(
                    "\(service) did not stop in time; killing it", metadata: ["pid": "\(process.processIdentifier)"])
                kill(process.processIdentifier, SIGKILL)
            }
        }
    }
}
