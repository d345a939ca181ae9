import Synchronization

/// Messages this process's bus sockets dropped, by socket name, since it started: reported in
/// every heartbeat, so the monitor can put every drop in /metrics.
public final class BusStatistics: Sendable {
    public static let shared = BusStatistics()

    private let drops = Mutex<[String: Int]>([:])

    func dropped(_ socket: String) {
        drops.withLock { $0[socket, default: 0] += 1 }
    }

    /// Drops so far, by socket name.
    public var dropped: [String: Int] { drops.withLock { $0 } }
}
