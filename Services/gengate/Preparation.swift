import Foundation
import GenGateCore
import GenGateObjects
import GenGateRuntime
import GenGateStore
import Logging

/// What happens once, before any service starts: directories, migrations, the first admin key.
enum Preparation {
    /// Returns the store, migrated.
    @discardableResult
    static func prepare(config: GenGateConfig, services: [String] = Supervisor.allServices, logger: Logger)
        async throws -> any GenerationStore
    {
        try checkPortsAreFree(config, services: services)
        let files = FileManager.default
        try files.createDirectory(
            at: config.dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        // Prompts, outputs and key hashes live here: private, as PostgreSQL insists of its own.
        try files.setAttributes([.posixPermissions: 0o700], ofItemAtPath: config.dataDirectory.path)
        try files.createDirectory(
            at: config.runDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try files.createDirectory(
            atPath: BusTopology.socketDirectory(for: config), withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
        let store = try await config.openStore(migrate: true, logger: logger)
        if !services.isEmpty { try await checkObjectStorage(config, logger: logger) }
        try await bootstrapAdminKey(store: store, path: config.adminKeyPath, logger: logger)
        return store
    }

    /// With S3, checks the bucket before anything starts: refused credentials or a missing bucket
    /// stop `up` with what to fix; a service that does not answer is only warned of (work waits
    /// for it).
    static func checkObjectStorage(_ config: GenGateConfig, logger: Logger) async throws {
        guard let s3 = try config.objectStore() as? S3ObjectStore else { return }
        switch await s3.check() {
        case .ok:
            logger.info(
                "object storage: S3",
                metadata: ["endpoint": "\(s3.settings.endpoint)", "bucket": "\(s3.settings.bucket)"])
        case .refused(let problem):
            throw ConfigError(problem)
        case .unreachable(let problem):
            logger.warning("object storage is not answering; outputs wait for it", metadata: ["error": "\(problem)"])
        }
    }

    /// Fails at once, with the flag to change, when a port is taken; otherwise the service that
    /// cannot bind it would crash and be restarted forever.
    static func checkPortsAreFree(_ config: GenGateConfig, services: [String]) throws {
        for (host, port, flag, service) in [
            (config.http.host, config.http.port, "--http-port", "api-ingress"),
            (config.monitor.host, config.monitor.port, "--monitor-port", "monitor"),
        ] where services.contains(service) {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            // A name, not an address: let the service resolve it.
            guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { continue }
            var reuse: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            if bound != 0 {
                throw ConfigError(
                    "\(host):\(port) is already in use (errno \(errno)); choose another port with \(flag)")
            }
        }
    }

    /// On first start, when no key exists, creates an admin key and writes it to `admin.key`
    /// (mode 0600). The secret goes only to that file, never to the log.
    static func bootstrapAdminKey(store: any GenerationStore, path: URL, logger: Logger) async throws {
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
        let fd = open(path, O_RDWR | O_CREAT, 0o600)
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
