import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A private PostgreSQL server for tests and benchmarks: its own cluster (`initdb`) in a
/// temporary directory, on a free port of 127.0.0.1, password authentication over TCP as a
/// real deployment has it, and each caller's database made fresh. Uses Debian's `postgresql`
/// package (`/usr/lib/postgresql/<version>/bin`); as root, the server runs as the `postgres`
/// user (PostgreSQL refuses root). Stopped when the process exits.
public final class LocalPostgres: @unchecked Sendable {
    public static let user = "gengate"
    public static let password = "local-test-secret"

    public let port: Int
    public let directory: URL
    private let bin: URL
    private let lock = NSLock()
    private var databases = 0

    /// One server per process, started on first use.
    public static func shared() throws -> LocalPostgres {
        sharedLock.lock()
        defer { sharedLock.unlock() }
        if let server = sharedServer { return server }
        let server = try LocalPostgres()
        sharedServer = server
        return server
    }

    nonisolated(unsafe) private static var sharedServer: LocalPostgres?
    private static let sharedLock = NSLock()
    nonisolated(unsafe) private static var running: [String] = []
    private static let runningLock = NSLock()

    /// Makes a cluster and starts it.
    public init() throws {
        guard let bin = Self.binDirectory() else {
            throw LocalPostgresError(
                "PostgreSQL's server programs are not installed (Debian: apt-get install postgresql; scripts/install-deps does)"
            )
        }
        self.bin = bin
        directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("gg-pg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        port = try FreePorts.consecutive(1)
        let passwordFile = directory.appendingPathComponent("pwfile")
        try Data(Self.password.utf8).write(to: passwordFile)
        if getuid() == 0 { try Self.shell(["chown", "-R", "postgres", directory.path]) }
        try runAsServerUser([
            bin.appendingPathComponent("initdb").path, "-D", dataDirectory, "-U", Self.user, "-E", "UTF8",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile", passwordFile.path, "--no-sync",
            // A locale as production databases have (text sorts by language, not by byte).
            "--locale-provider=icu", "--icu-locale=en", "--locale=C.UTF-8",
        ])
        try start()
        Self.runningLock.lock()
        Self.running.append(directory.path)
        if Self.running.count == 1 { atexit { LocalPostgres.stopAll() } }
        Self.runningLock.unlock()
    }

    var dataDirectory: String { directory.appendingPathComponent("data").path }

    /// Starts the server (again, after `stop`), on the same port.
    public func start() throws {
        // Not through a pipe: the server would hold it open, and reading it would never end.
        try runAsServerUser(
            capture: false,
            [
                bin.appendingPathComponent("pg_ctl").path, "-D", dataDirectory, "-w", "-t", "60", "-l",
                directory.appendingPathComponent("server.log").path, "-o",
                "-p \(port) -k \(directory.path) -c listen_addresses=127.0.0.1 -c max_connections=500", "start",
            ])
    }

    /// Stops the server (`fast`: open connections are closed at once).
    public func stop() throws {
        try runAsServerUser([
            bin.appendingPathComponent("pg_ctl").path, "-D", dataDirectory, "-w", "-m", "fast", "stop",
        ])
    }

    /// A new, empty database; its URL (`postgres://gengate:…@127.0.0.1:PORT/NAME`).
    public func createDatabase() throws -> String {
        lock.lock()
        databases += 1
        let name = "gg_\(getpid())_\(databases)"
        lock.unlock()
        try runAsServerUser([
            bin.appendingPathComponent("createdb").path, "-h", directory.path, "-p", "\(port)", "-U", Self.user, name,
        ])
        return url(database: name)
    }

    public func url(database: String) -> String {
        "postgres://\(Self.user):\(Self.password)@127.0.0.1:\(port)/\(database)?sslmode=disable"
    }

    /// Runs `sql` in `database` with psql; its output.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") throws -> String {
        try runAsServerUser([
            bin.appendingPathComponent("psql").path, "-h", directory.path, "-p", "\(port)", "-U", Self.user, "-d",
            database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql,
        ])
    }

    private static func stopAll() {
        for path in running {
            guard let bin = binDirectory() else { return }
            let command = [bin.appendingPathComponent("pg_ctl").path, "-D", path + "/data", "-m", "immediate", "stop"]
            _ = try? shell(getuid() == 0 ? ["runuser", "-u", "postgres", "--"] + command : command)
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    @discardableResult
    private func runAsServerUser(capture: Bool = true, _ command: [String]) throws -> String {
        try Self.shell(getuid() == 0 ? ["runuser", "-u", "postgres", "--"] + command : command, capture: capture)
    }

    /// Runs `command` (found on PATH) and waits for it; its output (stdout and stderr, through a
    /// file: a server it starts would hold a pipe open). Spawned directly, not with Foundation's
    /// `Process`, whose exit monitoring left the child unreaped here.
    @discardableResult
    private static func shell(_ command: [String], capture: Bool = true) throws -> String {
        let outputPath = NSTemporaryDirectory() + "gg-pg-output-\(UUID().uuidString)"
        defer { unlink(outputPath) }
        var actions: posix_spawn_file_actions_t = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(
            &actions, 1, capture ? outputPath : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let arguments = ["/usr/bin/env"] + command
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, "/usr/bin/env", &actions, nil, &argv, environ)
        guard spawned == 0 else { throw LocalPostgresError("cannot run \(command[0]): errno \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text =
            capture ? ((try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "") : ""
        // Exited normally with status 0.
        guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
            throw LocalPostgresError("\(command.joined(separator: " ")) failed (status \(status)): \(text)")
        }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private static func binDirectory() -> URL? {
        let root = URL(fileURLWithPath: "/usr/lib/postgresql")
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return versions.compactMap(Int.init).sorted().reversed().map {
            root.appendingPathComponent("\($0)/bin")
        }.first { FileManager.default.isExecutableFile(atPath: $0.appendingPathComponent("initdb").path) }
    }
}

public struct LocalPostgresError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
