import Foundation
import GRDB
import GenGateCore

/// Uploads and input objects in SQLite (see `ImageStore`).
extension SQLiteStore {
    public func insertUpload(_ upload: Upload) async throws {
        let info = try StoredJSON.text(upload.info)
        try await batcher.write { db in
            try db.run(
                sql: """
                    INSERT INTO uploads (id, owner_key_id, object_key, info, created_at, expires_at)
                    VALUES (?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    upload.id, upload.ownerKeyID, upload.objectKey, info, upload.createdAt.timeIntervalSince1970,
                    upload.expiresAt.timeIntervalSince1970,
                ])
        }
    }

    public func upload(id: String, now: Date) async throws -> Upload? {
        try await pool.read { db in
            guard
                let row = try Row.fetchOne(
                    db, cached: "SELECT * FROM uploads WHERE id = ? AND expires_at > ?",
                    arguments: [id, now.timeIntervalSince1970])
            else { return nil }
            return Upload(
                id: row["id"], ownerKeyID: row["owner_key_id"], objectKey: row["object_key"],
                info: try StoredJSON.decode(ImageInfo.self, row["info"]),
                createdAt: Date(timeIntervalSince1970: row["created_at"]),
                expiresAt: Date(timeIntervalSince1970: row["expires_at"]))
        }
    }

    public func recordInputObject(key: String, expiresAt: Date) async throws {
        try await batcher.write { db in
            try db.run(
                sql: "INSERT INTO input_objects (object_key, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                arguments: [key, expiresAt.timeIntervalSince1970])
        }
    }

    public func expiredInputObjects(now: Date, limit: Int) async throws -> [String] {
        try await pool.read { db in
            try String.fetchAll(
                db,
                cached: """
                    SELECT object_key FROM input_objects INDEXED BY input_objects_expiry
                    WHERE expires_at <= ? ORDER BY expires_at LIMIT ?
                    """, arguments: [now.timeIntervalSince1970, limit])
        }
    }

    public func jobsWaiting(for parent: String, limit: Int) async throws -> [String] {
        try await pool.read { db in
            try String.fetchAll(
                db,
                cached: """
                    SELECT id FROM generations INDEXED BY generations_waiting
                    WHERE waits_for = ? AND status = 'waiting' LIMIT ?
                    """, arguments: [parent, limit])
        }
    }

    public func waitingOnEndedJobs(limit: Int) async throws -> [String] {
        try await pool.read { db in
            try String.fetchAll(
                db,
                cached: """
                    SELECT c.id FROM generations c INDEXED BY generations_waiting
                    LEFT JOIN generations p ON p.id = c.waits_for
                    WHERE c.status = 'waiting' AND (p.id IS NULL OR p.status IN \(SQLiteSchema.terminalList))
                    LIMIT ?
                    """, arguments: [limit])
        }
    }

    public func forgetInputObject(key: String) async throws {
        try await batcher.write { db in
            try db.run(sql: "DELETE FROM uploads WHERE object_key = ?", arguments: [key])
            try db.run(sql: "DELETE FROM input_objects WHERE object_key = ?", arguments: [key])
        }
    }
}
