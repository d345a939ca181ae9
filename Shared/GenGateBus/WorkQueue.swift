import Foundation
import GenGateCore

/// The three work queues (docs/ARCHITECTURE.md, "Channels"). A work message only says "look at generation X
/// now"; the store says what to do with it.
public enum WorkQueue: String, Sendable, CaseIterable, Codable {
    case dispatch
    case poll
    case upload

    /// The envelope `type` of this queue's messages.
    public var messageType: String { "work.\(rawValue)" }
}

/// The payload of a work message.
public struct WorkItem: Codable, Sendable, Equatable {
    public var generationID: String
    /// Why it was sent (e.g. "created", "submitted", "sweep"), for logs.
    public var reason: String

    public init(generationID: String, reason: String) {
        self.generationID = generationID
        self.reason = reason
    }

    enum CodingKeys: String, CodingKey {
        case generationID = "generation_id"
        case reason
    }
}

/// Sends work messages into one queue (PUSH, connected to the queue device's frontend).
/// Never blocks; a message that cannot be handed off in time is dropped, since the store still
/// has the work and the recovery sweep finds it.
public final class WorkProducer: Sendable {
    public let queue: WorkQueue
    let socket: BusSocket
    let source: String

    public init(socket: BusSocket, queue: WorkQueue, source: String) {
        self.socket = socket
        self.queue = queue
        self.source = source
    }

    public static func connect(
        context: ZMQContext, queue: WorkQueue, endpoint: String, source: String,
        options: BusSocketOptions = BusSocketOptions()
    ) async throws -> WorkProducer {
        let socket = try await BusSocket.open(
            context: context, type: .push, name: "\(queue.rawValue)-out",
            endpoints: [.connect(endpoint)], options: options)
        return WorkProducer(socket: socket, queue: queue, source: source)
    }

    /// Queues "look at `generationID`". Returns false when it could not even be queued.
    @discardableResult
    public func send(generationID: String, reason: String) -> Bool {
        let envelope = Envelope(
            type: queue.messageType, source: source, payload: WorkItem(generationID: generationID, reason: reason))
        guard let data = try? envelope.encoded() else { return false }
        return socket.send([data])
    }

    public func close() async { await socket.close() }
}

/// Receives work messages from one queue (PULL, connected to the queue device's backend);
/// consumers on the same queue share its messages.
public final class WorkConsumer: Sendable {
    public let queue: WorkQueue
    let socket: BusSocket

    public init(socket: BusSocket, queue: WorkQueue) {
        self.socket = socket
        self.queue = queue
    }

    public static func connect(
        context: ZMQContext, queue: WorkQueue, endpoint: String,
        options: BusSocketOptions = BusSocketOptions()
    ) async throws -> WorkConsumer {
        let socket = try await BusSocket.open(
            context: context, type: .pull, name: "\(queue.rawValue)-in",
            endpoints: [.connect(endpoint)], options: options)
        return WorkConsumer(socket: socket, queue: queue)
    }

    /// Each message as a decoded item or the reason it was rejected. Ends when closed.
    public var items: AsyncMapSequence<BusInbox, Result<WorkItem, BusError>> {
        let type = queue.messageType
        return socket.messages.map { frames in
            guard frames.count == 1 else {
                return .failure(.malformedMessage("work message has \(frames.count) frames, expected 1"))
            }
            do {
                return .success(try Envelope<WorkItem>.decode(frames[0], expectedType: type).payload)
            } catch let error as BusError {
                return .failure(error)
            } catch {
                return .failure(.malformedMessage(String(describing: error)))
            }
        }
    }

    public func close() async { await socket.close() }
}
