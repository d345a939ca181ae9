import Foundation
import GenGateCore
import GenGateJobs
import GenGateStore
import HTTPTypes
import Hummingbird
import NIOCore

/// Server-sent events (the WHATWG `text/event-stream` format): one job's events
/// (`GET /v1/generations/{id}/events`) or those of every job of the caller's key
/// (`GET /v1/events`).
///
/// Each stored event of a job goes out once, in order, with its place in the store's log as its
/// `id`, so a client that reconnects with `Last-Event-ID` (browsers do it by themselves) goes on
/// where it stopped; `generation.stream_chunk` events (text, never stored) come from this
/// process's memory, in order with the rest, with ids that resume them too. A job's stream ends
/// with a `done` event after the job's last event. A comment every 15 s keeps proxies from
/// closing a quiet stream. Each stream reads at its own pace: a slow reader slows only itself.
struct EventStreamRoutes: Sendable {
    let routes: GenerationRoutes
    let hub: EventHub

    var store: any GenerationStore { routes.store }
    /// How often a quiet stream sends a keep-alive comment.
    var keepAlive: Duration { .milliseconds(Int(routes.environment.config.http.eventStreamKeepAliveSeconds * 1_000)) }

    /// Stored events read per look.
    static let batch = 200
    /// How often a stream looks at the store without a hint.
    static let look: Duration = .seconds(2)
    /// How long the events that end a job wait for its last text chunks to come over the bus.
    static let endGrace: Duration = .seconds(1)
    static let lastEventID = HTTPField.Name("Last-Event-ID")!

    func register(on group: RouterGroup<GateContext>) {
        group.get("generations/:id/events") { request, context in try await one(request, context) }
        group.get("events") { request, context in try await all(request, context) }
    }

    func one(_ request: Request, _ context: GateContext) async throws -> Response {
        let generation = try await routes.owned(context)
        let cursor = try Self.cursor(request)
        let store = self.store
        let hub = self.hub
        let pacer = Pacer(keepAlive: keepAlive)
        let providers = routes.environment.providers
        let streamsText: @Sendable (Generation) -> Bool = { job in
            job.attempts > 0 && providers.model(job.model)?.kind == .text
        }
        return Self.response { writer in
            try await Self.follow(
                generation, from: cursor, store: store, hub: hub, pacer: pacer, streamsText: streamsText,
                writer: &writer)
        }
    }

    func all(_ request: Request, _ context: GateContext) async throws -> Response {
        let key = try context.requireKey()
        let cursor = try Self.cursor(request)
        let start: Int64
        if let cursor { start = cursor.seq } else { start = try await store.lastEventSeq() }  // or from now on
        let store = self.store
        let hub = self.hub
        let pacer = Pacer(keepAlive: keepAlive)
        return Self.response { writer in
            try await Self.follow(owner: key.id, from: start, store: store, hub: hub, pacer: pacer, writer: &writer)
        }
    }

    static func response(_ body: @escaping @Sendable (inout any ResponseBodyWriter) async throws -> Void) -> Response {
        Response(
            status: .ok,
            headers: [
                .contentType: "text/event-stream; charset=utf-8", .cacheControl: "no-store",
                // nginx buffers responses unless told not to.
                HTTPField.Name("X-Accel-Buffering")!: "no",
            ],
            body: ResponseBody { writer in
                // The first bytes go out at once, so the client knows the stream is open; a
                // reconnecting client waits 2 s.
                try await writer.write(ByteBuffer(string: "retry: 2000\n\n"))
                // A failure (the client went away, the store cannot be read) closes the
                // connection; a client reconnects with its Last-Event-ID.
                try await body(&writer)
                try await writer.finish(nil)
            })
    }

    /// Where a client resumes: after the stored event `seq`, and after the text chunk
    /// `chunk` (attempt, index) when it had chunks after it.
    struct Cursor: Equatable {
        var seq: Int64
        var chunk: ChunkMark?

        /// `seq` or `seq.attempt.index`, as this stream writes its ids.
        init?(_ text: String) {
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            guard let seq = Int64(parts[0]), seq >= 0, parts.count == 1 || parts.count == 3 else { return nil }
            self.seq = seq
            if parts.count == 3 {
                guard let attempt = Int(parts[1]), let index = Int(parts[2]), attempt >= 0, index >= 0 else {
                    return nil
                }
                chunk = ChunkMark(attempt: attempt, index: index)
            }
        }

        init(seq: Int64, chunk: ChunkMark?) {
            self.seq = seq
            self.chunk = chunk
        }
    }

    struct ChunkMark: Equatable, Comparable {
        var attempt: Int
        var index: Int

        static func < (a: ChunkMark, b: ChunkMark) -> Bool { (a.attempt, a.index) < (b.attempt, b.index) }
    }

    /// The request's `Last-Event-ID` (or `last_event_id` in the query, for tools that cannot set
    /// headers), or nil.
    static func cursor(_ request: Request) throws -> Cursor? {
        guard let text = request.headers[lastEventID] ?? request.uri.queryParameters.get("last_event_id") else {
            return nil
        }
        guard text.count <= 64, let cursor = Cursor(text) else {
            throw APIError.invalidRequest(
                "invalid Last-Event-ID",
                details: [.init(path: "Last-Event-ID", message: "must be the id of an event this stream sent")])
        }
        return cursor
    }

    /// One message of the stream.
    static func frame(id: String?, event: String, data: Data, into buffer: inout ByteBuffer) {
        if let id { buffer.writeString("id: \(id)\n") }
        buffer.writeString("event: \(event)\ndata: ")
        buffer.writeBytes(data)
        buffer.writeString("\n\n")
    }

    /// An item to send: a stored event, or a chunk from memory.
    enum Item {
        case stored(StoredEvent)
        case chunk(Event, ChunkMark)

        var at: Date {
            switch self {
            case .stored(let stored): stored.event.at
            case .chunk(let event, _): event.at
            }
        }

        /// Stored events in the log's order (`seq`, whatever the clocks of the processes that
        /// wrote them said), each chunk (in its own order) just before the first stored event
        /// stamped after it: chunks and the events around them come from one process's clock.
        static func ordered(_ stored: [StoredEvent], _ chunks: [(Event, ChunkMark)]) -> [Item] {
            var items: [Item] = []
            items.reserveCapacity(stored.count + chunks.count)
            var sent = [Bool](repeating: false, count: chunks.count)
            var next = 0
            // Each job's chunks by position, made at the first end met.
            var byJob: [String: [Int]]?
            func send(_ index: Int) {
                guard !sent[index] else { return }
                sent[index] = true
                items.append(.chunk(chunks[index].0, chunks[index].1))
            }
            for event in stored {
                while next < chunks.count, chunks[next].0.at <= event.event.at {
                    send(next)
                    next += 1
                }
                if event.event.type.isTerminal, let id = event.event.generationID {
                    // A job's text never comes after its end, whatever the clocks say (times on
                    // the bus are to the millisecond).
                    if byJob == nil {
                        byJob = Dictionary(grouping: chunks.indices) { chunks[$0].0.generationID ?? "" }
                    }
                    for index in byJob?[id] ?? [] where index >= next { send(index) }
                }
                items.append(.stored(event))
            }
            for index in next..<chunks.count { send(index) }
            return items
        }
    }

    static func marked(_ events: [Event]) -> [(Event, ChunkMark)] {
        events.compactMap { event in
            guard case .generationStreamChunk(let chunk) = event.payload else { return nil }
            return (event, ChunkMark(attempt: chunk.attempt, index: chunk.index))
        }
    }

    /// Writes what a stream has to say and remembers when it last wrote, for the keep-alive.
    struct Pacer: Sendable {
        let keepAlive: Duration
        var lastWrite = ContinuousClock.now

        mutating func send(_ buffer: ByteBuffer, _ writer: inout any ResponseBodyWriter) async throws {
            guard buffer.readableBytes > 0 else { return }
            try await writer.write(buffer)
            lastWrite = .now
        }

        /// A comment, if nothing was written for the keep-alive interval.
        mutating func keepAlive(_ writer: inout any ResponseBodyWriter) async throws {
            guard ContinuousClock.now - lastWrite >= keepAlive else { return }
            try await send(ByteBuffer(string: ": keep-alive\n\n"), &writer)
        }

        /// How long to wait for a hint: until the next look, or the next keep-alive.
        var wait: Duration {
            let untilKeepAlive = keepAlive - (ContinuousClock.now - lastWrite)
            return max(.milliseconds(10), min(EventStreamRoutes.look, untilKeepAlive))
        }
    }

    /// One job's stream, from `cursor` to the job's end. `streamsText`: whether a job may have
    /// streamed text (a text model's, once dispatched).
    static func follow(
        _ generation: Generation, from cursor: Cursor?, store: any GenerationStore, hub: EventHub, pacer: Pacer,
        streamsText: @Sendable (Generation) -> Bool, writer: inout any ResponseBodyWriter
    ) async throws {
        var pacer = pacer
        let id = generation.id
        let watch = hub.watch(id)
        defer { hub.unwatch(watch) }
        var seq = cursor?.seq ?? 0
        var mark = cursor?.chunk
        // Resumed after a stored event: the chunks sent before it are the ones stamped before it.
        var chunksAfter = Date.distantPast
        if let cursor, cursor.chunk == nil, cursor.seq > 0 {
            chunksAfter =
                try await store.events(generationID: id, after: cursor.seq - 1, limit: 1).first {
                    $0.seq == cursor.seq
                }?
                .event.at ?? .distantPast
        }
        var position: Int?
        var lastLook = ContinuousClock.now - look
        // The store can show the job's end before the bus has brought the last text chunks the
        // dispatcher streamed ahead of it: the events that end a job that may have streamed text
        // wait (up to `endGrace`) for the bus's own end event, which comes after its chunks,
        // unless the job had ended when the stream began.
        let endedBefore = generation.status.isTerminal
        var holdUntil: ContinuousClock.Instant?
        while true {
            let endHeard = watch.endHeard  // before the chunks are read: they are all there if it is
            let stored = try await store.events(generationID: id, after: seq, limit: batch)
            if stored.contains(where: { $0.event.type.isTerminal }), !endHeard, !endedBefore, !hub.isClosed {
                try Task.checkCancellation()
                if holdUntil == nil {
                    let job = try await store.generation(id: id)
                    let mayHaveText = hub.hasChunks(of: id) || job.map(streamsText) == true
                    holdUntil = ContinuousClock.now + (mayHaveText ? endGrace : .zero)
                }
                if let until = holdUntil, ContinuousClock.now < until {
                    await watch.doorbell.wait(upTo: until - ContinuousClock.now)
                    continue
                }
            }
            let chunks = marked(hub.chunks(of: id)).filter { event, chunk in
                mark.map { chunk > $0 } ?? (event.at > chunksAfter)
            }
            var buffer = ByteBuffer()
            var ended = false
            for item in Item.ordered(stored, chunks) {
                switch item {
                case .stored(let stored):
                    seq = max(seq, stored.seq)
                    frame(
                        id: "\(seq)", event: stored.event.type.rawValue, data: try JSONCoding.encode(stored.event),
                        into: &buffer)
                    ended = ended || stored.event.type.isTerminal
                case .chunk(let event, let chunk):
                    mark = chunk
                    frame(
                        id: "\(seq).\(chunk.attempt).\(chunk.index)", event: event.type.rawValue,
                        data: try JSONCoding.encode(event), into: &buffer)
                }
            }
            try await pacer.send(buffer, &writer)
            if stored.count == batch { continue }  // more to read at once
            // Every few seconds the job itself: its place in the queue, and whether it ended
            // with its last events gone (expired from the log).
            if ended || ContinuousClock.now - lastLook >= look {
                lastLook = .now
                guard let now = try await store.generation(id: id) else { return }
                if now.status.isTerminal {
                    guard try await store.events(generationID: id, after: seq, limit: 1).isEmpty else { continue }
                    var done = ByteBuffer()
                    frame(
                        id: nil, event: "done",
                        data: try JSONCoding.encode(["generation_id": id, "status": now.status.rawValue]), into: &done)
                    try await pacer.send(done, &writer)
                    return
                }
                if now.status == .pending, let place = try await store.queuePosition(of: now) {
                    if place != position {
                        position = place
                        var queue = ByteBuffer()
                        frame(
                            id: nil, event: "queue",
                            data: try JSONCoding.encode(QueuePosition(generationID: id, position: place)),
                            into: &queue)
                        try await pacer.send(queue, &writer)
                    }
                }
            }
            if hub.isClosed { return }
            try await pacer.keepAlive(&writer)
            await watch.doorbell.wait(upTo: pacer.wait)
        }
    }

    struct QueuePosition: Encodable {
        var generationID: String
        /// Pending jobs ahead of it.
        var position: Int

        enum CodingKeys: String, CodingKey {
            case position
            case generationID = "generation_id"
        }
    }

    /// Every job of `owner`, from the stored event `seq` on, until the client goes (or this
    /// process stops). Chunks go out live, without ids: a reconnection resumes the stored events.
    static func follow(
        owner: String, from start: Int64, store: any GenerationStore, hub: EventHub, pacer: Pacer,
        writer: inout any ResponseBodyWriter
    ) async throws {
        var pacer = pacer
        let watch = hub.watch(nil)
        defer { hub.unwatch(watch) }
        var seq = start
        var marks: [String: ChunkMark] = [:]
        var owners: [String: Bool] = [:]
        let since = Date()
        while true {
            // Any job's event wakes every such stream: at most ten looks a second each.
            try await Task.sleep(for: .milliseconds(100))
            let scanned = seq
            let (stored, through) = try await store.events(ownerKeyID: owner, after: seq, limit: batch, scan: 10_000)
            seq = through
            for event in stored { if let id = event.event.generationID { owners[id] = true } }
            var chunks: [(Event, ChunkMark)] = []
            for id in hub.generationsWithChunks(since: since) {
                if owners[id] == nil {
                    if owners.count > 100_000 { owners.removeAll() }
                    owners[id] = try await store.generation(id: id)?.ownerKeyID == owner
                }
                guard owners[id] == true else { continue }
                let fresh = marked(hub.chunks(of: id)).filter { event, chunk in
                    marks[id].map { chunk > $0 } ?? (event.at > since)
                }
                if let last = fresh.last { marks[id] = last.1 }
                if marks.count > 100_000 { marks.removeAll() }
                chunks += fresh
            }
            // Gathered job by job: in time order before they are slotted in.
            chunks.sort { $0.0.at < $1.0.at }
            var buffer = ByteBuffer()
            for item in Item.ordered(stored, chunks) {
                switch item {
                case .stored(let stored):
                    frame(
                        id: "\(stored.seq)", event: stored.event.type.rawValue,
                        data: try JSONCoding.encode(stored.event), into: &buffer)
                case .chunk(let event, _):
                    frame(id: nil, event: event.type.rawValue, data: try JSONCoding.encode(event), into: &buffer)
                }
            }
            try await pacer.send(buffer, &writer)
            if stored.count == batch || through - scanned >= 10_000 { continue }  // more to read at once
            if hub.isClosed { return }
            try await pacer.keepAlive(&writer)
            await watch.doorbell.wait(upTo: pacer.wait)
        }
    }
}
