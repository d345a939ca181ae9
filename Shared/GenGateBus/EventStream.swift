import Foundation
import GenGateCore
import Synchronization

/// The message type of events on the stream.
public let eventMessageType = "event"

/// Publishes events (PUB, connected to the forwarder's XSUB frontend). Two frames per message:
/// the topic (`Event.type`, e.g. `generation.completed`) and the envelope JSON. Publishing never
/// blocks; a slow or absent subscriber loses events, so nothing may depend on receiving one.
public final class EventPublisher: Sendable {
    let socket: BusSocket
    public let source: String
    /// The last `seq` given out: every message is numbered, sent or not, so a subscriber counts
    /// what it missed, the drops at this end included.
    private let sequence = Atomic<UInt64>(0)

    public init(socket: BusSocket, source: String) {
        self.socket = socket
        self.source = source
    }

    public static func connect(context: ZMQContext, endpoint: String, source: String) async throws -> EventPublisher {
        var options = BusSocketOptions()
        options.handOffTimeout = .milliseconds(100)
        let socket = try await BusSocket.open(
            context: context, type: .pub, name: "events-out",
            endpoints: [.connect(endpoint)], options: options)
        return EventPublisher(socket: socket, source: source)
    }

    public func publish(_ event: Event) {
        let seq = sequence.wrappingAdd(1, ordering: .relaxed).newValue
        let envelope = Envelope(type: eventMessageType, source: source, payload: event, at: event.at, seq: seq)
        guard let data = try? envelope.encoded() else { return }
        socket.send([Data(event.type.rawValue.utf8), data])
    }

    public func close() async { await socket.close() }
}

/// An event as received, with the envelope fields that say who sent it.
public struct ReceivedEvent: Sendable {
    public var event: Event
    public var source: String
    public var messageID: String
    /// The envelope's `seq`, if the publisher numbers its messages.
    public var seq: UInt64?

    public init(event: Event, source: String, messageID: String, seq: UInt64? = nil) {
        self.event = event
        self.source = source
        self.messageID = messageID
        self.seq = seq
    }
}

/// Subscribes to events (SUB, connected to the forwarder's XPUB backend) by topic prefix.
public final class EventSubscriber: Sendable {
    let socket: BusSocket

    public static func connect(context: ZMQContext, endpoint: String, topics: [String] = [""]) async throws
        -> EventSubscriber
    {
        var options = BusSocketOptions()
        options.subscriptions = topics
        let socket = try await BusSocket.open(
            context: context, type: .sub, name: "events-in",
            endpoints: [.connect(endpoint)], options: options)
        return EventSubscriber(socket: socket)
    }

    init(socket: BusSocket) {
        self.socket = socket
    }

    /// Each message decoded, or the reason it was rejected.
    public var events: AsyncMapSequence<BusInbox, Result<ReceivedEvent, BusError>> {
        socket.messages.map { frames in
            guard frames.count == 2 else {
                return .failure(.malformedMessage("event has \(frames.count) frames, expected 2 (topic, envelope)"))
            }
            do {
                let envelope = try Envelope<Event>.decode(frames[1], expectedType: eventMessageType)
                return .success(
                    ReceivedEvent(
                        event: envelope.payload, source: envelope.source, messageID: envelope.id, seq: envelope.seq))
            } catch let error as BusError {
                return .failure(error)
            } catch {
                return .failure(.malformedMessage(String(describing: error)))
            }
        }
    }

    public var droppedMessages: Int { socket.droppedMessages }

    public func close() async { await socket.close() }
}
