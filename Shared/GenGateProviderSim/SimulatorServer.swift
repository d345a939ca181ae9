import Foundation
import GenGateCore
import Hummingbird
import Logging

/// A simulator served in this process on a free port (tests, and `gengate up
/// --simulate-providers`); `stop()` ends it.
public final class SimulatorServer: Sendable {
    public let simulator: ProviderSimulator
    /// `http://127.0.0.1:<port>`.
    public let baseURL: String
    let task: Task<Void, any Error>

    public static func start(
        _ provider: String, key: String, knobs: SimKnobs = SimKnobs(), host: String = "127.0.0.1"
    ) async throws -> SimulatorServer {
        let simulator = try ProviderSimulator(provider: provider, key: key, knobs: knobs)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        var logger = Logger(label: "provider-sim.\(provider)")
        logger.logLevel = .critical  // stopping the server with its process is not an error
        let app = Application(
            router: simulator.router(), configuration: .init(address: .hostname(host, port: 0)),
            onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) }, logger: logger)
        let task = Task {
            defer { continuation.finish() }  // a server that cannot start ends the wait below
            try await app.run()
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else {
            task.cancel()
            throw SimError("the \(provider) simulator did not start")
        }
        return SimulatorServer(simulator: simulator, baseURL: "http://\(host):\(port)", task: task)
    }

    private init(simulator: ProviderSimulator, baseURL: String, task: Task<Void, any Error>) {
        self.simulator = simulator
        self.baseURL = baseURL
        self.task = task
    }

    public func stop() { task.cancel() }
}
