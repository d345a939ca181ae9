import Foundation
import XCTest
import GenGateCore
import GRDB
@testable import GenGateStore

/// What is SQLite's own, beyond the contract (which runs against SQLite by default).
final class SQLiteStoreTests: XCTestCase {
    var directory: URL!
    var store: SQLiteStore!

    var path: String { directory.appendingPathComponent("store.sqlite").path }

    override func setUp() async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("gg-sqlite-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        store = try SQLiteStore(path: path, migrate: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: directory)
    }

    /// A store locked by another process past the busy timeout is "unavailable" (the API answers
    /// 503 and Retry-After); a refused write or an I/O error is not.
    func testALockedStoreIsUnavailableAndARefusedWriteIsNot() async throws {
        let impatient = try SQLiteStore(path: path, busyTimeout: 0.2)
        let locker = try DatabaseQueue(path: path)
        let locked = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let holder = Thread {
            try? locker.inDatabase { db in
                try db.execute(sql: "BEGIN EXCLUSIVE")
                locked.signal()
                release.wait()
                try db.execute(sql: "ROLLBACK")
            }
        }
        holder.start()
        locked.wait()
        do {
            _ = try await impatient.createAPIKey(name: "blocked", isAdmin: false)
            XCTFail("the write should have timed out")
        } catch {
            XCTAssertTrue(StoreError.isUnavailable(error), "\(error)")
        }
        release.signal()
        XCTAssertFalse(StoreError.isUnavailable(DatabaseError(resultCode: .SQLITE_CONSTRAINT)))
        XCTAssertFalse(
            StoreError.isUnavailable(DatabaseError(resultCode: .SQLITE_IOERR)),
            "an I/O error in a commit leaves its outcome unknown: not a plain try-again")
        XCTAssertFalse(StoreError.isUnavailable(CancellationError()))
    }

    func testAPIKeysAreStoredHashedInTheFile() async throws {
        let (key, secret) = try await store.createAPIKey(name: "app", isAdmin: true)
        XCTAssertTrue(secret.hasPrefix("gg_"))
        let found = try await XCTUnwrapAsync(try await store.apiKey(secret: secret))
        XCTAssertEqual(found.id, key.id)
        XCTAssertEqual(found.name, "app")
        XCTAssertTrue(found.isAdmin)
        XCTAssertEqual(found.createdAt.timeIntervalSince1970, key.createdAt.timeIntervalSince1970, accuracy: 0.001)
        let unknown = try await store.apiKey(secret: "gg_nope")
        XCTAssertNil(unknown)
        store = nil  // close, so the file holds everything
        var bytes = Data()
        for suffix in ["", "-wal"] {
            bytes += (try? Data(contentsOf: URL(fileURLWithPath: path + suffix))) ?? Data()
        }
        XCTAssertNil(bytes.range(of: Data(secret.utf8)), "the secret must never be stored in clear")
    }

    func testServicesRefuseAnUnmigratedStore() throws {
        let fresh = directory.appendingPathComponent("fresh.sqlite").path
        XCTAssertThrowsError(try SQLiteStore(path: fresh)) { error in
            guard case .schemaMismatch(let detail) = error as? StoreError else { return XCTFail("\(error)") }
            XCTAssertTrue(detail.contains("gengate migrate"), detail)
        }
    }

}
