import Foundation
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// A value bound to a statement's `$n` parameter. Written here because PostgresNIO's bindings
/// take one concrete type at a time, and the store builds argument lists of mixed, optional
/// values; a nil is sent as an untyped NULL, whose type the statement's context decides.
protocol SQLValue: Sendable {
    func bind(into binds: inout PostgresBindings)
}

extension String: SQLValue {
    func bind(into binds: inout PostgresBindings) { binds.append(self) }
}

extension Int: SQLValue {
    func bind(into binds: inout PostgresBindings) { binds.append(self) }
}

extension Int64: SQLValue {
    func bind(into binds: inout PostgresBindings) { binds.append(self) }
}

extension Double: SQLValue {
    func bind(into binds: inout PostgresBindings) { binds.append(self) }
}

extension Bool: SQLValue {
    func bind(into binds: inout PostgresBindings) { binds.append(self) }
}

extension Data: SQLValue {
    func bind(into binds: inout PostgresBindings) { binds.append(ByteBuffer(bytes: self)) }
}

extension Array: SQLValue where Element == String {
    func bind(into binds: inout PostgresBindings) { binds.append(self) }
}

extension Optional: SQLValue where Wrapped: SQLValue {
    func bind(into binds: inout PostgresBindings) {
        if let self { self.bind(into: &binds) } else { binds.appendNull() }
    }
}

/// What one statement returned: its rows, and how many rows it changed.
struct SQLResult {
    var rows: [PostgresRandomAccessRow]
    var changed: Int
    var command: String
}

extension PostgresConnection {
    static let quiet = Logger(label: "gengate.postgres", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Runs one statement with `$1…$n` bound to `values`.
    @discardableResult
    func run(_ sql: String, _ values: [any SQLValue] = []) async throws -> SQLResult {
        var binds = PostgresBindings(capacity: values.count)
        for value in values { value.bind(into: &binds) }
        let future: EventLoopFuture<PostgresQueryResult> = query(
            PostgresQuery(unsafeSQL: sql, binds: binds), logger: Self.quiet)
        let result = try await future.get()
        return SQLResult(
            rows: result.rows.map { $0.makeRandomAccess() }, changed: result.metadata.rows ?? 0,
            command: result.metadata.command)
    }

    func rows(_ sql: String, _ values: [any SQLValue] = []) async throws -> [PostgresRandomAccessRow] {
        try await run(sql, values).rows
    }

    func row(_ sql: String, _ values: [any SQLValue] = []) async throws -> PostgresRandomAccessRow? {
        try await run(sql, values).rows.first
    }

    /// How many rows the statement changed.
    func changes(_ sql: String, _ values: [any SQLValue] = []) async throws -> Int {
        try await run(sql, values).changed
    }
}

extension PostgresRandomAccessRow {
    /// The value of `column`, decoded as the caller's type.
    func get<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws -> T {
        try self[column].decode(T.self)
    }

    func date(_ column: String) throws -> Date? {
        try get(column, as: Double?.self).map(Date.init(timeIntervalSince1970:))
    }
}
