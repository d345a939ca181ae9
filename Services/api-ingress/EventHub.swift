import Foundation
import GenGateBus
import GenGateCore
import GenGateJobs
import Logging
import ServiceLifecycle
import Synchronization

/// What api-ingress's waiting requests (server-sent events, `Prefer: wait`, OpenAI-style calls
/// that answer when the job ends) wait on: one subscription to the event stream per process.
///
/// Events are hints here, as everywhere: a request that is told "something happened to job X"
/// reads the store, which is the truth, and reads it anyway every few seconds in case a hint was
/// lost. Only text chunks (`generation.stream_chunk`, never stored) are kept by the hub itself,
/// per generation and bounded, so that a reader who connects late or reads slowly still gets
/// every chunk the process received. Nothing here ever waits for a reader: a hint is a doorbell
/// ring, and a reader pulls what it needs at its own pace.
final class EventHub: Service, CustomStringConvertible, Sendable {
    var description: String { "EventHub" }

    /// Chunk text kept in all (bytes), and for one generation; the oldest generations' chunks
    /// go first when it is full.
    static let maxChunkBytes = 32 * 1_024 * 1_024
    static let maxChunkBytesPerGeneration = 4 * 1_024 * 1_024
    /// How long a generation's chunks are kept after its last chunk.
    static let keepChunks: Duration = .seconds(300)

    struct ChunkLog {
        var chunks: [Event] = []
        var bytes = 0
        var touched: ContinuousClock.Instant = .now
    }

    /// Which of a generation's events ring a watch's doorbell.
    enum Wake: Sendable {
        /// Every one (readers of its events and text chunks).
        case everyEvent
        /// Only the events that end it (completed, failed, cancelled): a request that answers
        /// when the job ends, and would otherwise read the job again at each chunk of its text.
        case end
    }

    private struct Watcher {
        let doorbell: Doorbell
        let wake: Wake
        let end: EndHeard
    }

    private struct State {
        var watchers: [String: [Int: Watcher]] = [:]
        var everyone: [Int: Doorbell] = [:]
        var chunks: [String: ChunkLog] = [:]
        var chunkBytes = 0
        var nextToken = 0
        var closed = false
        var lastSweep: ContinuousClock.Instant = .now
    }

    private let state = Mutex(State())
    private let subscriber: EventSubscriber
    private let logger: Logger

    init(subscriber: EventSubscriber, logger: Logger) {
        self.subscriber = subscriber
        self.logger = logger
    }

    /// A registration: its doorbell rings when an event for its generation (or, for `nil`, any
    /// generation) arrives, and when the hub closes.
    struct Watch: Sendable {
        let token: Int
        let generationID: String?
        let doorbell: Doorbell
        let end: EndHeard

        /// Whether an event that ends its generation came over the bus since the watch began.
        /// One publisher's messages arrive in the order it sent them: once the dispatcher's
        /// completion (or failure) has come, every text chunk it streamed before is in the hub
        /// too, unless the bus dropped it. (An end made elsewhere, a cancellation, promises
        /// nothing about chunks still on their way.)
        var endHeard: Bool { end.heard.load(ordering: .acquiring) }
    }

    final class EndHeard: Sendable {
        let heard = Atomic(false)
    }

    func watch(_ generationID: String?, waking wake: Wake = .everyEvent) -> Watch {
        let doorbell = Doorbell()
        let end = EndHeard()
        let token = state.withLock { state -> Int in
            state.nextToken += 1
            if let generationID {
                state.watchers[generationID, default: [:]][state.nextToken] = Watcher(
                    doorbell: doorbell, wake: wake, end: end)
            } else {
                state.everyone[state.nextToken] = doorbell
            }
            return state.nextToken
        }
        if isClosed { doorbell.ring() }
        return Watch(token: token, generationID: generationID, doorbell: doorbell, end: end)
    }

    func unwatch(_ watch: Watch) {
        state.withLock { state in
            if let id = watch.generationID {
                state.watchers[id]?[watch.token] = nil
                if state.watchers[id]?.isEmpty == true { state.watchers[id] = nil }
            } else {
                state.everyone[watch.token] = nil
            }
        }
    }

    /// True once the process is shutting down: waiting requests answer what they have and end.
    var isClosed: Bool { state.withLock { $0.closed } }

    /// The chunks of `generationID` this process has, oldest first.
    func chunks(of generationID: String) -> [Event] {
        state.withLock { $0.chunks[generationID]?.chunks ?? [] }
    }

    /// Whether this process has chunks of `generationID`.
    func hasChunks(of generationID: String) -> Bool {
        state.withLock { $0.chunks[generationID] != nil }
    }

    /// The generations with chunks newer than `since`.
    func generationsWithChunks(since: Date) -> [String] {
        state.withLock { state in
            state.chunks.compactMap { id, log in (log.chunks.last?.at ?? .distantPast) > since ? id : nil }
        }
    }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            for await result in self.subscriber.events {
                switch result {
                case .success(let received): self.receive(received.event)
                case .failure(let error): self.logger.warning("rejected event", metadata: ["error": "\(error)"])
                }
            }
        }
        close()
        await subscriber.close()
    }

    func receive(_ event: Event) {
        guard let id = event.generationID else { return }
        let doorbells = state.withLock { state -> [Doorbell] in
            if case .generationStreamChunk(let chunk) = event.payload {
                keep(event, chunk: chunk, of: id, in: &state)
            }
            let ends: Bool
            switch event.payload {
            case .generationCompleted, .generationFailed, .generationCancelled: ends = true
            default: ends = false
            }
            let watching = (state.watchers[id]?.values).map { watchers in
                watchers.compactMap { watcher -> Doorbell? in
                    if ends { watcher.end.heard.store(true, ordering: .releasing) }
                    return ends || watcher.wake == .everyEvent ? watcher.doorbell : nil
                }
            }
            return (watching ?? []) + Array(state.everyone.values)
        }
        for doorbell in doorbells { doorbell.ring() }
    }

    private func keep(_ event: Event, chunk: EventPayload.StreamChunk, of id: String, in state: inout State) {
        // The text and what keeping it costs besides (the event, its strings, the array slot).
        let size = chunk.text.utf8.count + 256
        var log = state.chunks[id] ?? ChunkLog()
        if case .generationStreamChunk(let last)? = log.chunks.last?.payload {
            // One already kept (the bus may bring a message twice) or an older attempt's: no use.
            if last.attempt == chunk.attempt && chunk.index <= last.index || last.attempt > chunk.attempt { return }
            // A retry streams its text again: the earlier attempt's chunks are of no more use.
            if last.attempt < chunk.attempt {
                state.chunkBytes -= log.bytes
                log = ChunkLog()
            }
        }
        guard log.bytes + size <= Self.maxChunkBytesPerGeneration else { return }
        log.chunks.append(event)
        log.bytes += size
        log.touched = .now
        state.chunks[id] = log
        state.chunkBytes += size
        // Over budget, or old: drop whole generations, least recently touched first.
        let now = ContinuousClock.now
        if state.chunkBytes > Self.maxChunkBytes || now - state.lastSweep > .seconds(10) {
            state.lastSweep = now
            for (other, log) in state.chunks.sorted(by: { $0.value.touched < $1.value.touched }) {
                guard state.chunkBytes > Self.maxChunkBytes || now - log.touched > Self.keepChunks else { break }
                state.chunks[other] = nil
                state.chunkBytes -= log.bytes
            }
        }
    }

    /// Wakes those that watch every job (the webhook sender, for one), as if an event came.
    func wakeEveryone() {
        for doorbell in state.withLock({ Array($0.everyone.values) }) { doorbell.ring() }
    }

    /// Marks the hub closed and wakes every waiting request so it can end.
    func close() {
        let doorbells = state.withLock { state -> [Doorbell] in
            state.closed = true
            return state.watchers.values.flatMap { $0.values.map(\.doorbell) } + Array(state.everyone.values)
        }
        for doorbell in doorbells { doorbell.ring() }
    }
}
