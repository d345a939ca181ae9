import CZeroMQ
#if canImport(Glibc)
    import Glibc
#endif

/// One entry of a `zmqPoll` call: a socket or a plain file descriptor, and the events wanted.
public struct ZMQPollItem {
    public enum Target {
        case socket(ZMQSocket)
        case fileDescriptor(Int32)
    }

    public var target: Target
    public var readable: Bool
    public var writable: Bool

    public init(_ target: Target, readable: Bool = true, writable: Bool = false) {
        self.target = target
        self.readable = readable
        self.writable = writable
    }
}

/// What `zmqPoll` found for one item.
public struct ZMQPollResult: Sendable {
    public var readable: Bool
    public var writable: Bool
}

/// Waits until one of `items` is ready or `timeoutMilliseconds` pass (-1: forever).
/// Blocks the calling thread: call it only from a thread that owns the sockets.
public func zmqPoll(_ items: [ZMQPollItem], timeoutMilliseconds: Int) throws -> [ZMQPollResult] {
    var raw = items.map { item -> zmq_pollitem_t in
        var events: Int16 = 0
        if item.readable { events |= Int16(ZMQ_POLLIN) }
        if item.writable { events |= Int16(ZMQ_POLLOUT) }
        switch item.target {
        case .socket(let socket):
            return zmq_pollitem_t(socket: socket.handle, fd: -1, events: events, revents: 0)
        case .fileDescriptor(let fd):
            return zmq_pollitem_t(socket: nil, fd: fd, events: events, revents: 0)
        }
    }
    while true {
        let rc = zmq_poll(&raw, Int32(raw.count), timeoutMilliseconds)
        if rc >= 0 { break }
        let error = zmq_errno()
        if error == EINTR { continue }
        throw ZMQError("zmq_poll", errno: error)
    }
    return raw.map {
        ZMQPollResult(readable: $0.revents & Int16(ZMQ_POLLIN) != 0, writable: $0.revents & Int16(ZMQ_POLLOUT) != 0)
    }
}
