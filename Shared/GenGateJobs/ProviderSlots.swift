import Synchronization

/// Bounds the calls in flight to each provider: `acquire` waits for one of `limit` slots of a
/// provider, `release` frees it for the next waiter, in arrival order.
public final class ProviderSlots: Sendable {
    private struct Slots {
        var inUse = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let limit: Int
    private let slots = Mutex<[String: Slots]>([:])

    public init(limit: Int) {
        self.limit = max(1, limit)
    }

    public func acquire(_ provider: String) async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let granted = slots.withLock { all -> Bool in
                var entry = all[provider, default: Slots()]
                defer { all[provider] = entry }
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

    public func release(_ provider: String) {
        let next = slots.withLock { all -> CheckedContinuation<Void, Never>? in
            guard var entry = all[provider] else { return nil }
            defer { all[provider] = entry }
            if entry.waiters.isEmpty {
                entry.inUse = max(0, entry.inUse - 1)
                return nil
            }
            return entry.waiters.removeFirst()  // the slot passes straight to the next waiter
        }
        next?.resume()
    }

    /// Providers whose slots are all taken (callers may be waiting too).
    public func saturated() -> Set<String> {
        slots.withLock { all in Set(all.filter { $0.value.inUse + $0.value.waiters.count >= limit }.keys) }
    }
}
