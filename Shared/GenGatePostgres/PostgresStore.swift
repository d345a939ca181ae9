import Foundation
import GenGateCore
import GenGateStore
import Logging
import PostgresNIO
import Synchronization

/// The store on PostgreSQL, for services on several hosts: the same protocol, rules and answers
/// as `SQLiteStore`, over a bounded pool of connections (`PostgresSettings.poolSize`).
///
/// Writes go through `PostgresWriteBatcher` (grouped commits under one writer lock); reads go
/// straight to the pool. A server that cannot be reached, or a connection or lock not had within
/// `busyTimeout`, is `StoreError.unavailable` (nothing written; callers retry); the pool
/// reconnects by itself when the server is back. A failure while a commit is under way is
/// reported as it is: its outcome is unknown.
public final class PostgresStore: GenerationStore, @unchecked Sendable {
    /// Lends a connection to a closure, or fails with `StoreError.unavailable` in time.
    typealias Connector = @Sendable (@escaping @Sendable (PostgresConnection) async throws -> Void) async throws -> Void

    public let settings: PostgresSettings
    let pool: PostgresPool
    let batcher: PostgresWriteBatcher
    let logger: Logger
    let outage: Outage

    /// Connects, and checks (or with `migrate`, brings up to date) the schema.
    public init(settings: PostgresSettings, migrate: Bool = false, logger: Logger? = nil) async throws {
        self.settings = settings
        let quiet = Self.quieter(logger)
        self.logger = quiet
        let pool = PostgresPool {
            PostgresClient(configuration: settings.clientConfiguration(), backgroundLogger: quiet)
        }
        self.pool = pool
        let outage = Outage { [logger] outage in
            // The server answers a connection of its own, while the pool may still be backing off.
            guard (try? await settings.probe(timeout: 2)) != nil else { return }
            // Not if the pool has lent a connection since, or has any in use: replacing it would
            // close them under their statements (postgres-nio shuts a pool down by force).
            guard outage.since != nil, pool.renew() else { return }
            logger?.notice(
                "PostgreSQL answers again; started a fresh connection pool",
                metadata: ["store": "\(settings.description)"])
        }
        self.outage = outage
        let timeout = settings.busyTimeout
        let description = settings.description
        batcher = PostgresWriteBatcher(connect: { body in
            try await Self.lend(pool, timeout: timeout, to: description, logger: quiet, outage: outage, body)
        })
        do {
            do {
                try await settings.probe(timeout: settings.busyTimeout)
            } catch {
                let problem = Self.classify(error, committing: false)
                if case .unavailable = problem as? StoreError {
                    throw StoreError.unavailable("PostgreSQL at \(settings.description) cannot be reached")
                }
                throw PostgresStoreError(
                    state: (problem as? PostgresStoreError)?.state ?? "",
                    message: "cannot log in to PostgreSQL at \(settings.description): \(problem)")
            }
            if migrate {
                try await self.migrate()
            } else {
                try await checkSchema()
            }
        } catch {
            pool.close()
            throw error
        }
    }

    deinit { pool.close() }

    /// The pool's own log: warnings and worse only (it reports every failed reconnection at
    /// `info`; the store's callers say what an outage costs).
    static func quieter(_ logger: Logger?) -> Logger {
        guard var logger else { return PostgresConnection.quiet }
        logger.logLevel = max(logger.logLevel, .warning)
        return logger
    }

    /// Closes the pool; calls after this fail.
    public func close() { pool.close() }

    // MARK: Connections

    /// Runs `body` on a connection of `pool`; `StoreError.unavailable` if none is had
    /// within `timeout` (the body then never runs).
    ///
    /// The caller always hears back in bounded time, whatever the pool or a connection does: the
    /// body runs in a task of its own that the caller does not wait for once the body is given
    /// up on. That happens when its connection has closed (the server went away) and the body
    /// has still not ended a moment later (a statement whose answer will never come), or when the
    /// body has run `hangLimit` seconds (a connection that stopped answering: statements
    /// themselves are cut by the server's `statement_timeout` well before), in which case the
    /// connection is closed first. A body given up on is `ConnectionAbandoned` (nothing more
    /// reaches the server on its connection), which the caller classifies: a read or a write
    /// whose COMMIT was not sent is unavailable, one whose COMMIT was sent has an unknown outcome. A body is never cancelled because of a timeout, as
    /// it may be mid-transaction; a cancelled caller cancels it (writes run on a detached task
    /// and are never cancelled).
    static func lend(
        _ pool: PostgresPool, timeout: TimeInterval, to description: String, logger: Logger,
        outage: Outage, _ body: @escaping @Sendable (PostgresConnection) async throws -> Void
    ) async throws {
        // While the server is known to be out of reach, a call gives up after a second, not the
        // whole timeout: callers hear "unavailable" at once instead of queueing behind each other.
        let timeout = outage.since == nil ? timeout : min(timeout, 1)
        let unavailable = StoreError.unavailable(
            "no connection to PostgreSQL at \(description) within \(Int(timeout.rounded())) s")
        let hangLimit = max(90, timeout * 6)
        let lending = Lending()
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                guard lending.start(continuation), !Task.isCancelled else {
                    lending.finish(.failure(CancellationError()))
                    return
                }
                let client = pool.client
                lending.work = Task.detached {
                    do {
                        try await client.withConnection { connection in
                            guard lending.lent(connection) else { throw unavailable }
                            pool.lent(client)
                            outage.ended()
                            defer {
                                lending.bodyEnded()
                                if lending.uncount() { pool.returned(client) }
                            }
                            try await body(connection)
                        }
                        lending.finish(.success(()))
                    } catch {
                        if lending.wasLent || error is CancellationError {
                            lending.finish(.failure(classify(error, committing: false)))
                        } else if !lending.cancelled, !lending.answered {
                            // The pool could not lend a connection (its circuit breaker is open
                            // after a long outage, it is closed): nothing ran.
                            outage.began()
                            lending.finish(
                                .failure(
                                    StoreError.unavailable("no connection to PostgreSQL at \(description): \(error)")))
                        }
                    }
                }
                if lending.cancelled { lending.work?.cancel() }  // cancelled before there was a task to cancel
                lending.watchdog = Task.detached {
                    try? await Task.sleep(for: .seconds(timeout))
                    if Task.isCancelled { return }  // answered meanwhile
                    if lending.giveUpWaiting() {
                        // A pool whose connections are all in use is busy, not out of reach.
                        if !pool.busy { outage.began() }
                        lending.work?.cancel()  // the lease request; the body never runs
                        lending.finish(.failure(unavailable))
                        return
                    }
                    var closedFor = 0
                    var elapsed = timeout
                    while let lent = lending.runningOn {
                        closedFor = lent.isClosed ? closedFor + 1 : 0
                        if closedFor >= 2 {
                            logger.warning(
                                "a PostgreSQL connection closed under a statement that never ended; giving up on it",
                                metadata: ["store": "\(description)"])
                            if lending.uncount() { pool.returned(client) }
                            lending.finish(.failure(ConnectionAbandoned()))
                            return
                        }
                        if elapsed >= hangLimit {
                            logger.error(
                                "a PostgreSQL connection stopped answering; closing it",
                                metadata: ["store": "\(description)", "seconds": "\(Int(hangLimit))"])
                            try? await lent.close()
                            try? await Task.sleep(for: .seconds(2))
                            if lending.uncount() { pool.returned(client) }
                            lending.finish(.failure(ConnectionAbandoned()))
                            return
                        }
                        try? await Task.sleep(for: .seconds(1))
                        if Task.isCancelled { return }
                        elapsed += 1
                    }
                }
            }
        } onCancel: {
            // Not lent yet: the caller hears CancellationError at once and the lease request is
            // dropped. Lent: the body sees the cancellation (a read stops; writes run detached and
            // are never cancelled) and the caller hears how it ended.
            if lending.cancel() { lending.finish(.failure(CancellationError())) }
            lending.work?.cancel()
        }
    }

    /// One `lend`: whether its connection was lent, the tasks it runs, and its caller's
    /// continuation, resumed exactly once (`finish`), which also stops the watchdog.
    final class Lending: Sendable {
        enum Phase: Sendable {
            case waiting
            case lent(PostgresConnection)
            case done, gaveUp
        }

        private struct State: Sendable {
            var phase = Phase.waiting
            var cancelled = false
            var started = false
            /// Counted as in use by the pool, until the body ends or is given up on.
            var counted = false
            var continuation: CheckedContinuation<Void, any Error>?
            var answered = false
            var work: Task<Void, Never>?
            var watchdog: Task<Void, Never>?
        }

        private let state = Locked(State())

        /// Takes the caller's continuation; false if the caller was cancelled already.
        func start(_ continuation: CheckedContinuation<Void, any Error>) -> Bool {
            state.withLock { state in
                state.continuation = continuation
                state.started = true
                return !state.cancelled
            }
        }

        var work: Task<Void, Never>? {
            get { state.withLock { $0.work } }
            set { state.withLock { $0.work = newValue } }
        }

        /// Set once; cancelled at once if the caller was answered before.
        var watchdog: Task<Void, Never>? {
            get { state.withLock { $0.watchdog } }
            set {
                let answered = state.withLock { state -> Bool in
                    state.watchdog = newValue
                    return state.answered
                }
                if answered { newValue?.cancel() }
            }
        }

        /// True if the connection goes to the body (nobody gave up waiting for it).
        func lent(_ connection: PostgresConnection) -> Bool {
            state.withLock { state in
                guard case .waiting = state.phase else { return false }
                state.phase = .lent(connection)
                state.counted = true
                return true
            }
        }

        /// True the first time after the connection was lent: the pool is to hear it is free.
        func uncount() -> Bool {
            state.withLock { state in
                defer { state.counted = false }
                return state.counted
            }
        }

        var wasLent: Bool {
            state.withLock { state in
                switch state.phase {
                case .lent, .done: return true
                case .waiting, .gaveUp: return false
                }
            }
        }

        var cancelled: Bool { state.withLock { $0.cancelled } }

        /// The caller has had its answer (a timeout's, or the body's).
        var answered: Bool { state.withLock { $0.answered } }

        func bodyEnded() { state.withLock { $0.phase = .done } }

        /// The connection the body runs on, while it runs and its caller has not been answered.
        var runningOn: PostgresConnection? {
            state.withLock { state in
                guard !state.answered, case .lent(let connection) = state.phase else { return nil }
                return connection
            }
        }

        /// True if no connection was lent yet: nobody will wait for one any more.
        func giveUpWaiting() -> Bool {
            state.withLock { state in
                guard case .waiting = state.phase, !state.answered else { return false }
                state.phase = .gaveUp
                return true
            }
        }

        /// The caller was cancelled; true if no connection was lent and the caller is waiting
        /// (it is to be answered now).
        func cancel() -> Bool {
            state.withLock { state in
                state.cancelled = true
                guard case .waiting = state.phase else { return false }
                state.phase = .gaveUp
                return state.started
            }
        }

        /// Answers the caller, the first time only, and stops the watchdog.
        func finish(_ result: Result<Void, any Error>) {
            let ended = state.withLock { state -> (CheckedContinuation<Void, any Error>, Task<Void, Never>?)? in
                guard !state.answered, let continuation = state.continuation else { return nil }
                state.answered = true
                state.continuation = nil
                return (continuation, state.watchdog)
            }
            guard let (continuation, watchdog) = ended else { return }
            watchdog?.cancel()
            continuation.resume(with: result)
        }
    }

    /// A body given up on because its connection closed or stopped answering under it.
    struct ConnectionAbandoned: Error, CustomStringConvertible {
        var description: String { "the connection to PostgreSQL was lost under a statement" }
    }

    /// A read on a connection of the pool.
    func read<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let result = Locked<T?>(nil)
        do {
            try await Self.lend(
                pool, timeout: settings.busyTimeout, to: settings.description, logger: logger, outage: outage
            ) {
                connection in
                let value = try await body(connection)
                result.withLock { $0 = value }
            }
        } catch let abandoned as ConnectionAbandoned {
            throw Self.classify(abandoned, committing: false)
        }
        guard let value = result.withLock({ $0 }) else { throw StoreError.unavailable("a read returned nothing") }
        return value
    }

    /// A write, grouped with others into one transaction (see `PostgresWriteBatcher`).
    func write<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await batcher.write(body)
    }

    /// `error` as callers act on it: a server that cannot be reached, a busy lock, a
    /// serialization failure (nothing written) is `StoreError.unavailable`; a server's refusal
    /// becomes `PostgresStoreError` with its message (PostgresNIO's own description hides it).
    /// While `committing`, a lost connection leaves the outcome unknown and is not unavailable.
    static func classify(_ error: any Error, committing: Bool) -> any Error {
        if error is StoreError || error is PostgresStoreError { return error }
        if error is ConnectionAbandoned {
            return committing
                ? PostgresStoreError(
                    state: "08006", message: "the connection was lost during a commit (outcome unknown)")
                : StoreError.unavailable("PostgreSQL: \(error)")
        }
        if let error = error as? PostgresTransactionError {
            return classify(
                error.commitError ?? error.closureError ?? error.beginError ?? error, committing: committing)
        }
        guard let psql = error as? PSQLError else { return error }
        switch psql.code {
        case .server:
            let state = psql.serverInfo?[.sqlState] ?? ""
            let message = psql.serverInfo?[.message] ?? "PostgreSQL refused the statement"
            // 08: connection exceptions; 40001/40P01: serialization failure, deadlock (the
            // transaction was rolled back); 55P03: a lock not had in time; 57014: a statement
            // over statement_timeout; 57P0x: the server is
            // shutting down or starting; 53300: too many connections.
            if state.hasPrefix("08")
                || ["40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "53300"].contains(state)
            {
                return committing
                    ? PostgresStoreError(state: state, message: "during commit (outcome unknown): \(message)")
                    : StoreError.unavailable("PostgreSQL: \(message) (\(state))")
            }
            return PostgresStoreError(state: state, message: message)
        case .connectionError, .serverClosedConnection, .clientClosedConnection, .poolClosed, .uncleanShutdown,
            .sslUnsupported, .failedToAddSSLHandler:
            if committing {
                return PostgresStoreError(
                    state: "08006", message: "the connection was lost during a commit (outcome unknown)")
            }
            return StoreError.unavailable("PostgreSQL cannot be reached (\(psql.code))")
        default:
            return PostgresStoreError(state: "", message: "PostgreSQL client error: \(psql.code)")
        }
    }

    // MARK: Schema

    /// Applies the migrations not yet applied, under a lock that the other hosts starting at the
    /// same moment wait for.
    func migrate() async throws {
        try await Self.lend(
            pool, timeout: max(settings.busyTimeout, 60), to: settings.description, logger: logger, outage: Outage()
        ) { connection in
            // Another host's migration may take longer than any store statement should.
            try await connection.run("SET lock_timeout = 0")
            try await connection.run("SET statement_timeout = 0")
            try await connection.run("SELECT pg_advisory_lock($1)", [PostgresSchema.migrationLock])
            do {
                try await connection.run(
                    "CREATE TABLE IF NOT EXISTS gengate_migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
                )
                let applied = Set(
                    try await connection.rows("SELECT name FROM gengate_migrations").map {
                        try $0.get("name", as: String.self)
                    })
                let known = Set(PostgresSchema.migrations.map(\.name))
                if let newer = applied.subtracting(known).first {
                    throw StoreError.schemaMismatch(
                        "the database was migrated by a newer GenGate (\(newer)); upgrade this one")
                }
                for migration in PostgresSchema.migrations where !applied.contains(migration.name) {
                    try await connection.run("BEGIN")
                    for statement in PostgresSchema.statements(migration.sql) { try await connection.run(statement) }
                    do {
                        try await connection.run(
                            "INSERT INTO gengate_migrations (name, applied_at) VALUES ($1, $2)",
                            [migration.name, Date().timeIntervalSince1970])
                        let commit = try await connection.run("COMMIT")
                        guard commit.command == "COMMIT" else {
                            throw StoreError.schemaMismatch("migration \(migration.name) was rolled back")
                        }
                    } catch {
                        _ = try? await connection.run("ROLLBACK")
                        throw error
                    }
                }
            } catch {
                _ = try? await connection.run("ROLLBACK")
                _ = try? await connection.run("SELECT pg_advisory_unlock($1)", [PostgresSchema.migrationLock])
                throw Self.classify(error, committing: false)
            }
            try await connection.run("SELECT pg_advisory_unlock($1)", [PostgresSchema.migrationLock])
            try await connection.run("RESET lock_timeout")
            try await connection.run("RESET statement_timeout")
        }
    }

    func checkSchema() async throws {
        let applied = try await read { connection -> [String] in
            let exists = try await connection.row("SELECT to_regclass('gengate_migrations') IS NOT NULL AS present")
            guard try exists?.get("present", as: Bool.self) == true else { return [] }
            return try await connection.rows("SELECT name FROM gengate_migrations").map { try $0.get("name") }
        }
        let known = PostgresSchema.migrations.map(\.name)
        if let newer = Set(applied).subtracting(known).first {
            throw StoreError.schemaMismatch(
                "\(settings.description) was migrated by a newer GenGate (\(newer)); upgrade this one")
        }
        if !Set(known).isSubset(of: Set(applied)) {
            throw StoreError.schemaMismatch(
                "\(settings.description) is not migrated to this version; run `gengate migrate`")
        }
    }
}

/// Since when no connection could be had, if that is the state now. While it lasts, `recover`
/// runs every `probeEvery` seconds at most (one at a time): the store probes the server and, if
/// it answers, renews its pool.
final class Outage: Sendable {
    private struct State: Sendable {
        var since: Date?
        var probing = false
        var lastProbe = Date.distantPast
    }

    private let state = Locked(State())
    private let recover: (@Sendable (Outage) async -> Void)?
    private let probeEvery: TimeInterval

    init(probeEvery: TimeInterval = 2, recover: (@Sendable (Outage) async -> Void)? = nil) {
        self.probeEvery = probeEvery
        self.recover = recover
    }

    var since: Date? { state.withLock { $0.since } }

    func began() {
        let probe = state.withLock { state -> Bool in
            let now = Date()
            if state.since == nil { state.since = now }
            guard let since = state.since, now.timeIntervalSince(since) >= probeEvery, !state.probing,
                now.timeIntervalSince(state.lastProbe) >= probeEvery
            else { return false }
            state.probing = true
            state.lastProbe = now
            return true
        }
        guard probe, let recover else { return }
        Task.detached {
            await recover(self)
            self.state.withLock { $0.probing = false }
        }
    }

    func ended() { state.withLock { $0.since = nil } }
}

/// The store's connection pool, replaced by a fresh one when the server answers again while the
/// pool still cannot lend and has nothing lent out: postgres-nio's pool waits up to a minute between connection attempts
/// after a long outage (and after a minute of failures refuses every lease until its next
/// attempt), so on its own it may notice a returned server a minute late.
final class PostgresPool: Sendable {
    private struct Entry: Sendable {
        var client: PostgresClient
        var running: Task<Void, Never>
        /// Its connections lent out now.
        var lent = 0
        /// Replaced: shut down once nothing it lent is in use.
        var retired = false
    }

    private struct State: Sendable {
        var current: ObjectIdentifier
        var entries: [ObjectIdentifier: Entry]
        var renewed = Date.distantPast
        var closed = false
    }

    private let state: Locked<State>
    private let make: @Sendable () -> PostgresClient
    /// Renewals at most this often: a server that answers a probe but refuses the pool's own
    /// connections (a pooler refusing its startup parameters) is not met with a pool every probe.
    static let renewEvery: TimeInterval = 30
    /// How long a replaced pool is kept before it shuts down with nothing lent: a lease it handed
    /// out just before the replacement is counted by then, and keeps it up until returned.
    static let retireAfter: Duration = .seconds(2)

    init(make: @escaping @Sendable () -> PostgresClient) {
        self.make = make
        let client = make()
        let entry = Entry(client: client, running: Task.detached { await client.run() })
        state = Locked(State(current: ObjectIdentifier(client), entries: [ObjectIdentifier(client): entry]))
    }

    var client: PostgresClient { state.withLock { $0.entries[$0.current]!.client } }

    /// Some of the current client's connections are lent out (the pool is busy, not out of reach).
    var busy: Bool { state.withLock { ($0.entries[$0.current]?.lent ?? 0) > 0 } }

    func lent(_ client: PostgresClient) {
        state.withLock { $0.entries[ObjectIdentifier(client)]?.lent += 1 }
    }

    func returned(_ client: PostgresClient) {
        let idle = state.withLock { state -> Task<Void, Never>? in
            let id = ObjectIdentifier(client)
            guard var entry = state.entries[id] else { return nil }
            entry.lent = max(0, entry.lent - 1)
            state.entries[id] = entry
            return entry.retired && entry.lent == 0 ? state.entries.removeValue(forKey: id)?.running : nil
        }
        idle?.cancel()
    }

    /// A fresh pool for the calls from now on, unless the current one has connections lent out
    /// or was renewed less than `renewEvery` ago. The old one shuts down (postgres-nio closes the
    /// connections of a pool it shuts down) only once nothing it lent is in use. True if renewed.
    func renew() -> Bool {
        let now = Date()
        let due = state.withLock { state in
            !state.closed && (state.entries[state.current]?.lent ?? 0) == 0
                && now.timeIntervalSince(state.renewed) >= Self.renewEvery
        }
        guard due else { return false }
        let client = make()
        let old = state.withLock { state -> ObjectIdentifier? in
            let old = state.current
            guard !state.closed, (state.entries[old]?.lent ?? 0) == 0 else { return nil }
            state.entries[old]?.retired = true
            state.entries[ObjectIdentifier(client)] = Entry(
                client: client, running: Task.detached { await client.run() })
            state.current = ObjectIdentifier(client)
            state.renewed = now
            return old
        }
        guard let old else { return false }
        Task.detached {
            try? await Task.sleep(for: Self.retireAfter)
            let idle = self.state.withLock { state -> Task<Void, Never>? in
                guard (state.entries[old]?.lent ?? 0) == 0 else { return nil }
                return state.entries.removeValue(forKey: old)?.running
            }
            idle?.cancel()
        }
        return true
    }

    func close() {
        let running = state.withLock { state -> [Task<Void, Never>] in
            state.closed = true
            return state.entries.values.map(\.running)
        }
        for task in running { task.cancel() }
    }
}

/// PostgreSQL refused a statement: its SQLSTATE and message.
public struct PostgresStoreError: Error, CustomStringConvertible, Equatable {
    public var state: String
    public var message: String

    public var description: String { state.isEmpty ? message : "\(message) (SQLSTATE \(state))" }
}
