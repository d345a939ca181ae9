import Foundation
import GenGateCore
import GenGateRuntime
import GenGateStore
import Logging

/// What happens once, before any service starts: directories, migrations, the first admin key.
enum Preparation {
    static func prepare(config: GenGateConfig, logger: Logger) async throws {
        let files = FileManager.default
        try files.createDirectory(at: config.dataDirectory, withIntermediateDirectories: true)
        try files.createDirectory(at: config.runDirectory, withIntermediateDirectories: true)
        try files.createDirectory(atPath: BusTopology.socketDirectory(for: config), withIntermediateDirectories: true,
                                  attributes: [.posixPermissions: 0o700])
        let store = try SQLiteStore(path: config.storePath, durability: config.store.durability == "full" ? .full : .normal,
                                    busyTimeout: config.store.busyTimeoutSeconds, migrate: true)
        try await bootstrapAdminKey(store: store, path: config.adminKeyPath, logger: logger)
    }

    /// On first start, when no key exists, creates an admin key and writes it to `admin.key`
    /// (mode 0600). The secret goes only to that file, never to the log.
    static func bootstrapAdminKey(store: SQLiteStore, path: URL, logger: Logger) async throws {
        guard try await store.apiKeyCount() == 0 else { return }
        let (key, secret) = try await store.createAPIKey(name: "admin", isAdmin: true)
        try writeSecret(secret + "\n", to: path)
        logger.notice("created the admin API key", metadata: ["key_id": "\(key.id)", "file": "\(path.path)"])
    }

    static func writeSecret(_ text: String, to url: URL) throws {
        unlink(url.path)
        let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw ConfigError("cannot create \(url.path): errno \(errno)") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else {
            throw ConfigError("cannot write \(url.path): errno \(errno)")
        }
    }

    /// The configuration as resolved here (file, environment, flags), for the children, so that
    /// every service sees exactly what the supervisor saw.
    static func writeResolvedConfig(_ config: GenGateConfig) throws -> String {
        let url = config.runDirectory.appendingPathComponent("config.json")
        try ConfigLoader.encoded(config).write(to: url, options: .atomic)
        return url.path
    }
}

/// One `gengate up` per data directory: a second one would fight the first over sockets and ports.
struct DataDirectoryLock {
    let fd: Int32

    static func acquire(config: GenGateConfig) throws -> DataDirectoryLock {
        try FileManager.default.createDirectory(at: config.dataDirectory, withIntermediateDirectories: true)
        let path = config.dataDirectory.appendingPathComponent("gengate.lock").path
        let fd = open(path, O_RDWR | O_CREAT, 0o644)
        guard fd >= 0 else { throw ConfigError("cannot open \(path): errno \(errno)") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw ConfigError("another gengate is already running with data dir \(config.dataDirectory.path)")
        }
        return DataDirectoryLock(fd: fd)
    }

    func release() {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
