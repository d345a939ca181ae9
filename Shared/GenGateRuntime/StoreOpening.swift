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
}
