import CZeroMQ
import Foundation
import Synchronization
#if canImport(Glibc)
    import Glibc
#endif

/// Where a socket attaches: the stable side of a channel binds, the moving side connects.
public enum BusEndpoint: Sendable, Equatable {
    case bind(String)
    case connect(String)
}

/// Settings of one bus socket.
public struct BusSocketOptions: Sendable {
    public var sendHighWaterMark: Int32 = 10_000
    public var receiveHighWaterMark: Int32 = 10_000
    /// How long close may spend delivering what is still queued.
    public var lingerMilliseconds: Int32 = 200
    /// SUB sockets: topic prefixes to receive ("" for everything).
    public var subscriptions: [String] = []
    /// How long an outgoing message may wait for a peer (PUSH with nobody connected, or a full
    /// high-water mark) before it is dropped. Dropping is normal: the store still has the work.
    public var handOffTimeout: Duration = .seconds(2)
    /// Messages waiting in this process to be sent, beyond which `send` refuses.
    public var outboxLimit: Int = 10_000
    /// Messages received but not yet consumed. At this many a PULL socket stops reading, so its
    /// ZeroMQ high-water mark pushes back on the senders; any other socket drops (and counts)
    /// what arrives beyond it.
    public var inboxLimit: Int = 10_000

    public init() {}
}

/// A ZeroMQ socket that lives on its own thread, bridged to Swift concurrency.
///
/// The thread creates the socket, binds or connects it, and is its only user until it closes it
/// (libzmq sockets are not thread-safe). Received messages arrive on `messages`; `send` only queues
/// and never blocks, so no ZeroMQ call ever runs on the cooperative thread pool. One thread waits
/// in `zmq_poll` on the socket and on a pipe that `send` and `close` write to.
public final class BusSocket: Sendable {
    public let name: String
    public let type: ZMQSocketType
    /// Endpoints as bound, with real ports for `tcp://host:*`.
    public let boundEndpoints: [String]
    /// Every message received, each as its frames. Finishes when the socket closes. One consumer.
    public let messages: BusInbox
    private let core: Core

    private init(name: String, type: ZMQSocketType, boundEndpoints: [String], messages: BusInbox, core: Core) {
        self.name = name
        self.type = type
        self.boundEndpoints = boundEndpoints
        self.messages = messages
        self.core = core
    }

    /// Creates the socket on a new thread and attaches it to `endpoints`.
    /// Throws the libzmq error of the first bind or connect that fails.
    public static func open(
        context: ZMQContext, type: ZMQSocketType, name: String, endpoints: [BusEndpoint],
        options: BusSocketOptions = BusSocketOptions()
    ) async throws -> BusSocket {
        let (stream, continuation) = AsyncStream<[Data]>.makeStream(
            bufferingPolicy: .bufferingOldest(options.inboxLimit))
        let core = try Core(options: options, name: name)
        let bound: [String] = try await withCheckedThrowingContinuation { ready in
            let thread = Thread {
                core.run(context: context, type: type, endpoints: endpoints, inbox: continuation, ready: ready)
            }
            thread.name = "zmq-\(name)"
            thread.start()
        }
        return BusSocket(
            name: name, type: type, boundEndpoints: bound, messages: BusInbox(stream: stream, core: core), core: core)
    }

    /// Queues a message for sending. Returns false when the socket is closed or its outbox is full.
    @discardableResult
    public func send(_ frames: [Data]) -> Bool {
        core.enqueue(frames)
    }

    /// Messages dropped so far: not handed off in time, or received while the inbox was full.
    public var droppedMessages: Int { core.droppedMessages }

    /// Stops the thread and closes the socket with the configured linger. Waits until done.
    public func close() async {
        await core.close()
    }
}

extension BusSocket {
    /// The state shared between the socket's thread and everyone else.
    final class Core: Sendable {
        struct Pending {
            var frames: [Data]
            var deadline: ContinuousClock.Instant
        }

        struct State {
            var outbox: [Pending] = []
            var closing = false
            var finished = false
            var waiters: [CheckedContinuation<Void, Never>] = []
            var dropped = 0
            /// Received and not yet taken by the consumer.
            var unconsumed = 0
        }

        let options: BusSocketOptions
        let state = Mutex(State())
        let wakeRead: Int32
        let wakeWrite: Int32

        let name: String

        init(options: BusSocketOptions, name: String) throws {
            self.name = name
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { throw ZMQError("pipe", errno: errno) }
            _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
            _ = fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK)
            wakeRead = fds[0]
            wakeWrite = fds[1]
            self.options = options
        }

        deinit {
            Glibc.close(wakeRead)
            Glibc.close(wakeWrite)
        }

        var droppedMessages: Int { state.withLock { $0.dropped } }

        /// The consumer took a message: room for another; wakes the thread if it had stopped reading.
        func consumed() {
            let wasFull = state.withLock { state -> Bool in
                state.unconsumed -= 1
                return state.unconsumed + 1 >= options.inboxLimit
            }
            if wasFull { wake() }
        }

        private func dropped() {
            state.withLock { $0.dropped += 1 }
            BusStatistics.shared.dropped(name)
        }

        /// Queues `frames` for the thread. Only a message that finds the outbox empty wakes it:
        /// the thread takes the whole outbox at once after waking, so the ones queued behind a
        /// first go with it (one pipe write per burst, not one system call per message).
        func enqueue(_ frames: [Data]) -> Bool {
            let deadline = ContinuousClock.now.advanced(by: options.handOffTimeout)
            let (accepted, first) = state.withLock { state -> (Bool, Bool) in
                guard !state.closing, state.outbox.count < options.outboxLimit else {
                    state.dropped += 1
                    return (false, false)
                }
                state.outbox.append(Pending(frames: frames, deadline: deadline))
                return (true, state.outbox.count == 1)
            }
            if !accepted {
                BusStatistics.shared.dropped(name)
            } else if first {
                wake()
            }
            return accepted
        }

        func close() async {
            await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                let alreadyDone = state.withLock { state -> Bool in
                    state.closing = true
                    if state.finished { return true }
                    state.waiters.append(waiter)
                    return false
                }
                if alreadyDone { waiter.resume() } else { wake() }
            }
        }

        fileprivate func wake() {
            var byte: UInt8 = 1
            _ = write(wakeWrite, &byte, 1)  // a full pipe already means "wake up"
        }

        private func drainWakePipe() {
            var buffer = [UInt8](repeating: 0, count: 64)
            while read(wakeRead, &buffer, buffer.count) > 0 {}
        }

        /// The socket's thread: everything from creation to close happens here.
        func run(
            context: ZMQContext, type: ZMQSocketType, endpoints: [BusEndpoint],
            inbox: AsyncStream<[Data]>.Continuation, ready: CheckedContinuation<[String], any Error>
        ) {
            let socket: ZMQSocket
            var bound: [String] = []
            do {
                socket = try ZMQSocket(context: context, type: type)
                try socket.setLinger(milliseconds: options.lingerMilliseconds)
                try socket.setSendHighWaterMark(options.sendHighWaterMark)
                try socket.setReceiveHighWaterMark(options.receiveHighWaterMark)
                if type == .sub {
                    for prefix in options.subscriptions { try socket.subscribe(prefix) }
                }
                do {
                    for endpoint in endpoints {
                        switch endpoint {
                        case .bind(let address):
                            try socket.bind(address)
                            bound.append(socket.lastEndpoint)
                        case .connect(let address):
                            try socket.connect(address)
                        }
                    }
                } catch {
                    socket.close()
                    throw error
                }
            } catch {
                finish(inbox: inbox)
                ready.resume(throwing: error)
                return
            }
            ready.resume(returning: bound)
            loop(socket: socket, type: type, inbox: inbox)
            socket.close()
            finish(inbox: inbox)
        }

        private func finish(inbox: AsyncStream<[Data]>.Continuation) {
            inbox.finish()
            let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.finished = true
                state.closing = true
                let waiters = state.waiters
                state.waiters = []
                return waiters
            }
            for waiter in waiters { waiter.resume() }
        }

        private func loop(socket: ZMQSocket, type: ZMQSocketType, inbox: AsyncStream<[Data]>.Continuation) {
            var backlog: [Pending] = []  // taken from the outbox, refused by the socket so far
            while true {
                let (incoming, closing) = state.withLock { state -> ([Pending], Bool) in
                    let taken = state.outbox
                    state.outbox = []
                    return (taken, state.closing)
                }
                backlog.append(contentsOf: incoming)
                if closing { break }

                // Send what the socket takes; keep the rest until its hand-off deadline.
                var stalled = false
                var kept: [Pending] = []
                let now = ContinuousClock.now
                for pending in backlog {
                    if stalled {
                        kept.append(pending)
                        continue
                    }
                    do {
                        if try socket.send(pending.frames, wait: false) { continue }
                    } catch {
                        dropped()
                        continue
                    }
                    stalled = true
                    kept.append(pending)
                }
                backlog = kept.filter { pending in
                    if pending.deadline < now {
                        dropped()
                        return false
                    }
                    return true
                }

                // A PULL socket whose consumer is behind stops reading: ZeroMQ then holds what
                // comes, up to its high-water mark, and pushes back on the senders.
                let holding = type == .pull && state.withLock { $0.unconsumed >= options.inboxLimit }
                let items = [
                    ZMQPollItem(.socket(socket), readable: type.receives && !holding),
                    ZMQPollItem(.fileDescriptor(wakeRead), readable: true),
                ]
                let timeout = backlog.isEmpty ? 1_000 : 10
                guard let results = try? zmqPoll(items, timeoutMilliseconds: timeout) else { break }
                if results[1].readable { drainWakePipe() }
                if results[0].readable {
                    // Take what is waiting (up to the room left), so one wake-up serves a burst.
                    while type != .pull || state.withLock({ $0.unconsumed < options.inboxLimit }),
                        let frames = try? socket.receive(wait: false)
                    {
                        switch inbox.yield(frames) {
                        case .enqueued:
                            state.withLock { $0.unconsumed += 1 }
                        case .dropped, .terminated:
                            dropped()  // a consumer gone or behind: counted, never held
                        @unknown default:
                            dropped()
                        }
                    }
                }
            }
            // Closing: one last non-blocking attempt for what is queued; linger covers delivery.
            for pending in backlog {
                _ = try? socket.send(pending.frames, wait: false)
            }
        }
    }
}

/// The messages a `BusSocket` received, for its one consumer. Taking a message makes room for
/// the next (see `BusSocketOptions.inboxLimit`).
public struct BusInbox: AsyncSequence, Sendable {
    public typealias Element = [Data]

    let stream: AsyncStream<[Data]>
    let core: BusSocket.Core

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncStream<[Data]>.AsyncIterator
        let core: BusSocket.Core

        public mutating func next() async -> [Data]? {
            guard let message = await base.next() else { return nil }
            core.consumed()
            return message
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator(), core: core)
    }
}
