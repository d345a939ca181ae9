import Foundation
import GenGateCore
import GenGateProviderSim
import GenGateRuntime
import Logging

/// `gengate up --simulate-providers`: one simulator per real provider in this process, each
/// adapter pointed at its own (its base URL in the resolved configuration, a made-up key in the
/// children's environment), and `<data dir>/simulators.json` saying where each one listens, so
/// tools can reach its `/_sim` endpoints (removed when `up` stops). `gengate up` runs this on a
/// data directory of its own (`simulated/` inside the given one).
struct ProviderSimulation {
    var servers: [SimulatorServer] = []
    /// The credential variables the children get.
    var credentials: [String: String] = [:]

    static func start(config: inout GenGateConfig, logger: Logger) async throws -> ProviderSimulation {
        var simulation = ProviderSimulation()
        var addresses: [String: JSONValue] = [:]
        do {
            for provider in RealProvider.all {
                // A key pair is the simulator's `ID:SECRET`, each half in its own variable.
                let parts = provider.credentials.map { _ in "sim_\(provider.name)_" + Identifier.randomToken(count: 32)
                }
                let server = try await SimulatorServer.start(provider.name, key: parts.joined(separator: ":"))
                simulation.servers.append(server)
                for (variable, value) in zip(provider.credentials, parts) { simulation.credentials[variable] = value }
                config.providers[keyPath: provider.connection].baseUrl = server.baseURL + provider.basePath
                addresses[provider.name] = .string(server.baseURL)
            }
            let file = config.dataDirectory.appendingPathComponent("simulators.json")
            try JSONCoding.encoder(pretty: true).encode(JSONValue.object(addresses)).write(to: file, options: .atomic)
            simulation.file = file
        } catch {
            simulation.stop()
            throw error
        }
        logger.notice(
            "simulating every real provider",
            metadata: ["simulators": "\(addresses.mapValues { $0.stringValue ?? "" })"])
        return simulation
    }

    var file: URL?

    func stop() {
        for server in servers { server.stop() }
        if let file { try? FileManager.default.removeItem(at: file) }  // no stale addresses left
    }
}
