import ArgumentParser
import Foundation
import GenGateCore
import GenGateProviderSim
import Hummingbird

/// `provider-sim --provider replicate --port 9101 --key r8_test`: one provider's API at its real
/// paths, for tests and for trying GenGate without keys. See `ProviderSimulator`.
@main
struct ProviderSimCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "provider-sim",
        abstract: "Serve a simulated provider API (\(ProviderSimulator.providers.joined(separator: ", ")))."
    )

    @Option(help: "The provider to simulate: \(ProviderSimulator.providers.joined(separator: ", ")).")
    var provider: String

    @Option(help: "Port to listen on (0: any free port, printed at start).")
    var port: Int = 0

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "The credential accepted: a token, or ID:SECRET for providers that sign with a pair.")
    var key: String

    @Option(help: "Initial knobs as JSON, e.g. '{\"task_seconds\": 2, \"p_429\": 0.1}' (see POST /_sim/config).")
    var knobs: String = "{}"

    func validate() throws {
        guard (0...65_535).contains(port) else { throw ValidationError("--port must be 0…65535") }
    }

    func run() async throws {
        let patch: JSONValue
        do {
            patch = try JSONCoding.decode(JSONValue.self, from: Data(knobs.utf8))
        } catch {
            throw ValidationError("--knobs is not JSON")
        }
        let simulator: ProviderSimulator
        do {
            simulator = try ProviderSimulator(
                provider: provider, key: key, knobs: try SimKnobs().applying(patch))
        } catch let error as SimError {
            throw ValidationError(error.description)
        }
        let app = Application(
            router: simulator.router(),
            configuration: .init(address: .hostname(host, port: port), serverName: "provider-sim"),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? port
                FileHandle.standardOutput.write(
                    Data("provider-sim: \(simulator.provider) listening on http://\(host):\(bound)\n".utf8))
            })
        try await app.runService()
    }
}
