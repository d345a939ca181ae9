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
        let leftovers = try FileManager.default.contentsOfDirectory(
            atPath: root.appendingPathComponent("outputs/2026/11/22/gen_1").path)
        XCTAssertEqual(leftovers, ["0.txt"], "no temporary files stay behind")
    }

    /// A 500 MB output moves into storage with flat memory: read, hashed and moved in chunks.
    func testAFiveHundredMegabyteFileIsStoredWithFlatMemory() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("gg-objects-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try LocalObjectStore(root: root)
        let scratch = try store.scratchFile()
        let size = 500 * 1_024 * 1_024
        XCTAssertTrue(FileManager.default.createFile(atPath: scratch.path, contents: nil))
        let handle = try FileHandle(forWritingTo: scratch)
        try handle.truncate(atOffset: UInt64(size))  // sparse: zeros, written without memory either
        try handle.close()
        let before = Self.residentMiB()
        let stored = try await store.put(key: "outputs/big/0.mp4", file: scratch, contentType: "video/mp4")
        let growth = Self.residentMiB() - before
        XCTAssertEqual(stored.bytes, size)
        // sha256 of 500 MiB of zeros, as `head -c 524288000 /dev/zero | sha256sum` says.
        XCTAssertEqual(stored.sha256, "a08a92258f621b55d08ad1e84c90c2ea6286fc6b6c9a4dfa7156afb16c190170")
        XCTAssertLessThan(growth, 64, "memory grew \(growth) MiB while storing 500 MB")
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch.path), "the scratch file is consumed")
        let file = try await store.localFile(key: "outputs/big/0.mp4")
        XCTAssertEqual(file?.size, size)
        print("stored 500 MB with \(growth) MiB of memory growth")
    }

    static func residentMiB() -> Double {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1_024
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
        XCTAssertEqual(
            ObjectKey.forOutput(
                prefix: "outputs/", generationID: "gen_1", createdAt: created, index: 3, contentType: "image/png"),
            "outputs/2026/11/18/gen_1-3.png")
        XCTAssertEqual(
            ObjectKey.forOutput(
                prefix: "", generationID: "gen_1", createdAt: created, index: 0,
                contentType: "text/plain; charset=utf-8"), "2026/11/18/gen_1-0.txt")
        XCTAssertEqual(ObjectKey.fileExtension(for: "application/x-unknown"), "bin")
    }
}
