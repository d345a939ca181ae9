import Foundation
import GenGateCore
import GenGateStore
import PostgresNIO

/// Uploads and input objects in PostgreSQL (see `ImageStore`).
extension PostgresStore {
    public func insertUpload(_ upload: Upload) async throws {
        let info = try StoredJSON.text(upload.info)
        _ = try await write { db in
            try await db.run(
                """
                INSERT INTO uploads (id, owner_key_id, object_key, info, created_at, expires_at)
                VALUES ($1, $2, $3, $4, $5, $6)
                """,
                [
                    upload.id, upload.ownerKeyID, upload.objectKey, info, upload.createdAt.timeIntervalSince1970,
                    upload.expiresAt.timeIntervalSince1970,
                ])
        }
    }

    public func upload(id: String, now: Date) async throws -> Upload? {
        try await read { db in
            guard
                let row = try await db.row(
                    "SELECT * FROM uploads WHERE id = $1 AND expires_at > $2", [id, now.timeIntervalSince1970])
            else { return nil }
            return Upload(
                id: try row.get("id"), ownerKeyID: try row.get("owner_key_id"), objectKey: try row.get("object_key"),
                info: try StoredJSON.decode(ImageInfo.self, try row.get("info")),
                createdAt: Date(timeIntervalSince1970: try row.get("created_at")),
                expiresAt: Date(timeIntervalSince1970: try row.get("expires_at")))
        }
    }

    public func recordInputObject(key: String, expiresAt: Date) async throws {
        _ = try await write { db in
            try await db.run(
                "INSERT INTO input_objects (object_key, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                [key, expiresAt.timeIntervalSince1970])
        }
    }

    public func expiredInputObjects(now: Date, limit: Int) async throws -> [String] {
        try await read { db in
            try await db.rows(
                "SELECT object_key FROM input_objects WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2",
                [now.timeIntervalSince1970, limit]
            ).map { try $0.get("object_key", as: String.self) }
        }
    }

    public func jobsWaiting(for parent: String, limit: Int) async throws -> [String] {
        try await read { db in
            try await db.rows(
                "SELECT id FROM generations WHERE waits_for = $1 AND status = 'waiting' LIMIT $2", [parent, limit]
            ).map { try $0.get("id", as: String.self) }
        }
    }

    public func waitingOnEndedJobs(limit: Int) async throws -> [String] {
        try await read { db in
            try await db.rows(
                """
                SELECT c.id FROM generations c LEFT JOIN generations p ON p.id = c.waits_for
                WHERE c.status = 'waiting' AND (p.id IS NULL OR p.status IN \(Self.terminalList))
                LIMIT $1
                """, [limit]
            ).map { try $0.get("id", as: String.self) }
        }
    }

    public func forgetInputObject(key: String) async throws {
        _ = try await write { db in
            try await db.run("DELETE FROM uploads WHERE object_key = $1", [key])
            try await db.run("DELETE FROM input_objects WHERE object_key = $1", [key])
        }
    }
}
