import Foundation
import GenGateBus
import GenGateCore
import GenGateJobs
import Logging
import ServiceLifecycle
import Synchronization

/// Takes work messages from one queue and hands each job to `handler` in a task of its own, at
/// most `concurrency` at once (a full loop stops reading, so its socket's high-water mark pushes
/// back on senders) and never two for the same generation in this process (a duplicate is
/// dropped: the store makes it harmless anyway).
///
/// On graceful shutdown (SIGTERM) it drains: it stops reading at once, lets the handlers in
/// flight finish, and cancels those still running after `drain`. A handler's provider
/// submission is not cancelled even then (see `Submission`): the loop returns once it is recorded.
public struct WorkLoop: Service, CustomStringConvertible {
    public var description: String { "WorkLoop(\(consumer.queue.rawValue))" }

    let consumer: WorkConsumer
    let concurrency: Int
    let drain: Duration
    let logger: Logger
    let handler: @Sendable (String) async -> Void

    public init(
        consumer: WorkConsumer, concurrency: Int, drain: Duration, logger: Logger,
        handler: @escaping @Sendable (String) async -> Void
    ) {
        self.consumer = consumer
        self.concurrency = concurrency
        self.drain = drain
        self.logger = logger
        self.handler = handler
    }

    public func run() async throws {
        let consumer = self.consumer
        let drain = self.drain
        let logger = self.logger
        let work = Task { await receiveAndHandle() }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await work.value
            } onGracefulShutdown: {
                logger.info("draining \(consumer.queue.rawValue) work", metadata: ["drain_seconds": "\(drain)"])
                Task { await consumer.close() }
                Task {
                    try? await Task.sleep(for: drain)
                    work.cancel()
                }
            }
        } onCancel: {
            work.cancel()
        }
        await consumer.close()
    }

    func receiveAndHandle() async {
        let inFlight = InFlightSet()
        let slots = Slots(limit: concurrency)
        await withDiscardingTaskGroup { group in
            for await result in consumer.items {
                let item: WorkItem
                switch result {
                case .success(let value):
                    item = value
                case .failure(let error):
                    logger.warning("rejected \(consumer.queue.rawValue) message", metadata: ["error": "\(error)"])
                    continue
                }
                guard inFlight.insert(item.generationID) else { continue }
                await slots.acquire("")
                group.addTask {
                    await handler(item.generationID)
                    inFlight.remove(item.generationID)
                    slots.release("")
                }
            }
        }
    }
}

/// The generations a work loop is handling now.
final class InFlightSet: Sendable {
    private let ids = Mutex<Set<String>>([])

    /// False if it was already there.
    func insert(_ id: String) -> Bool { ids.withLock { $0.insert(id).inserted } }
    func remove(_ id: String) { _ = ids.withLock { $0.remove(id) } }
}
