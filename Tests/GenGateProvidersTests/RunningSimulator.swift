import Foundation
import GenGateCore
import GenGateProviderSim
import GenGateProviders
import Hummingbird
import Logging
import NIOCore
import XCTest

/// The in-process simulator of the adapter tests, with knobs set from a dictionary.
typealias RunningSimulator = SimulatorServer

extension SimulatorServer {
    func set(_ knobs: [String: Double]) throws {
        _ = try simulator.configure(.object(knobs.mapValues { .number($0) }))
    }
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

/// Checks a task until it ends, as the engine's checks do (every 40 ms here), and returns how it
/// ended, and whether it ever reported progress on the way.
func finish(_ adapter: some ProviderAdapter, _ id: String, _ request: ProviderRequest) async throws -> (
    state: ProviderTaskState, sawProgress: Bool
) {
    var sawProgress = false
    for _ in 0..<100 {
        let state = try await adapter.status(taskID: id, request: request)
        if case .running(let progress?, _) = state, progress > 0 { sawProgress = true }
        switch state {
        case .queued, .running: try await Task.sleep(for: .milliseconds(40))
        default: return (state, sawProgress)
        }
    }
    throw SimError("the task did not end")
}
