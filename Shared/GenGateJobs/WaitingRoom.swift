import Foundation
import GenGateStore
import Synchronization

/// Jobs this dispatcher holds back because their provider is at its limit (`ProviderAtLimit`),
/// first come first served per provider.
///
/// A held job is unleased in the store and due again `holdSeconds` later, so nothing is lost if
/// this process dies: the sweep re-drives it then. While this process lives, one watcher task per
/// provider with waiting jobs reads the provider's state from the store every `lookInterval` and
/// lets as many go as it has room for; a job refused again (another process took the room first)
/// goes back to the front. A job that arrives for a provider with jobs waiting joins the back
/// instead of trying first. Nothing here writes to the store while jobs wait.
public final class WaitingRoom: Sendable {
    public let holdSeconds: Double
    public let lookInterval: Duration

    /// A held job, and its version when held (it is let go only if still at it).
    struct Held: Sendable {
        var id: String
        var version: Int
        /// Higher first (a batch's `priority`); in order of arrival within one priority.
        var priority: Int = 0
    }

    struct State {
        var queues: [String: [Held]] = [:]
        /// The provider each held job waits for.
        var members: [String: String] = [:]
        /// Providers with a watcher.
        var watched: Set<String> = []
        /// Jobs let go whose handling has not ended (a submission among them runs to its end).
        var letGo = 0
        var stopped = false
    }

    /// Most jobs let go of one provider at one look.
    static let batch = 64

    let state = Mutex(State())

    public init(holdSeconds: Double = 10, lookInterval: Duration = .milliseconds(250)) {
        self.holdSeconds = holdSeconds
        self.lookInterval = lookInterval
    }

    /// Whether jobs of `provider` wait here.
    public func isWaiting(_ provider: String) -> Bool {
        state.withLock { !($0.queues[provider]?.isEmpty ?? true) }
    }

    /// How many jobs wait here, for each provider.
    public func counts() -> [String: Int] {
        state.withLock { $0.queues.mapValues(\.count).filter { $0.value > 0 } }
    }

    /// Holds `id` for `provider` (at the front when it was let go from here and refused again).
    /// Returns true when the provider has no watcher yet: the caller starts one.
    func hold(_ held: Held, provider: String, front: Bool) -> Bool {
        state.withLock { state in
            if state.members[held.id] == provider,
                let index = state.queues[provider]?.firstIndex(where: { $0.id == held.id })
            {
                // Held again at a newer version (re-driven by the sweep): it keeps its place.
                state.queues[provider]?[index] = held
                return false
            }
            if let other = state.members[held.id] {
                // Held for another provider before (its job moved along its route since).
                state.queues[other]?.removeAll { $0.id == held.id }
            }
            state.members[held.id] = provider
            var queue = state.queues[provider] ?? []
            // Before every job of lower priority; at the front of its own when it was let go and refused.
            let place =
                front
                ? queue.firstIndex { $0.priority <= held.priority } ?? queue.count
                : queue.firstIndex { $0.priority < held.priority } ?? queue.count
            queue.insert(held, at: place)
            state.queues[provider] = queue
            return state.watched.insert(provider).inserted
        }
    }

    /// Takes up to `count` jobs of `provider` from the front.
    func take(_ provider: String, count: Int) -> [Held] {
        state.withLock { state in
            guard var queue = state.queues[provider], count > 0 else { return [] }
            let taken = Array(queue.prefix(count))
            queue.removeFirst(taken.count)
            state.queues[provider] = queue.isEmpty ? nil : queue
            for held in taken { state.members[held.id] = nil }
            return taken
        }
    }

    /// Holds job `id` (at `version`) and, if it is the first of its provider, watches the
    /// provider's room.
    func hold(_ id: String, version: Int, priority: Int, provider: String, front: Bool, context: JobContext) {
        guard hold(Held(id: id, version: version, priority: priority), provider: provider, front: front) else {
            return
        }
        Task { await watch(provider, context: context) }
    }

    /// Lets no more jobs go (the dispatcher is stopping: they are in the store, due after the
    /// hold, for whoever comes next).
    public func stop() { state.withLock { $0.stopped = true } }

    /// Waits for the jobs let go to be handled: a submission under way is recorded first.
    public func drain() async {
        while state.withLock({ $0.letGo > 0 }) { try? await Task.sleep(for: .milliseconds(20)) }
    }

    /// Whether the watcher of `provider` goes on (jobs wait); if not, it is gone, in one step, so
    /// a job held just after starts a new one.
    func keepsWatching(_ provider: String) -> Bool {
        state.withLock { state in
            if !(state.queues[provider]?.isEmpty ?? true) { return true }
            state.watched.remove(provider)
            return false
        }
    }

    /// Lets the jobs of `provider` go as room appears, until none wait.
    func watch(_ provider: String, context: JobContext) async {
        while keepsWatching(provider) {
            try? await Task.sleep(for: lookInterval)
            var room = 1
            do {
                if let limit = try await context.store.providerLimits().first(where: { $0.provider == provider }) {
                    room = limit.room
                } else {
                    room = Int.max  // no limit left (a configuration changed): let all go
                }
            } catch {
                context.logger.warning(
                    "cannot read a provider's limits; trying one waiting job",
                    metadata: ["provider": "\(provider)", "error": "\(error)"])
            }
            if state.withLock({ $0.stopped }) { return }  // the process is ending
            for held in take(provider, count: min(room, Self.batch)) {
                state.withLock { $0.letGo += 1 }
                Task {
                    await Submission(context: context).handle(held.id, heldAt: held.version)
                    state.withLock { $0.letGo -= 1 }
                }
            }
            // Let those just sent claim their room before looking again.
            if room > 0 { try? await Task.sleep(for: lookInterval) }
        }
    }
}
