import Foundation
import GenGatePostgres
import GenGateStore
import Logging

extension GenGateConfig {
    /// The PostgreSQL store's settings, when `store.url` names one.
    public func postgresSettings(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> PostgresSettings? {
        guard let url = store.url, PostgresSettings.isPostgresURL(url) else { return nil }
        var settings = try PostgresSettings.parse(url, environment: environment)
        settings.poolSize = store.poolSize
        settings.busyTimeout = store.busyTimeoutSeconds
        settings.durable = store.durability == "full"
        return settings
    }

    /// The store, for logs (a PostgreSQL URL without its password).
    public var storeDescription: String {
        (try? postgresSettings())??.description ?? "sqlite:\(storePath)"
    }

    /// Opens the store this configuration names. Unless `migrate`, its schema must be current.
    public func openStore(migrate: Bool = false, logger: Logger? = nil) async throws -> any GenerationStore {
        if let settings = try postgresSettings() {
            return try await PostgresStore(settings: settings, migrate: migrate, logger: logger)
        }
        return try SQLiteStore(
            path: storePath, durability: store.durability == "full" ? .full : .normal,
            busyTimeout: store.busyTimeoutSeconds, migrate: migrate)
    }

    /// This configuration without the password of its PostgreSQL URL, and that password (for
    /// `PGPASSWORD`): what is written to files must not hold it.
    public func withoutStorePassword() -> (config: GenGateConfig, password: String?) {
        guard let url = store.url, PostgresSettings.isPostgresURL(url), var components = URLComponents(string: url),
            let password = components.password, !password.isEmpty
        else { return (self, nil) }
        components.password = nil
        var config = self
        config.store.url = components.string
        return (config, password)
    }
}
