import Foundation
import GenGateCore
import GenGateLocalPorts
import Synchronization
import XCTest

@testable import GenGatePostgres
@testable import GenGateStore

/// The store contract on PostgreSQL: every case of `GenerationStoreContractTests` (and its
/// extensions) against a real server this process starts, each test on a fresh database.
final class PostgresStoreContractTests: GenerationStoreContractTests {
    var url: String!

    override func makeStore() async throws -> any GenerationStore {
        url = try LocalPostgres.shared().createDatabase()
        return try await PostgresStore(settings: try PostgresSettings.parse(url), migrate: true)
    }

    override func makeSecondConnection() async throws -> any GenerationStore {
        try await PostgresStore(settings: try PostgresSettings.parse(url))
    }

    override func tearDown() {
        (store as? PostgresStore)?.close()
        super.tearDown()
    }

    // Linux's test discovery finds a class by the test methods it declares itself, and then
    // runs the inherited ones too: this one makes sure the class is found.
    func testTheContractRunsOnPostgres() async throws {
        XCTAssertTrue(store is PostgresStore)
    }

}

/// What only PostgreSQL has: migrations from several hosts at once, its schema check, a bounded
/// pool, a server that goes away and comes back, and event numbers in commit order under
/// concurrent writers.
final class PostgresStoreTests: XCTestCase {
    func owner(_ store: PostgresStore) async throws -> APIKey {
        try await store.createAPIKey(name: "test", isAdmin: false).key
    }

    /// A store with a short busy timeout on a server of its own (to stop and start), and a key.
    func onItsOwnServer() async throws -> (LocalPostgres, PostgresStore, APIKey) {
        let server = try LocalPostgres()
        var settings = try PostgresSettings.parse(try server.createDatabase())
        settings.busyTimeout = 2
        let store = try await PostgresStore(settings: settings, migrate: true)
        return (server, store, try await owner(store))
    }

    /// Inserting `generation` into `store`, whose server is stopped, fails as unavailable.
    func refused(_ generation: Generation, by store: PostgresStore, line: UInt = #line) async {
        do {
            try await store.insert(generation, event: PostgresStoreTests.created(generation))
            XCTFail("wrote to a stopped server", line: line)
        } catch {
            XCTAssertTrue(StoreError.isUnavailable(error), "\(error)", line: line)
        }
    }

    static func job(owner: APIKey, now: Date = Date()) -> Generation {
        Generation(
            id: Identifier.make("gen", at: now), ownerKeyID: owner.id,
            request: GenerationRequest(model: "sim/image", prompt: "a fox", n: 1), provider: "sim", status: .pending,
            version: 1, progress: 0, attempts: 0, error: nil, providerTaskID: nil, leaseOwner: nil,
            leaseExpiresAt: nil, nextActionAt: now, deadlineAt: now + 600, createdAt: now, updatedAt: now,
            phaseTimes: [.pending: now], outputs: [])
    }

    static func created(_ generation: Generation) -> Event {
        Event(.generationCreated(.init(model: "sim/image", provider: "sim", n: 1)), generationID: generation.id)
    }

    func testHostsStartingTogetherMigrateOnceAndAnUnmigratedDatabaseIsRefused() async throws {
        let server = try LocalPostgres.shared()
        let url = try server.createDatabase()
        let settings = try PostgresSettings.parse(url)
        do {
            _ = try await PostgresStore(settings: settings)
            XCTFail("opened an unmigrated database")
        } catch let error as StoreError {
            XCTAssertTrue("\(error)".contains("gengate migrate"), "\(error)")
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<6 {
                group.addTask { _ = try await PostgresStore(settings: settings, migrate: true) }
            }
            try await group.waitForAll()
        }
        let database = String(url.split(separator: "/").last!.split(separator: "?").first!)
        // Each migration applied once, however many hosts raced to apply it.
        XCTAssertEqual(
            try server.psql("SELECT COUNT(*) FROM gengate_migrations", database: database),
            "\(PostgresSchema.migrations.count)")
        XCTAssertEqual(PostgresSchema.migrations.count, 5)
        _ = try await PostgresStore(settings: settings)
        XCTAssertFalse("\(settings)".contains(LocalPostgres.password), "the password is never shown")
    }

    func testTheWrongPasswordIsAClearError() async throws {
        let url = try LocalPostgres.shared().createDatabase().replacingOccurrences(
            of: LocalPostgres.password, with: "not-the-password")
        do {
            _ = try await PostgresStore(settings: try PostgresSettings.parse(url), migrate: true)
            XCTFail("connected with a wrong password")
        } catch {
            XCTAssertFalse("\(error)".contains("not-the-password"), "\(error)")
            XCTAssertTrue("\(error)".contains("28P01") || "\(error)".contains("password"), "\(error)")
        }
    }

    func testThePoolNeverOpensMoreThanItsSize() async throws {
        let server = try LocalPostgres.shared()
        let url = try server.createDatabase()
        var settings = try PostgresSettings.parse(url)
        settings.poolSize = 3
        let store = try await PostgresStore(settings: settings, migrate: true)
        let key = try await owner(store)
        let database = String(url.split(separator: "/").last!.split(separator: "?").first!)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<200 {
                group.addTask {
                    if index % 2 == 0 {
                        _ = try await store.list(ownerKeyID: key.id, status: nil, after: nil, limit: 10)
                    } else {
                        let generation = PostgresStoreTests.job(owner: key)
                        try await store.insert(generation, event: PostgresStoreTests.created(generation))
                    }
                }
            }
            try await group.waitForAll()
        }
        let open = try server.psql(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '\(database)' AND application_name = 'gengate'")
        XCTAssertLessThanOrEqual(Int(open) ?? 99, 3)
        let listed = try await store.list(ownerKeyID: key.id, status: nil, after: nil, limit: 1000)
        XCTAssertEqual(listed.count, 100)
    }

    func testEventNumbersFollowCommitOrderAcrossProcesses() async throws {
        let url = try LocalPostgres.shared().createDatabase()
        let settings = try PostgresSettings.parse(url)
        let first = try await PostgresStore(settings: settings, migrate: true)
        let second = try await PostgresStore(settings: settings)
        let key = try await owner(first)
        let writers = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<400 {
                    let store = index % 2 == 0 ? first : second
                    group.addTask {
                        let generation = PostgresStoreTests.job(owner: key)
                        try await store.insert(generation, event: PostgresStoreTests.created(generation))
                    }
                }
                try await group.waitForAll()
            }
        }
        // A reader that follows the log as an SSE client does: what it read past is never
        // added to later.
        var seen: [Int64] = []
        var cursor: Int64 = 0
        let deadline = Date() + 60
        while seen.count < 400 {
            guard Date() < deadline else {
                try await writers.value  // a writer's failure, if that is why
                return XCTFail("the reader found \(seen.count) of 400 events: some were skipped")
            }
            let page = try await first.events(ownerKeyID: key.id, after: cursor, limit: 50, scan: 1_000)
            for event in page.events { XCTAssertGreaterThan(event.seq, cursor) }
            seen += page.events.map(\.seq)
            cursor = page.through
            if page.events.isEmpty { try await Task.sleep(for: .milliseconds(2)) }
        }
        try await writers.value
        XCTAssertEqual(Set(seen).count, 400, "every event read once, none skipped")
        XCTAssertEqual(seen, seen.sorted())
    }

    func testARestartedServerLosesNoAcceptedWorkAndTheStoreReconnects() async throws {
        let (server, store, key) = try await onItsOwnServer()
        defer { try? server.stop() }
        var accepted: [String] = []
        for _ in 0..<20 {
            let generation = PostgresStoreTests.job(owner: key)
            try await store.insert(generation, event: PostgresStoreTests.created(generation))
            accepted.append(generation.id)
        }
        try server.stop()
        let started = Date()
        let generation = PostgresStoreTests.job(owner: key)
        await refused(generation, by: store)
        XCTAssertLessThan(Date().timeIntervalSince(started), 15, "fails in time, never hangs")
        try server.start()
        var again: Generation?
        for _ in 0..<50 where again == nil {
            do {
                try await store.insert(generation, event: PostgresStoreTests.created(generation))
                again = try await store.generation(id: generation.id)
            } catch  where StoreError.isUnavailable(error) {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        XCTAssertEqual(again?.id, generation.id, "the same store writes again once the server is back")
        let listed = try await store.list(ownerKeyID: key.id, status: nil, after: nil, limit: 100).map(\.id)
        XCTAssertEqual(Set(listed), Set(accepted + [generation.id]))
    }

    /// A server that stops while writes and reads are under way, again and again: every call
    /// ends (done or unavailable) within its timeouts, none waits for ever on a connection the
    /// server dropped, and the store works again after each restart.
    func testEveryCallEndsInTimeWhenTheServerStopsMidWork() async throws {
        let (server, store, key) = try await onItsOwnServer()
        defer { try? server.stop() }
        let running = Locked(true)
        let longest = Locked(0.0)
        let workers = (0..<12).map { worker in
            Task.detached {
                while running.withLock({ $0 }) {
                    let started = Date()
                    let generation = PostgresStoreTests.job(owner: key)
                    do {
                        if worker % 3 == 0 {
                            _ = try await store.generation(id: generation.id)
                        } else {
                            try await store.insert(generation, event: PostgresStoreTests.created(generation))
                        }
                    } catch {
                        try? await Task.sleep(for: .milliseconds(20))
                    }
                    let took = Date().timeIntervalSince(started)
                    longest.withLock { $0 = max($0, took) }
                }
            }
        }
        for _ in 0..<3 {
            try await Task.sleep(for: .milliseconds(700))
            try server.stop()
            try await Task.sleep(for: .seconds(3))
            try server.start()
        }
        try await Task.sleep(for: .seconds(1))
        // Every worker must get back here: one stuck on a dropped connection would hang the test.
        running.withLock { $0 = false }
        let stopped = Date()
        for worker in workers { await worker.value }
        XCTAssertLessThan(Date().timeIntervalSince(stopped), 10, "the workers' last calls ended in time")
        XCTAssertLessThan(longest.withLock { $0 }, 10, "no call waited past its timeouts")
        let generation = PostgresStoreTests.job(owner: key)
        var written = false
        for _ in 0..<100 where !written {
            do {
                try await store.insert(generation, event: PostgresStoreTests.created(generation))
                written = true
            } catch  where StoreError.isUnavailable(error) {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        XCTAssertTrue(written, "the store writes again after the last restart")
    }

    /// A caller cancelled while it waits for a connection hears so at once; that is no outage,
    /// and the next call has a connection as usual.
    func testACallerCancelledWhileWaitingForAConnectionHearsSoAtOnce() async throws {
        var settings = try PostgresSettings.parse(try LocalPostgres.shared().createDatabase())
        settings.poolSize = 1
        let store = try await PostgresStore(settings: settings, migrate: true)
        defer { store.close() }
        let holding = Mutex(false)
        let busy = Task {
            try await store.read {
                holding.withLock { $0 = true }
                _ = try await $0.run("SELECT pg_sleep(1.5)")
            }
        }
        // The pool's one connection is taken before the second call asks for it.
        let taken = ContinuousClock.now + .seconds(10)
        while !holding.withLock({ $0 }) && ContinuousClock.now < taken { try await Task.sleep(for: .milliseconds(10)) }
        let waiting = Task { try await store.read { _ = try await $0.run("SELECT 1") } }
        try await Task.sleep(for: .milliseconds(200))
        let cancelled = ContinuousClock.now
        waiting.cancel()
        do {
            try await waiting.value
            XCTFail("a cancelled call went on")
        } catch {
            XCTAssertTrue(error is CancellationError, "\(error)")
        }
        XCTAssertLessThan(ContinuousClock.now - cancelled, .milliseconds(500), "answered at once")
        XCTAssertNil(store.outage.since, "a cancellation is not an outage")
        try await busy.value
        let started = ContinuousClock.now
        try await store.read { _ = try await $0.run("SELECT 1") }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(1))
    }

    /// After a minute-long outage postgres-nio's pool waits many seconds between connection
    /// attempts (and refuses every lease in between): the store probes the server itself and
    /// starts a fresh pool once it answers, so writes resume within seconds of its return (9.6 s
    /// without, measured after 75 s down; 1.8 s with).
    func testWritesResumeWithinSecondsOfAServerBackFromALongOutage() async throws {
        let (server, store, key) = try await onItsOwnServer()
        defer { try? server.stop() }
        defer { store.close() }
        try server.stop()
        let stopped = Date()
        while Date().timeIntervalSince(stopped) < 65 {
            await refused(PostgresStoreTests.job(owner: key), by: store)
            try await Task.sleep(for: .milliseconds(200))
        }
        try server.start()
        let back = Date()
        let generation = PostgresStoreTests.job(owner: key)
        while true {
            if (try? await store.insert(generation, event: PostgresStoreTests.created(generation))) != nil { break }
            XCTAssertLessThan(Date().timeIntervalSince(back), 30, "the store never wrote again")
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTAssertLessThan(Date().timeIntervalSince(back), 5, "writes resume within seconds of the server's return")
        let stored = try await store.generation(id: generation.id)
        XCTAssertEqual(stored?.id, generation.id)
    }

    func testACancelledCallerStillHasItsWriteCommitted() async throws {
        let url = try LocalPostgres.shared().createDatabase()
        let store = try await PostgresStore(settings: try PostgresSettings.parse(url), migrate: true)
        let key = try await owner(store)
        var ids: [String] = []
        var tasks: [Task<Void, any Error>] = []
        for _ in 0..<50 {
            let generation = PostgresStoreTests.job(owner: key)
            ids.append(generation.id)
            tasks.append(Task { try await store.insert(generation, event: PostgresStoreTests.created(generation)) })
        }
        for task in tasks { task.cancel() }
        var written = 0
        for task in tasks where (try? await task.value) != nil { written += 1 }
        let listed = try await store.list(ownerKeyID: key.id, status: nil, after: nil, limit: 100)
        XCTAssertEqual(listed.count, written, "a write reported done is there")
        XCTAssertEqual(written, 50, "cancelling a caller does not cancel its write")
    }

    func testStoreURLsAreParsedWithClearErrors() throws {
        let settings = try PostgresSettings.parse("postgresql://app:p%40ss@db.internal:6543/gengate?sslmode=require")
        XCTAssertEqual(settings.host, "db.internal")
        XCTAssertEqual(settings.port, 6543)
        XCTAssertEqual(settings.user, "app")
        XCTAssertEqual(settings.password, "p@ss")
        XCTAssertEqual(settings.database, "gengate")
        XCTAssertEqual(settings.tls, .require)
        XCTAssertEqual("\(settings)", "postgres://app@db.internal:6543/gengate")
        XCTAssertEqual(
            try PostgresSettings.parse("postgres://app@db/gengate", environment: ["PGPASSWORD": "env"]).password, "env")
        for bad in [
            "postgres://db/gengate", "postgres://app@db", "postgres://app@db/gengate?sslmode=maybe",
            "postgres://app@db/gengate?pool=3", "mysql://app@db/gengate",
        ] {
            XCTAssertThrowsError(try PostgresSettings.parse(bad), bad)
        }
    }
}
