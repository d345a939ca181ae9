import Foundation
import GenGateCore
import GenGateProviderSim
import GenGateProviders
import Hummingbird
import Logging
import NIOCore
import XCTest

/// A simulator served in this process on a free port, for adapter contract tests.
final class RunningSimulator: Sendable {
    let simulator: ProviderSimulator
    let baseURL: String
    let task: Task<Void, any Error>

    static func start(_ provider: String, key: String, knobs: SimKnobs = SimKnobs()) async throws -> RunningSimulator {
        let simulator = try ProviderSimulator(provider: provider, key: key, knobs: knobs)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        var logger = Logger(label: "provider-sim")
        logger.logLevel = .critical  // cancelling the server at the end of a test is not an error
        let app = Application(
            router: simulator.router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) }, logger: logger)
        let task = Task { try await app.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else { throw SimError("the simulator did not start") }
        return RunningSimulator(simulator: simulator, baseURL: "http://127.0.0.1:\(port)", task: task)
    }

    private init(simulator: ProviderSimulator, baseURL: String, task: Task<Void, any Error>) {
        self.simulator = simulator
        self.baseURL = baseURL
        self.task = task
    }

    func set(_ knobs: [String: Double]) throws {
        let patch = JSONValue.object(knobs.mapValues { .number($0) })
        _ = try simulator.configure(patch)
    }

    func stop() { task.cancel() }
}

/// Fails unless `body` throws a `GenGateError`, then hands it to `check`.
func assertThrows<T>(
    _ body: @autoclosure () async throws -> T, file: StaticString = #filePath, line: UInt = #line,
    _ check: (GenGateError) -> Void
) async {
    do {
        _ = try await body()
        XCTFail("expected an error", file: file, line: line)
    } catch let error as GenGateError {
        check(error)
    } catch {
        XCTFail("not a GenGateError: \(error)", file: file, line: line)
    }
}
