import Foundation
import GRDB
import Synchronization

/// Group commit: writes from concurrent callers share one transaction and one fsync.
///
/// Each write runs in its own savepoint inside the shared transaction, so one that throws (a
/// refused compare-and-set, a trigger) is rolled back alone while the others commit. A caller
/// resumes only after the transaction holding its write has committed, with its own result, or
/// with the commit's error if the commit failed. Writes run on a detached task and GRDB's writer
/// queue: cancelling a caller does not cancel its write, so an outcome the caller started to
/// record is recorded even while its process is shutting down.
///
/// Only one transaction of this process takes SQLite's writer lock at a time, which keeps the
/// number of lock takers across processes (and with them the busy-wait tail) low.
final class WriteBatcher: Sendable {
    private struct Pending: @unchecked Sendable {
        /// Runs the write in its savepoint and keeps its result for `finish`.
        let run: (Database) -> Void
        /// Resumes the caller: with its result, or with the transaction's error.
        let finish: ((any Error)?) -> Void
    }

    private struct State {
        var queue: [Pending] = []
        var draining = false
    }

    private let pool: DatabasePool
    private let state = Mutex(State())
    /// Writes one transaction carries at most, so that one batch's latency stays bounded.
    private let maxBatch: Int

    init(pool: DatabasePool, maxBatch: Int = 512) {
        self.pool = pool
        self.maxBatch = maxBatch
    }

    /// Runs `body` in the next shared transaction and returns its result once that committed.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let result = ResultBox<T>()
            let pending = Pending(
                run: { db in
                    do {
                        try db.inSavepoint {
                            result.value = .success(try body(db))
                            return .commit
                        }
                    } catch {
                        result.value = .failure(error)
                    }
                },
                finish: { commitError in
                    if let commitError {
                        continuation.resume(throwing: commitError)
                    } else {
                        continuation.resume(with: result.value ?? .failure(CancellationError()))
                    }
                })
            let start = state.withLock { state -> Bool in
                state.queue.append(pending)
                if state.draining { return false }
                state.draining = true
                return true
            }
            if start { Task.detached { await self.drain() } }
        }
    }

    private func drain() async {
        while true {
            let batch = state.withLock { state -> [Pending] in
                let batch = Array(state.queue.prefix(maxBatch))
                state.queue.removeFirst(batch.count)
                if batch.isEmpty { state.draining = false }
                return batch
            }
            if batch.isEmpty { return }
            do {
                try await pool.write { db in
                    for pending in batch { pending.run(db) }
                }
                for pending in batch { pending.finish(nil) }
            } catch {
                for pending in batch { pending.finish(error) }
            }
        }
    }
}

/// One write's result, set on the writer queue and read after the commit.
private final class ResultBox<T>: @unchecked Sendable {
    var value: Result<T, any Error>?
}
