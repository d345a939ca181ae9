import Crypto
import Foundation
import GenGateCore
import NIOPosix
import Synchronization

/// Objects as files under one directory. A put writes (or takes) a scratch file in `.incoming`,
/// syncs it, renames it into place and syncs the directory, so readers see the old object or the
/// new one, never a part, and an object the store was told is stored survives a power cut (the
/// rename, and every directory on the way to it, are synced before `put` returns). All file
/// work runs on NIO's blocking-I/O thread pool, never on Swift's cooperative threads, and files
/// are hashed in 1 MiB chunks, so a 500 MB output costs a chunk of memory, not 500 MB.
public struct LocalObjectStore: ObjectStore {
    public let root: URL
    static let chunk = 1 << 20

    public init(root: URL) throws {
        self.root = root
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(
            at: root.appendingPathComponent(".incoming"), withIntermediateDirectories: true)
        Self.removeStaleScratch(in: root.appendingPathComponent(".incoming"))
    }

    /// The directory is there and this process may write in it.
    public func check() async -> ObjectStoreCheck {
        let incoming = root.appendingPathComponent(".incoming").path
        guard access(incoming, W_OK | X_OK) == 0 else {
            return .refused("cannot write in \(incoming): \(String(cString: strerror(errno)))")
        }
        return .ok
    }

    /// Scratch files a killed process left behind. Only old ones: another process's download
    /// may be under way in the same directory.
    static func removeStaleScratch(in directory: URL, olderThan age: TimeInterval = 3_600) {
        let files = FileManager.default
        let cutoff = Date().addingTimeInterval(-age)
        for name in (try? files.contentsOfDirectory(atPath: directory.path)) ?? [] {
            let url = directory.appendingPathComponent(name)
            if let modified = (try? files.attributesOfItem(atPath: url.path))?[.modificationDate] as? Date,
                modified < cutoff
            {
                try? files.removeItem(at: url)
            }
        }
    }

    public func put(key: String, data: Data, contentType: String) async throws -> StoredObject {
        let url = try path(for: key)
        let temporary = try scratchFile()
        return try await Self.blocking {
            do {
                // open(2) itself: FileManager.createFile writes an empty file atomically, through
                // one more temporary file and rename.
                let descriptor = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                guard descriptor >= 0 else {
                    let code = errno
                    throw GenGateError(.uploadFailed, "cannot create \(temporary.path): errno \(code)")
                }
                let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
                try handle.write(contentsOf: data)
                try handle.synchronize()
                try handle.close()
                try Self.makeDirectory(url.deletingLastPathComponent(), root: root)
                try Self.moveIntoPlace(temporary, url)
            } catch {
                try? FileManager.default.removeItem(at: temporary)
                throw Self.uploadFailed(key, error)
            }
            return StoredObject(key: key, bytes: data.count, sha256: Digest.sha256Hex(data), contentType: contentType)
        }
    }

    public func put(key: String, file: URL, contentType: String) async throws -> StoredObject {
        let url = try path(for: key)
        return try await Self.blocking {
            do {
                let handle = try FileHandle(forUpdating: file)
                var hasher = SHA256()
                var bytes = 0
                while let data = try handle.read(upToCount: Self.chunk), !data.isEmpty {
                    hasher.update(data: data)
                    bytes += data.count
                }
                try handle.synchronize()
                try handle.close()
                try Self.makeDirectory(url.deletingLastPathComponent(), root: root)
                try Self.moveIntoPlace(file, url)
                let sha256 = Digest.hex(hasher.finalize())
                return StoredObject(key: key, bytes: bytes, sha256: sha256, contentType: contentType)
            } catch {
                throw Self.uploadFailed(key, error)
            }
        }
    }

    public func get(key: String) async throws -> Data? {
        let url = try path(for: key)
        return try await Self.blocking {
            guard FileManager.default.fileExists(atPath: url.path) else { return nil }
            return try Data(contentsOf: url)
        }
    }

    public func localFile(key: String) async throws -> (path: String, size: Int)? {
        let url = try path(for: key)
        return try await Self.blocking {
            guard let size = (try? FileManager.default.attributesOfItem(atPath: url.path))?[.size] as? NSNumber else {
                return nil
            }
            return (url.path, size.intValue)
        }
    }

    public func exists(key: String) async throws -> Bool {
        let url = try path(for: key)
        return try await Self.blocking { FileManager.default.fileExists(atPath: url.path) }
    }

    public func delete(key: String) async throws {
        let url = try path(for: key)
        try await Self.blocking {
            guard unlink(url.path) == 0 || errno == ENOENT else {
                throw GenGateError(.uploadFailed, "cannot delete \(key): errno \(errno)")
            }
        }
    }

    public func scratchFile() throws -> URL {
        root.appendingPathComponent(".incoming/\(UUID().uuidString).part")
    }

    /// Served by api-ingress, to the job's owner or through its signed links.
    public func publicURL(key: String) -> String? { nil }
    public func temporaryURL(key: String, now: Date) -> String? { nil }

    /// The file of `key`; keys that would leave the root (`..`, absolute) are refused.
    func path(for key: String) throws -> URL {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard !key.isEmpty, !key.hasPrefix("/"), !key.hasPrefix("."),
            !parts.contains(where: { $0 == ".." || $0 == "." || $0.isEmpty })
        else {
            throw GenGateError(.invalidRequest, "invalid object key \(key)")
        }
        return root.appendingPathComponent(key)
    }

    /// Directories known to be on disk with every entry leading to them (this process made or
    /// synced them). Others are synced up to the root before an object is put in them, even when
    /// they exist: another put may have made one and not yet synced (or died before syncing) its
    /// parents.
    private static let durableDirectories = Mutex(Set<String>())

    /// Makes `directory` (under `root`) exist durably, syncing it and each directory above it up to
    /// `root` the first time this process puts something in it.
    static func makeDirectory(_ directory: URL, root: URL) throws {
        let directory = directory.standardizedFileURL
        if durableDirectories.withLock({ $0.contains(directory.path) }) { return }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let top = root.standardizedFileURL.deletingLastPathComponent().path
        var current = directory
        while current.path.count > top.count, current.path.hasPrefix(top) {
            try syncDirectory(current)
            current = current.deletingLastPathComponent().standardizedFileURL
        }
        durableDirectories.withLock { _ = $0.insert(directory.path) }
    }

    /// Renames `temporary` to `url` and syncs `url`'s directory, so the new name is on disk.
    static func moveIntoPlace(_ temporary: URL, _ url: URL) throws {
        if rename(temporary.path, url.path) != 0 {
            let code = errno
            throw GenGateError(.uploadFailed, "cannot move object into place at \(url.path): errno \(code)")
        }
        do {
            try syncDirectory(url.deletingLastPathComponent())
        } catch {
            // Not durable: the put failed, and its file goes back where the caller left it, for
            // a retry to find (a put that fails leaves its file).
            _ = rename(url.path, temporary.path)
            throw error
        }
    }

    /// fsync(2) of a directory: makes the entries created, renamed or removed in it durable.
    static func syncDirectory(_ directory: URL) throws {
        let descriptor = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else {
            let code = errno
            throw GenGateError(.uploadFailed, "cannot open directory \(directory.path) to sync it: errno \(code)")
        }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else {
            let code = errno
            throw GenGateError(.uploadFailed, "cannot sync directory \(directory.path): errno \(code)")
        }
    }

    static func uploadFailed(_ key: String, _ error: any Error) -> GenGateError {
        if let error = error as? GenGateError { return error }
        return GenGateError(.uploadFailed, "writing \(key) failed: \(error)")
    }

    /// Runs blocking file work on NIO's thread pool for blocking I/O.
    static func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(work)
    }
}
