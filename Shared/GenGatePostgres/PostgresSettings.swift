import Foundation
import NIOSSL
import PostgresNIO

/// Where the PostgreSQL store is, from a `postgres://user:password@host:port/database` URL
/// (`postgresql://` too; `?sslmode=disable|prefer|require`, default `prefer`, as libpq's: TLS
/// when the server offers it, its certificate not verified).
/// The password may come from `PGPASSWORD` instead of the URL. `description` never shows it.
public struct PostgresSettings: Sendable, Equatable, CustomStringConvertible {
    public enum TLSMode: String, Sendable { case disable, prefer, require }

    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var tls: TLSMode
    /// Connections this process opens at most.
    public var poolSize: Int
    /// How long a statement may wait for a connection or a lock before the store counts as
    /// unavailable (the write did not happen).
    public var busyTimeout: TimeInterval
    /// Commits wait for the server's disk (`synchronous_commit = on`); false: a server crash may
    /// lose the last moment's commits (never corrupts), and commits are faster.
    public var durable = true

    public init(
        host: String, port: Int = 5432, user: String, password: String? = nil, database: String,
        tls: TLSMode = .prefer, poolSize: Int = 8, busyTimeout: TimeInterval = 10
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.tls = tls
        self.poolSize = poolSize
        self.busyTimeout = busyTimeout
    }

    /// Whether `url` names a PostgreSQL store at all.
    public static func isPostgresURL(_ url: String) -> Bool {
        url.hasPrefix("postgres://") || url.hasPrefix("postgresql://")
    }

    /// Parses `url`; the error says what is wrong without quoting the password.
    public static func parse(
        _ url: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> PostgresSettings {
        guard isPostgresURL(url), let components = URLComponents(string: url) else {
            throw PostgresSettingsError("a PostgreSQL store URL looks like postgres://user:password@host:5432/database")
        }
        guard let host = components.host, !host.isEmpty else {
            throw PostgresSettingsError("the PostgreSQL store URL has no host")
        }
        guard let user = components.user?.removingPercentEncoding, !user.isEmpty else {
            throw PostgresSettingsError("the PostgreSQL store URL has no user (postgres://USER@host/database)")
        }
        let database = String(components.path.drop(while: { $0 == "/" })).removingPercentEncoding ?? ""
        guard !database.isEmpty, !database.contains("/") else {
            throw PostgresSettingsError("the PostgreSQL store URL names no database (postgres://user@host/DATABASE)")
        }
        let port = components.port ?? 5432
        guard (1...65_535).contains(port) else { throw PostgresSettingsError("the PostgreSQL port must be 1...65535") }
        var settings = PostgresSettings(
            host: host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host, port: port, user: user,
            password: components.password?.removingPercentEncoding ?? environment["PGPASSWORD"],
            database: database)
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let mode = TLSMode(rawValue: item.value ?? "") else {
                    throw PostgresSettingsError("sslmode must be disable, prefer or require")
                }
                settings.tls = mode
            default:
                throw PostgresSettingsError(
                    "the PostgreSQL store URL has an unknown parameter \(item.name) (only sslmode is understood)")
            }
        }
        return settings
    }

    /// The URL without its password.
    public var description: String {
        "postgres://\(user)@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)"
    }

    /// Connects once, outside the pool, and closes: the pool retries a refused login quietly
    /// for ever, so a wrong password or database name is found here and said plainly.
    func probe(timeout: TimeInterval) async throws {
        let tlsMode: PostgresConnection.Configuration.TLS
        switch tls {
        case .disable: tlsMode = .disable
        case .prefer: tlsMode = .prefer(try NIOSSLContext(configuration: Self.unverified))
        case .require: tlsMode = .require(try NIOSSLContext(configuration: Self.unverified))
        }
        var configuration = PostgresConnection.Configuration(
            host: host, port: port, username: user, password: password, database: database, tls: tlsMode)
        configuration.options.connectTimeout = .seconds(Int64(max(1, timeout.rounded(.up))))
        let connection = try await PostgresConnection.connect(
            configuration: configuration, id: 0, logger: PostgresConnection.quiet)
        try await connection.close()
    }

    /// TLS as libpq's `prefer` and `require` have it: encrypted, the certificate not checked
    /// (managed databases and Debian's own server use certificates of private authorities).
    static var unverified: TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none
        return configuration
    }

    func clientConfiguration() -> PostgresClient.Configuration {
        let tlsMode: PostgresClient.Configuration.TLS
        switch tls {
        case .disable: tlsMode = .disable
        case .prefer: tlsMode = .prefer(Self.unverified)
        case .require: tlsMode = .require(Self.unverified)
        }
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: user, password: password, database: database, tls: tlsMode)
        configuration.options.maximumConnections = poolSize
        configuration.options.minimumConnections = 0
        configuration.options.connectTimeout = .seconds(Int64(max(1, busyTimeout.rounded(.up))))
        let milliseconds = Int(busyTimeout * 1000)
        configuration.options.additionalStartupParameters = [
            // A lock waited for longer than this (another host's writer) fails the write
            // cleanly: nothing written, the store counts as unavailable, the caller retries.
            ("lock_timeout", "\(milliseconds)"),
            // A transaction left open by a process that hangs does not hold the writer lock.
            ("idle_in_transaction_session_timeout", "\(max(30_000, milliseconds * 3))"),
            // No statement runs longer than this: a store statement takes milliseconds.
            ("statement_timeout", "\(max(30_000, milliseconds * 3))"),
            ("synchronous_commit", durable ? "on" : "off"),
            ("application_name", "gengate"),
            ("TimeZone", "UTC"),
        ]
        return configuration
    }
}

/// A PostgreSQL store URL that cannot be used.
public struct PostgresSettingsError: Error, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
