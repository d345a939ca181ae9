import GenGateCore
import Foundation
import GenGateStore
import PostgresNIO
import Synchronization

/// Group commit on PostgreSQL, as `WriteBatcher` does on SQLite: writes from concurrent callers
/// of one process share a transaction (each in its own savepoint, so one that throws is rolled
/// back alone), and a caller resumes once the transaction holding its write has committed.
///
/// Every write transaction takes one advisory lock first (`PostgresSchema.writerLock`), held to
/// its commit: writes of all processes on all hosts are serialized, as SQLite's writer lock
/// serializes them on one host. That is what keeps every compare-and-set and count exact across
/// hosts (a provider's open tasks at admission, a batch's window), hands out event sequence
/// numbers in commit order (a reader that saw number n never later finds a smaller one), and
/// leaves no lock order to deadlock on. Reads take no lock. Claims still pick rows with
/// `FOR UPDATE SKIP LOCKED`, so they stay right if the lock is ever narrowed.
///
/// Writes run on a detached task: cancelling a caller does not cancel its write.
final class PostgresWriteBatcher: Sendable {
    private struct Pending: Sendable {
        /// Runs the write (in a savepoint when it shares the transaction) and keeps its result.
        let run: @Sendable (PostgresConnection, _ alone: Bool) async throws -> Void
        /// Resumes the caller: with its result, or with the transaction's error.
        let finish: @Sendable ((any Error)?) -> Void
    }

    private struct State {
        var queue: [Pending] = []
        var draining = false
    }

    private let state = Mutex(State())
    private let connect: PostgresStore.Connector
    private let maxBatch: Int

    init(connect: @escaping PostgresStore.Connector, maxBatch: Int = 256) {
        self.connect = connect
        self.maxBatch = maxBatch
    }

    /// Runs `body` in the next shared transaction and returns its result once that committed.
    func write<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let result = Locked<Result<T, any Error>?>(nil)
            let pending = Pending(
                run: { connection, alone in
                    if alone {
                        // Its error rolls the whole transaction back.
                        result.withLock { $0 = nil }
                        let value = try await body(connection)
                        result.withLock { $0 = .success(value) }
                        return
                    }
                    try await connection.run("SAVEPOINT w")
                    do {
                        let value = try await body(connection)
                        try await connection.run("RELEASE SAVEPOINT w")
                        result.withLock { $0 = .success(value) }
                    } catch {
                        result.withLock { $0 = .failure(PostgresStore.classify(error, committing: false)) }
                        // If this fails too, the connection is gone and the commit fails for all.
                        try await connection.run("ROLLBACK TO SAVEPOINT w")
                    }
                },
                finish: { error in
                    if let error {
                        continuation.resume(throwing: error)
                    } else {
                        continuation.resume(with: result.withLock { $0 } ?? .failure(CancellationError()))
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
                try await commit(batch)
                for pending in batch { pending.finish(nil) }
            } catch let failure as WriteFailure {
                if batch.count == 1, let own = failure.own {
                    batch[0].finish(own)
                } else {
                    for pending in batch { pending.finish(failure.error) }
                }
            } catch {
                for pending in batch { pending.finish(error) }
            }
        }
    }

    /// A transaction's failure: `own` is a lone write's own error (its transaction rolled back).
    private struct WriteFailure: Error {
        var error: any Error
        var own: (any Error)?
    }

    private func commit(_ batch: [Pending]) async throws {
        // Set once COMMIT is sent: a connection lost after that leaves the outcome unknown.
        let sentCommit = Locked(false)
        do {
            try await connect { connection in
                try await Self.run(batch, on: connection, sentCommit: sentCommit)
            }
        } catch let abandoned as PostgresStore.ConnectionAbandoned {
            throw WriteFailure(
                error: PostgresStore.classify(abandoned, committing: sentCommit.withLock { $0 }), own: nil)
        }
    }

    private static func run(_ batch: [Pending], on connection: PostgresConnection, sentCommit: Locked<Bool>)
        async throws
    {
        var committing = false
        do {
            try await connection.run("BEGIN")
            try await connection.run("SELECT pg_advisory_xact_lock($1)", [PostgresSchema.writerLock])
            let alone = batch.count == 1
            for pending in batch {
                do {
                    try await pending.run(connection, alone)
                } catch  where alone {
                    await Self.rollback(connection)
                    throw WriteFailure(error: error, own: PostgresStore.classify(error, committing: false))
                }
            }
            committing = true
            sentCommit.withLock { $0 = true }
            let result = try await connection.run("COMMIT")
            // COMMIT of a transaction that failed part-way answers ROLLBACK, not an error.
            guard result.command == "COMMIT" else {
                throw StoreError.unavailable("the transaction was rolled back by the server")
            }
        } catch let failure as WriteFailure {
            throw failure
        } catch {
            if !committing { await Self.rollback(connection) }
            throw WriteFailure(error: PostgresStore.classify(error, committing: committing), own: nil)
        }
    }

    /// Rolls back; a connection that cannot is closed, never handed back to the pool inside a
    /// transaction that holds the writer lock.
    static func rollback(_ connection: PostgresConnection) async {
        do {
            try await connection.run("ROLLBACK")
        } catch {
            try? await connection.close()
        }
    }
}
