import Foundation
import GenGateCore

/// The versioned JSON envelope every bus message travels in:
/// `{"v":1,"type":"work.poll","id":"msg_…","at":"…","source":"poller-1234","payload":{…}}`.
///
/// A receiver reads `v` and `type` first and rejects a version it does not speak with
/// `BusError.unsupportedVersion` instead of guessing at the payload.
public struct Envelope<Payload: Codable & Sendable>: Codable, Sendable {
    /// The schema version this build writes and reads.
    public static var schemaVersion: Int { 1 }

    public var v: Int
    public var type: String
    public var id: String
    public var at: Date
    /// The service instance that sent it, e.g. "dispatcher-4242".
    public var source: String
    /// Its place among the messages `source` published on the event stream: 1, 2, 3… A gap
    /// says messages were lost on the way. Absent on other messages.
    public var seq: UInt64?
    public var payload: Payload

    public init(type: String, source: String, payload: Payload, at: Date = Date(), seq: UInt64? = nil) {
        self.v = Self.schemaVersion
        self.type = type
        self.id = Identifier.make("msg", at: at)
        self.at = at
        self.source = source
        self.seq = seq
        self.payload = payload
    }

    public func encoded() throws -> Data {
        try JSONCoding.encode(self)
    }

    /// Decodes an envelope of `expectedType`; throws `BusError` for anything else.
    ///
    /// A message is parsed once when it is what it should be: the whole envelope is decoded, then
    /// its version and type checked. Only one that does not decode is parsed again, for its
    /// header, to say why (another version, another type, or not an envelope at all).
    public static func decode(_ data: Data, expectedType: String) throws -> Envelope {
        let failure: any Error
        do {
            let envelope = try JSONCoding.decode(Envelope.self, from: data)
            try check(version: envelope.v, type: envelope.type, expectedType: expectedType)
            return envelope
        } catch let error as BusError {
            throw error
        } catch {
            failure = error
        }
        let header: EnvelopeHeader
        do {
            header = try JSONCoding.decode(EnvelopeHeader.self, from: data)
        } catch {
            throw BusError.malformedMessage("not a GenGate envelope (\(data.count) bytes)")
        }
        try check(version: header.v, type: header.type, expectedType: expectedType)
        throw BusError.malformedMessage("\(header.type) payload does not decode: \(failure)")
    }

    private static func check(version: Int, type: String, expectedType: String) throws {
        guard version == schemaVersion else { throw BusError.unsupportedVersion(version: version, type: type) }
        guard type == expectedType else {
            throw BusError.malformedMessage("expected a \(expectedType) message, got \(type)")
        }
    }
}

/// The part of an envelope read before anything else.
struct EnvelopeHeader: Decodable {
    var v: Int
    var type: String
}
