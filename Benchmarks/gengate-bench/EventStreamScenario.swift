import Foundation
import GenGateBus
import GenGateCore
import Synchronization

extension Scenarios {
    /// The event stream as the services use it: two publishers (as two services would) publishing
    /// as fast as they can through the forwarder (the bus's XSUB/XPUB device, as `gengate up`
    /// runs it, on `ipc://`) to one subscriber that decodes every event, for `duration`; then the
    /// same with a second subscriber connected that never reads (a stalled consumer), to see
    /// what it costs the publishers and the subscriber that keeps up.
    func eventStream() async throws -> [Row] {
        let context = try ZMQContext()
        let directory = URL(fileURLWithPath: "/tmp/ggb-\(UUID().uuidString.prefix(8).lowercased())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let frontend = "ipc://\(directory.path)/in"
        let backend = "ipc://\(directory.path)/out"
        let device = try await BusDevice.start(
            context: context, kind: .forwarder, name: "events", frontend: [frontend], backend: [backend])
        var rows: [Row] = []
        for stalled in [false, true] {
            // A SUB socket that never reads: its pipe fills to the high-water mark, and then the
            // forwarder drops what would go to it (PUB semantics), never waiting for it.
            let staller = stalled ? try ZMQSocket(context: context, type: .sub) : nil
            try staller?.setReceiveHighWaterMark(1_000)
            try staller?.subscribe("")
            try staller?.connect(backend)
            let subscriber = try await EventSubscriber.connect(context: context, endpoint: backend)
            var publishers: [EventPublisher] = []
            for index in 0..<2 {
                publishers.append(
                    try await EventPublisher.connect(context: context, endpoint: frontend, source: "p\(index)"))
            }
            // Subscriptions travel up to the forwarder and the publishers before anything flows.
            try await Task.sleep(for: .seconds(1))
            let received = Atomic<Int>(0)
            let counting = Task {
                for await result in subscriber.events {
                    if case .success = result { received.add(1, ordering: .relaxed) }
                }
            }
            let event = Event(.generationProgress(.init(progress: 50)), generationID: "gen_01benchmarkevents")
            let size = try Envelope(type: eventMessageType, source: "p0", payload: event, seq: 1).encoded().count
            let window = duration
            let started = ContinuousClock.now
            let published = await withTaskGroup(of: Int.self) { group in
                for publisher in publishers {
                    group.addTask {
                        var count = 0
                        let end = ContinuousClock.now + window
                        while ContinuousClock.now < end {
                            for _ in 0..<256 { publisher.publish(event) }
                            count += 256
                            await Task.yield()
                        }
                        return count
                    }
                }
                return await group.reduce(0, +)
            }
            let publishing = HTTPLoad.seconds(ContinuousClock.now - started)
            let receivedByEnd = received.load(ordering: .relaxed)
            // What was still on its way arrives within a second.
            try await Task.sleep(for: .seconds(1))
            let receivedAll = received.load(ordering: .relaxed)
            let rate = Double(receivedByEnd) / publishing
            let publishRate = Double(published) / publishing
            let lost = published - receivedAll
            log(
                "events\(stalled ? " (a stalled subscriber too)" : ""): published \(published), received \(receivedAll) in \(String(format: "%.1f", publishing)) s"
            )
            rows.append(
                Row(
                    scenario: stalled
                        ? "event stream, 2 publishers → forwarder → 1 subscriber, and 1 stalled subscriber"
                        : "event stream, 2 publishers → forwarder → 1 subscriber",
                    target: "≥ 200,000 events/s" + (stalled ? "; the stall costs the others nothing" : ""),
                    measured: String(format: "%.0f events/s received", rate), met: rate >= 200_000,
                    notes: String(
                        format:
                            "published %.0f/s; %d of %d not received (%.1f%%), %d of them dropped by the subscriber's full inbox; envelopes of %d bytes",
                        publishRate, lost, published, Double(lost) / Double(max(1, published)) * 100,
                        subscriber.droppedMessages, size)))
            for publisher in publishers { await publisher.close() }
            await subscriber.close()
            counting.cancel()
            _ = await counting.value
            staller?.close()
        }
        await device.stop()
        return rows
    }
}
