import Synchronization

/// Bounds the work in flight for each key (calls to a provider, parts of uploads in memory):
/// `acquire` waits for one of `limit` slots of a key, `release` frees it for the next waiter, in
/// arrival order.
public final class Slots: Sendable {
    private struct Entry {
        var inUse = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let limit: Int
    private let slots = Mutex<[String: Entry]>([:])

    public init(limit: Int) {
        self.limit = max(1, limit)
    }

    public func acquire(_ key: String) async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let granted = slots.withLock { all -> Bool in
                var entry = all[key, default: Entry()]
                defer { all[key] = entry }
                if entry.inUse < limit {
                    entry.inUse += 1
                    return true
                }
                entry.waiters.append(waiter)
                return false
            }
            if granted { waiter.resume() }
        }
    }

    public func release(_ key: String) {
        let next = slots.withLock { all -> CheckedContinuation<Void, Never>? in
            guard var entry = all[key] else { return nil }
            defer { all[key] = entry }
            if entry.waiters.isEmpty {
                entry.inUse = max(0, entry.inUse - 1)
                return nil
            }
            return entry.waiters.removeFirst()  // the slot passes straight to the next waiter
        }
        next?.resume()
    }

    /// Keys whose slots are all taken (callers may be waiting too).
    public func saturated() -> Set<String> {
        slots.withLock { all in Set(all.filter { $0.value.inUse + $0.value.waiters.count >= limit }.keys) }
    }
}
