import GRDB

/// The schema of the SQLite store, as named migrations registered in order. Never edit a
/// migration that has shipped; add a new one.
enum SQLiteSchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-foundation") { db in
            try db.execute(sql: """
                CREATE TABLE api_keys (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    secret_hash TEXT NOT NULL UNIQUE,
                    is_admin INTEGER NOT NULL DEFAULT 0,
                    created_at REAL NOT NULL,
                    revoked_at REAL
                );

                CREATE TABLE generations (
                    id TEXT PRIMARY KEY,
                    owner_key_id TEXT NOT NULL REFERENCES api_keys(id),
                    model TEXT NOT NULL,
                    provider TEXT NOT NULL,
                    request TEXT NOT NULL,
                    status TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    progress INTEGER NOT NULL DEFAULT 0,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    error TEXT,
                    provider_task_id TEXT,
                    lease_owner TEXT,
                    lease_expires_at REAL,
                    next_action_at REAL,
                    deadline_at REAL NOT NULL,
                    created_at REAL NOT NULL,
                    updated_at REAL NOT NULL,
                    dispatching_at REAL,
                    running_at REAL,
                    uploading_at REAL,
                    retry_wait_at REAL,
                    completed_at REAL,
                    failed_at REAL,
                    cancelled_at REAL
                );
                CREATE INDEX generations_owner ON generations(owner_key_id, id);
                CREATE INDEX generations_owner_status ON generations(owner_key_id, status, id);
                CREATE INDEX generations_active ON generations(status, next_action_at)
                    WHERE status NOT IN ('completed', 'failed', 'cancelled');

                CREATE TABLE attempts (
                    generation_id TEXT NOT NULL REFERENCES generations(id),
                    number INTEGER NOT NULL,
                    provider TEXT NOT NULL,
                    client_reference TEXT NOT NULL,
                    provider_task_id TEXT,
                    output_indexes TEXT NOT NULL,
                    state TEXT NOT NULL,
                    error TEXT,
                    created_at REAL NOT NULL,
                    finished_at REAL,
                    PRIMARY KEY (generation_id, number)
                );

                CREATE TABLE outputs (
                    generation_id TEXT NOT NULL REFERENCES generations(id),
                    idx INTEGER NOT NULL,
                    source TEXT NOT NULL,
                    content_type TEXT NOT NULL,
                    object_key TEXT,
                    bytes INTEGER,
                    sha256 TEXT,
                    stored_at REAL,
                    PRIMARY KEY (generation_id, idx)
                );

                CREATE TABLE events (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    generation_id TEXT,
                    type TEXT NOT NULL,
                    at REAL NOT NULL,
                    payload TEXT NOT NULL
                );
                CREATE INDEX events_generation ON events(generation_id, seq);
                """)
        }
        return migrator
    }
}
