import Foundation
import GenGateBus
import Logging
import ServiceLifecycle
import Synchronization

/// Takes work messages from one queue and handles each in its own task, at most `concurrency`
/// at once and never two for the same generation in this process (duplicates are dropped:
/// the store makes them harmless anyway). On graceful shutdown it stops taking messages and
/// cancels the handlers, which give up their leases so another worker takes over at once.
public struct WorkLoop: Service, CustomStringConvertible {
    public var description: String { "WorkLoop(\(consumer.queue.rawValue))" }

    let consumer: WorkConsumer
    let concurrency: Int
    let logger: Logger
    let handler: @Sendable (WorkItem) async -> Void

    public init(consumer: WorkConsumer, concurrency: Int, logger: Logger, handler: @escaping @Sendable (WorkItem) async -> Void) {
        self.consumer = consumer
        self.concurrency = concurrency
        self.logger = logger
        self.handler = handler
    }

    public func run() async throws {
        let inFlight = InFlightSet()
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                var running = 0
                for await result in consumer.items {
                    if Task.isCancelled { break }
                    let item: WorkItem
                    switch result {
                    case .success(let value):
                        item = value
                    case .failure(let error):
                        logger.warning("rejected \(consumer.queue.rawValue) message", metadata: ["error": "\(error)"])
                        continue
                    }
                    let fresh = inFlight.insert(item.generationID)
                    guard fresh else { continue }
                    if running >= concurrency {
                        await group.next()
                        running -= 1
                    }
                    running += 1
                    group.addTask {
                        await handler(item)
                        inFlight.remove(item.generationID)
                    }
                }
            }
        }
        await consumer.close()
    }
}

/// The generations a work loop is handling now.
final class InFlightSet: Sendable {
    private let ids = Mutex<Set<String>>([])

    /// False if it was already there.
    func insert(_ id: String) -> Bool { ids.withLock { $0.insert(id).inserted } }
    func remove(_ id: String) { _ = ids.withLock { $0.remove(id) } }
}
