import Hummingbird
import NIOCore
import Synchronization

/// Reads request bodies so that every client gets its answer, including one that sends
/// `Connection: close` and writes its whole body before reading (Python's urllib does). After
/// answering such a request Hummingbird half-closes and waits for the client to close; a client
/// still blocked writing a body nobody reads would wait forever. So a body left unread by an
/// early error (401, 413) is read to its end and dropped first, up to `drainLimit` bytes; a
/// keep-alive connection's leftover body Hummingbird reads itself.
enum RequestBodyReader {
    /// Most bytes read and dropped after an early error.
    static let drainLimit = 256 * 1_024 * 1_024

    /// The whole body, at most `limit` bytes; throws `payloadTooLarge` beyond that.
    static func collect(_ request: Request, context: GateContext, limit: Int) async throws -> ByteBuffer {
        context.body.markRead()
        var iterator = request.body.makeAsyncIterator()
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            try await drainIfClosing(request, &iterator)
            throw APIError.payloadTooLarge(limit: limit)
        }
        var collected = ByteBuffer()
        while var chunk = try await iterator.next() {
            guard collected.readableBytes + chunk.readableBytes <= limit else {
                try await drainIfClosing(request, &iterator)
                throw APIError.payloadTooLarge(limit: limit)
            }
            collected.writeBuffer(&chunk)
        }
        return collected
    }

    /// After an error answer: drops the body nobody read, when the client will not read the
    /// answer before it has written it.
    static func drainUnread(_ request: Request, context: GateContext) async {
        guard closes(request), context.body.claimUnread() else { return }
        var iterator = request.body.makeAsyncIterator()
        try? await drainIfClosing(request, &iterator)
    }

    static func closes(_ request: Request) -> Bool {
        request.headers[.connection]?.lowercased().contains("close") == true
    }

    static func drainIfClosing(_ request: Request, _ iterator: inout RequestBody.AsyncIterator) async throws {
        guard closes(request) else { return }
        var dropped = 0
        while let chunk = try await iterator.next() {
            dropped += chunk.readableBytes
            if dropped > drainLimit { return }
        }
    }
}

/// Whether a request's body has been read (an iterator made): it may be read only once.
final class BodyReading: Sendable {
    private let read = Mutex(false)

    func markRead() { read.withLock { $0 = true } }

    /// True, once, if nobody read the body yet; the caller reads it then.
    func claimUnread() -> Bool {
        read.withLock { wasRead in
            defer { wasRead = true }
            return !wasRead
        }
    }
}
