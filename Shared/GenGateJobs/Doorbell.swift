import Synchronization

/// Wakes one waiting loop early: `wait(upTo:)` returns when `ring()` is called or the time is up.
/// A ring while nobody waits is remembered once, so a hint that arrives just before the loop
/// goes to sleep is not lost. A spurious early return is possible; callers look again anyway.
public final class Doorbell: Sendable {
    private struct State {
        var waiter: CheckedContinuation<Void, Never>?
        var rung = false
    }

    private let state = Mutex(State())

    public init() {}

    public func ring() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.rung = true
            return nil
        }
        waiter?.resume()
    }

    /// Waits until rung or `duration` has passed (or the calling task is cancelled).
    public func wait(upTo duration: Duration) async {
        let timer = Task {
            guard (try? await Task.sleep(for: duration)) != nil else { return }  // cancelled: we were rung
            self.ring()
        }
        defer { timer.cancel() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.rung || Task.isCancelled {
                        state.rung = false
                        return true
                    }
                    state.waiter = waiter
                    return false
                }
                if now { waiter.resume() }
            }
        } onCancel: {
            self.ring()
        }
    }
}
