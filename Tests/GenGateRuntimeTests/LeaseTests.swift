import Foundation
import GenGateBus
import GenGateCore
import GenGateObjects
import GenGateStore
import Logging
import XCTest
@testable import GenGateRuntime

final class LeaseTests: XCTestCase {
    func testKeepingLeaseOutlivesASlowOperation() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("gg-lease-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var config = GenGateConfig()
        config.dataDir = directory.path
        config.jobs.leaseSeconds = 0.6
        let store = try SQLiteStore(path: config.storePath, migrate: true)
        let zmq = try ZMQContext()
        let environment = ServiceEnvironment(
            service: "test", instance: "worker-a", config: config, logger: Logger(label: "test"), topology: BusTopology(config: config),
            zmq: zmq, store: store, objects: try LocalObjectStore(root: config.objectsDirectory),
            providers: ServiceEnvironment.providers(config: config),
            events: try await EventPublisher.connect(context: zmq, endpoint: "inproc://lease-test", source: "test"), startedAt: Date())

        let key = try await store.createAPIKey(name: "t", isAdmin: false).key
        let now = Date()
        let generation = Generation(
            id: Identifier.make("gen"), ownerKeyID: key.id, request: GenerationRequest(model: "sim/image", prompt: "p"), provider: "sim",
            status: .pending, version: 1, progress: 0, attempts: 0, error: nil, providerTaskID: nil, leaseOwner: nil,
            leaseExpiresAt: nil, nextActionAt: now, deadlineAt: now + 600, createdAt: now, updatedAt: now, phaseTimes: [:], outputs: [])
        try await store.insert(generation, event: Event(.generationCreated, generationID: generation.id))
        let claim = try await store.claim(id: generation.id, statuses: [.pending], owner: "worker-a",
                                          leaseUntil: environment.leaseUntil(), now: Date())
        let claimed = try XCTUnwrap(claim)

        let result = try await environment.keepingLease(claimed) {
            try await Task.sleep(for: .milliseconds(1_500))  // 2.5 lease periods
            return "done"
        }
        XCTAssertEqual(result, "done")
        let stolen = try await store.claim(id: generation.id, statuses: [.pending], owner: "worker-b",
                                           leaseUntil: Date() + 10, now: Date())
        XCTAssertNil(stolen, "the lease was renewed while the operation ran, so nobody could take the job")
        let current = try await store.generation(id: generation.id)
        XCTAssertEqual(current?.leaseOwner, "worker-a")
        await environment.events.close()
    }
}
