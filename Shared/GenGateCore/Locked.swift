import Synchronization

/// A value shared by concurrent tasks, behind a lock (a `Mutex` itself cannot be captured by
/// an escaping closure).
public final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    public init(_ value: Value) { mutex = Mutex(value) }

    public func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}
