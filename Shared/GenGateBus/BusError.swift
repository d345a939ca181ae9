/// Errors of the message bus that are not plain libzmq failures.
public enum BusError: Error, CustomStringConvertible, Equatable, Sendable {
    /// An `ipc://` path longer than the kernel allows for Unix sockets.
    case endpointTooLong(endpoint: String, limit: Int)
    /// A message whose envelope declares a schema version this build does not speak.
    case unsupportedVersion(version: Int, type: String)
    /// A message that is not a GenGate envelope at all, or whose payload does not fit its type.
    case malformedMessage(String)
    /// The socket was closed.
    case closed

    public var description: String {
        switch self {
        case .endpointTooLong(let endpoint, let limit):
            return
                "ipc endpoint \(endpoint) is longer than the \(limit) bytes Unix sockets allow; use a shorter data dir or tcp://"
        case .unsupportedVersion(let version, let type):
            return
                "message \(type) has schema version \(version); this build speaks version \(Envelope<WorkItem>.schemaVersion)"
        case .malformedMessage(let reason):
            return "malformed message: \(reason)"
        case .closed:
            return "socket closed"
        }
    }
}
