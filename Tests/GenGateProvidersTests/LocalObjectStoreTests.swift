import Foundation
import XCTest
import GenGateCore
@testable import GenGateObjects

final class LocalObjectStoreTests: XCTestCase {
    func testPutThenGetWithChecksum() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("gg-objects-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try LocalObjectStore(root: root)
        let data = Data("hello".utf8)
        let stored = try await store.put(key: "outputs/2026/11/22/gen_1/0.txt", data: data, contentType: "text/plain")
        XCTAssertEqual(stored.bytes, 5)
        XCTAssertEqual(stored.sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        let read = try await store.get(key: "outputs/2026/11/22/gen_1/0.txt")
        XCTAssertEqual(read, data)
        let missing = try await store.get(key: "outputs/none")
        XCTAssertNil(missing)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("outputs/2026/11/22/gen_1").path)
        XCTAssertEqual(leftovers, ["0.txt"], "no temporary files stay behind")
    }

    func testKeysThatLeaveTheRootAreRefused() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("gg-objects-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try LocalObjectStore(root: root)
        for key in ["../escape", "/etc/passwd", "a//b", "a/./b", ""] {
            do {
                _ = try await store.put(key: key, data: Data(), contentType: "text/plain")
                XCTFail("\(key) must be refused")
            } catch let error as GenGateError {
                XCTAssertEqual(error.code, .invalidRequest)
            }
        }
    }

    func testObjectKeysArePredictable() {
        let created = Date(timeIntervalSince1970: 1_795_000_000)  // 2026-11-18 UTC
        XCTAssertEqual(ObjectKey.forOutput(prefix: "outputs/", generationID: "gen_1", createdAt: created, index: 3, contentType: "image/png"),
                       "outputs/2026/11/18/gen_1/3.png")
        XCTAssertEqual(ObjectKey.forOutput(prefix: "", generationID: "gen_1", createdAt: created, index: 0,
                                           contentType: "text/plain; charset=utf-8"), "2026/11/18/gen_1/0.txt")
        XCTAssertEqual(ObjectKey.fileExtension(for: "application/x-unknown"), "bin")
    }
}
