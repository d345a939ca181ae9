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
