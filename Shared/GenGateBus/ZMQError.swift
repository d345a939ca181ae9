import CZeroMQ
#if canImport(Glibc)
    import Glibc
#endif

/// A failed libzmq call: the operation, errno and libzmq's own description.
public struct ZMQError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let errno: Int32
    public let message: String

    public init(_ operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
        self.message = String(cString: zmq_strerror(errno))
    }

    static func last(_ operation: String) -> ZMQError {
        ZMQError(operation, errno: zmq_errno())
    }

    public var description: String { "\(operation): \(message) (errno \(errno))" }

    /// The context was terminated while the call was waiting.
    public var isTerminated: Bool { errno == ETERM }
}
