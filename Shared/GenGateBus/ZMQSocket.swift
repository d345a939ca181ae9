import CZeroMQ
import Foundation

/// The socket patterns GenGate uses.
public enum ZMQSocketType: Sendable {
    case push, pull, pub, sub, xpub, xsub

    var rawValue: Int32 {
        switch self {
        case .push: return ZMQ_PUSH
        case .pull: return ZMQ_PULL
        case .pub: return ZMQ_PUB
        case .sub: return ZMQ_SUB
        case .xpub: return ZMQ_XPUB
        case .xsub: return ZMQ_XSUB
        }
    }

    /// Whether messages flow into this socket.
    var receives: Bool {
        switch self {
        case .pull, .sub, .xpub, .xsub: return true
        case .push, .pub: return false
        }
    }
}

/// A thin wrapper over one libzmq socket.
///
/// Not thread-safe, like the socket it wraps: one thread creates it, uses it and closes it.
/// Nothing here blocks unless asked to (`receive(wait:)`/`send(wait:)`); the async side of
/// GenGate never calls it directly but through `BusSocket`, which gives the socket its own thread.
public final class ZMQSocket {
    let handle: UnsafeMutableRawPointer
    public let type: ZMQSocketType
    private var closed = false

    public init(context: ZMQContext, type: ZMQSocketType) throws {
        guard let handle = zmq_socket(context.handle, type.rawValue) else { throw ZMQError.last("zmq_socket") }
        self.handle = handle
        self.type = type
    }

    deinit { close() }

    public func bind(_ endpoint: String) throws {
        try Self.checkIPCPath(endpoint)
        guard zmq_bind(handle, endpoint) == 0 else { throw ZMQError.last("zmq_bind \(endpoint)") }
    }

    public func connect(_ endpoint: String) throws {
        try Self.checkIPCPath(endpoint)
        guard zmq_connect(handle, endpoint) == 0 else { throw ZMQError.last("zmq_connect \(endpoint)") }
    }

    /// The endpoint last bound, with the real port when bound to `tcp://host:*`.
    public var lastEndpoint: String {
        var buffer = [UInt8](repeating: 0, count: 512)
        var size = buffer.count
        guard zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size) == 0 else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
    }

    public func setOption(_ option: Int32, _ value: Int32) throws {
        var value = value
        guard zmq_setsockopt(handle, option, &value, MemoryLayout<Int32>.size) == 0 else {
            throw ZMQError.last("zmq_setsockopt \(option)")
        }
    }

    public func setOption(_ option: Int32, bytes: [UInt8]) throws {
        let rc = bytes.withUnsafeBufferPointer { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }
        guard rc == 0 else { throw ZMQError.last("zmq_setsockopt \(option)") }
    }

    /// Messages queued per peer before sending drops (PUB) or refuses (PUSH).
    public func setSendHighWaterMark(_ messages: Int32) throws { try setOption(ZMQ_SNDHWM, messages) }
    public func setReceiveHighWaterMark(_ messages: Int32) throws { try setOption(ZMQ_RCVHWM, messages) }
    /// How long `close` may keep unsent messages; keep it bounded or context termination hangs.
    public func setLinger(milliseconds: Int32) throws { try setOption(ZMQ_LINGER, milliseconds) }
    /// SUB sockets: receive messages whose first frame starts with `prefix` ("" for all).
    public func subscribe(_ prefix: String) throws { try setOption(ZMQ_SUBSCRIBE, bytes: Array(prefix.utf8)) }

    /// Sends a multipart message. Returns false when the socket cannot take it now (`EAGAIN`:
    /// high-water mark reached, or a PUSH socket with no peer) and `wait` is false.
    @discardableResult
    public func send(_ frames: [Data], wait: Bool = false) throws -> Bool {
        precondition(!frames.isEmpty, "a message has at least one frame")
        for (position, frame) in frames.enumerated() {
            var flags: Int32 = position < frames.count - 1 ? ZMQ_SNDMORE : 0
            if !wait { flags |= ZMQ_DONTWAIT }
            while true {
                let rc = frame.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
                if rc >= 0 { break }
                let error = zmq_errno()
                if error == EINTR { continue }
                // libzmq sends multipart messages atomically: only the first frame can be refused.
                if error == EAGAIN && position == 0 { return false }
                throw ZMQError("zmq_send", errno: error)
            }
        }
        return true
    }

    /// Receives one whole multipart message, or nil when none is waiting and `wait` is false.
    public func receive(wait: Bool = false) throws -> [Data]? {
        var frames: [Data] = []
        while true {
            var message = zmq_msg_t()
            zmq_msg_init(&message)
            defer { zmq_msg_close(&message) }
            let flags: Int32 = (wait || !frames.isEmpty) ? 0 : ZMQ_DONTWAIT
            let rc = zmq_msg_recv(&message, handle, flags)
            if rc < 0 {
                let error = zmq_errno()
                if error == EINTR { continue }
                if error == EAGAIN && frames.isEmpty { return nil }
                throw ZMQError("zmq_msg_recv", errno: error)
            }
            let size = zmq_msg_size(&message)
            if let data = zmq_msg_data(&message), size > 0 {
                frames.append(Data(bytes: data, count: size))
            } else {
                frames.append(Data())
            }
            if zmq_msg_more(&message) == 0 { return frames }
        }
    }

    /// Closes the socket. Idempotent.
    public func close() {
        guard !closed else { return }
        closed = true
        zmq_close(handle)
    }

    /// `ipc://` endpoints are Unix socket paths, which the kernel limits to 107 bytes; say so
    /// plainly instead of letting libzmq fail with a bare errno.
    static func checkIPCPath(_ endpoint: String) throws {
        guard endpoint.hasPrefix("ipc://") else { return }
        let path = endpoint.dropFirst("ipc://".count)
        if path.utf8.count > 107 {
            throw BusError.endpointTooLong(endpoint: endpoint, limit: 107)
        }
    }
}
