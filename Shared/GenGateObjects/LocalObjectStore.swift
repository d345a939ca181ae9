import Foundation
import GenGateCore

/// Objects as files under one directory. A put writes a temporary file, syncs it, and renames it
/// into place, so readers see the old object or the new one, never a part.
public struct LocalObjectStore: ObjectStore {
    public let root: URL

    public init(root: URL) throws {
        self.root = root
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    public func put(key: String, data: Data, contentType: String) async throws -> StoredObject {
        let url = try path(for: key)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        do {
            guard FileManager.default.createFile(atPath: temporary.path, contents: nil) else {
                throw GenGateError(.uploadFailed, "cannot create \(temporary.path)")
            }
            let handle = try FileHandle(forWritingTo: temporary)
            try handle.write(contentsOf: data)
            try handle.synchronize()
            try handle.close()
            if rename(temporary.path, url.path) != 0 {
                throw GenGateError(.uploadFailed, "cannot move object into place at \(url.path): errno \(errno)")
            }
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            if let error = error as? GenGateError { throw error }
            throw GenGateError(.uploadFailed, "writing \(key) failed: \(error)")
        }
        return StoredObject(key: key, bytes: data.count, sha256: Digest.sha256Hex(data), contentType: contentType)
    }

    public func get(key: String) async throws -> Data? {
        let url = try path(for: key)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        return try Data(contentsOf: url)
    }

    /// The file of `key`; keys that would leave the root (`..`, absolute) are refused.
    func path(for key: String) throws -> URL {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard !key.isEmpty, !key.hasPrefix("/"), !parts.contains(where: { $0 == ".." || $0 == "." || $0.isEmpty }) else {
            throw GenGateError(.invalidRequest, "invalid object key \(key)")
        }
        return root.appendingPathComponent(key)
    }
}
