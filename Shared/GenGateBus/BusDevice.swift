import Foundation
import Synchronization
#if canImport(Glibc)
    import Glibc
#endif

/// A forwarding device on its own thread: the fixed point of a channel that producers and
/// consumers both connect to, so either side can have any number of members.
///
/// - `queue`: PULL frontend → PUSH backend. A message moves only when some consumer can take it,
///   so nothing is dropped here; it waits in the frontend until a consumer connects.
/// - `forwarder`: XSUB frontend → XPUB backend, with subscriptions flowing back upstream. The
///   backend may bind several endpoints (an internal `ipc://` one and a public `tcp://` one).
public final class BusDevice: Sendable {
    public enum Kind: Sendable {
        case queue
        case forwarder
    }

    public let name: String
    public let kind: Kind
    public let frontendEndpoints: [String]
    public let backendEndpoints: [String]
    private let stopRead: Int32
    private let stopWrite: Int32
    private let completion: ThreadCompletion

    private init(
        name: String, kind: Kind, frontend: [String], backend: [String], stopRead: Int32, stopWrite: Int32,
        completion: ThreadCompletion
    ) {
        self.completion = completion
        self.name = name
        self.kind = kind
        self.frontendEndpoints = frontend
        self.backendEndpoints = backend
        self.stopRead = stopRead
        self.stopWrite = stopWrite
    }

    deinit {
        Glibc.close(stopRead)
        Glibc.close(stopWrite)
    }

    /// Binds both sides and starts forwarding. Throws when an endpoint cannot be bound. A failure
    /// while forwarding is told to `onFailure` and forwarding starts again (a message it held is
    /// kept); only stopping, or the context's termination, ends the device.
    public static func start(
        context: ZMQContext, kind: Kind, name: String, frontend: [String], backend: [String],
        highWaterMark: Int32 = 100_000,
        onFailure: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data("\($0)\n".utf8)) }
    )
        async throws -> BusDevice
    {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw ZMQError("pipe", errno: errno) }
        let readFD = fds[0]
        let writeFD = fds[1]
        let completion = ThreadCompletion()
        let bound: ([String], [String])
        do {
            bound = try await withCheckedThrowingContinuation { ready in
                let thread = Thread {
                    let front: ZMQSocket
                    let back: ZMQSocket
                    var frontBound: [String] = []
                    var backBound: [String] = []
                    do {
                        front = try ZMQSocket(context: context, type: kind == .queue ? .pull : .xsub)
                        back = try ZMQSocket(context: context, type: kind == .queue ? .push : .xpub)
                        for socket in [front, back] {
                            try socket.setLinger(milliseconds: 200)
                            try socket.setSendHighWaterMark(highWaterMark)
                            try socket.setReceiveHighWaterMark(highWaterMark)
                        }
                        do {
                            for endpoint in frontend {
                                try front.bind(endpoint)
                                frontBound.append(front.lastEndpoint)
                            }
                            for endpoint in backend {
                                try back.bind(endpoint)
                                backBound.append(back.lastEndpoint)
                            }
                        } catch {
                            front.close()
                            back.close()
                            throw error
                        }
                    } catch {
                        completion.markDone()
                        ready.resume(throwing: error)
                        return
                    }
                    ready.resume(returning: (frontBound, backBound))
                    let report: @Sendable (ZMQError) -> Void = {
                        onFailure("bus device \(name) failed (\($0)); forwarding again")
                    }
                    BusDevice.forward(kind: kind, front: front, back: back, stopFD: readFD, report: report)
                    front.close()
                    back.close()
                    completion.markDone()
                }
                thread.name = "zmq-device-\(name)"
                thread.start()
            }
        } catch {
            Glibc.close(readFD)
            Glibc.close(writeFD)
            throw error
        }
        let device = BusDevice(
            name: name, kind: kind, frontend: bound.0, backend: bound.1, stopRead: readFD, stopWrite: writeFD,
            completion: completion)
        return device
    }

    /// Stops forwarding, closes both sockets and waits for the thread to end.
    public func stop() async {
        var byte: UInt8 = 1
        _ = write(stopWrite, &byte, 1)
        await completion.wait()
    }

    private static func forward(
        kind: Kind, front: ZMQSocket, back: ZMQSocket, stopFD: Int32, report: @Sendable (ZMQError) -> Void
    ) {
        switch kind {
        case .queue: forwardQueue(front: front, back: back, stopFD: stopFD, report: report)
        case .forwarder: forwardEvents(front: front, back: back, stopFD: stopFD, report: report)
        }
    }

    /// Polls `items`; a failure is reported and, unless the context is gone, answered with a short
    /// pause and an empty result (the caller's loop goes on). Nil means stop.
    private static func poll(_ items: [ZMQPollItem], report: @Sendable (ZMQError) -> Void) -> [ZMQPollResult]? {
        do {
            return try zmqPoll(items, timeoutMilliseconds: 1_000)
        } catch let error as ZMQError {
            if error.isTerminated { return nil }
            report(error)
            usleep(100_000)
            return items.map { _ in ZMQPollResult(readable: false, writable: false) }
        } catch {
            return nil
        }
    }

    /// A message moves only when a consumer takes it: one refused message is held here and offered
    /// again when the backend has room, never dropped.
    private static func forwardQueue(
        front: ZMQSocket, back: ZMQSocket, stopFD: Int32, report: @Sendable (ZMQError) -> Void
    ) {
        let stop = ZMQPollItem(.fileDescriptor(stopFD), readable: true)
        while true {
            guard let ready = poll([ZMQPollItem(.socket(front)), stop], report: report) else { return }
            if ready[1].readable { return }
            var held = ready[0].readable ? (try? front.receive(wait: false)) ?? nil : nil
            while let message = held {
                if (try? back.send(message, wait: false)) == true {
                    held = (try? front.receive(wait: false)) ?? nil
                    continue
                }
                let writable = ZMQPollItem(.socket(back), readable: false, writable: true)
                guard let room = poll([writable, stop], report: report) else { return }
                if room[1].readable { return }
            }
        }
    }

    /// Events go downstream, subscriptions upstream; XPUB drops for subscribers at their mark.
    private static func forwardEvents(
        front: ZMQSocket, back: ZMQSocket, stopFD: Int32, report: @Sendable (ZMQError) -> Void
    ) {
        let items = [ZMQPollItem(.socket(front)), ZMQPollItem(.socket(back)), ZMQPollItem(.fileDescriptor(stopFD))]
        while true {
            guard let ready = poll(items, report: report) else { return }
            if ready[2].readable { return }
            if ready[0].readable {
                while let message = (try? front.receive(wait: false)) ?? nil {
                    _ = try? back.send(message, wait: false)
                }
            }
            if ready[1].readable {
                while let subscription = (try? back.receive(wait: false)) ?? nil {
                    _ = try? front.send(subscription, wait: false)
                }
            }
        }
    }
}
