import GRDB

/// The schema of the SQLite store, as named migrations registered in order. Never edit a
/// migration that has shipped; add a new one.
enum SQLiteSchema {
    /// Every status but the terminal ones. Partial indexes and the queries that use them repeat
    /// it word for word: SQLite uses a partial index only when the query states its condition.
    /// The terminal statuses, as SQL spells a list of them.
    static let terminalList = "('completed', 'failed', 'cancelled')"
    static let active = "status NOT IN \(terminalList)"

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-foundation") { db in
            try db.execute(
                sql: """
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
        migrator.registerMigration("v2-job-engine") { db in
            try db.execute(
                sql: """
                    ALTER TABLE generations ADD COLUMN n INTEGER NOT NULL DEFAULT 1;
                    UPDATE generations SET n = COALESCE(json_extract(request, '$.n'), 1);
                    ALTER TABLE generations ADD COLUMN checks INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE generations ADD COLUMN check_failures INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE generations ADD COLUMN handler_failures INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE attempts ADD COLUMN possible_double_charge INTEGER NOT NULL DEFAULT 0;

                    -- Due work and expired leases are found by index, never by a scan of every job.
                    CREATE INDEX generations_unleased_due ON generations(status, next_action_at)
                        WHERE lease_owner IS NULL AND \(active);
                    CREATE INDEX generations_leased ON generations(lease_expires_at) WHERE lease_owner IS NOT NULL;
                    CREATE INDEX generations_deadline ON generations(deadline_at) WHERE \(active);
                    CREATE INDEX attempts_open ON attempts(generation_id) WHERE state IN ('submitting', 'submitted');
                    CREATE INDEX attempts_double_charged ON attempts(provider) WHERE possible_double_charge = 1;
                    -- Old events expire by age (see `expire`).
                    CREATE INDEX events_at ON events(at);

                    -- Named leases held by one process at a time (the recovery sweep's).
                    CREATE TABLE leader_leases (
                        name TEXT PRIMARY KEY,
                        owner TEXT NOT NULL,
                        expires_at REAL NOT NULL
                    );

                    -- Idempotency-Key of submissions, per API key, remembered for a window.
                    CREATE TABLE idempotency_keys (
                        key_id TEXT NOT NULL,
                        key TEXT NOT NULL,
                        request_hash TEXT NOT NULL,
                        generation_id TEXT NOT NULL,
                        created_at REAL NOT NULL,
                        PRIMARY KEY (key_id, key)
                    );
                    CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);

                    -- What must never happen, refused by the store itself.
                    CREATE TRIGGER generations_terminal_is_final BEFORE UPDATE ON generations
                    WHEN OLD.status IN ('completed', 'failed', 'cancelled')
                    BEGIN
                        SELECT RAISE(ABORT, 'a completed, failed or cancelled generation never changes');
                    END;
                    CREATE TRIGGER attempts_never_go_back BEFORE UPDATE ON attempts
                    WHEN (OLD.state != 'submitting' AND NEW.state = 'submitting')
                      OR (OLD.provider_task_id IS NOT NULL AND NEW.provider_task_id IS NOT OLD.provider_task_id)
                      OR (OLD.state IN ('succeeded', 'failed', 'abandoned') AND NEW.state != OLD.state)
                    BEGIN
                        SELECT RAISE(ABORT, 'an attempt never goes back: its submission and outcome are final once recorded');
                    END;
                    CREATE TRIGGER outputs_within_n BEFORE INSERT ON outputs
                    WHEN NEW.idx < 0 OR NEW.idx >= (SELECT n FROM generations WHERE id = NEW.generation_id)
                    BEGIN
                        SELECT RAISE(ABORT, 'a generation never has more outputs than it asked for');
                    END;
                    """)
        }
        migrator.registerMigration("v3-instances") { db in
            try db.execute(
                sql: """
                    -- Service processes, when the store last heard their heartbeat, and after how long
                    -- without one each counts as gone: the sweep voids such a process's leases on
                    -- steps that are free to repeat at once (see releaseLeasesOfSilentInstances).
                    CREATE TABLE instances (
                        name TEXT PRIMARY KEY,
                        seen_at REAL NOT NULL,
                        silent_after REAL NOT NULL
                    );
                    """)
        }
        migrator.registerMigration("v4-provider-limits") { db in
            try db.execute(
                sql: """
                    -- Each provider's current (adaptive) limits, shared by every process: the
                    -- concurrency limit, the submission rate and its token bucket (see ProviderLimits).
                    CREATE TABLE provider_limits (
                        provider TEXT PRIMARY KEY,
                        concurrency REAL,
                        rate REAL,
                        tokens REAL NOT NULL,
                        refilled_at REAL NOT NULL,
                        decreased_at REAL
                    );
                    -- A provider's open tasks are counted by index at each admission.
                    CREATE INDEX generations_provider_open ON generations(provider)
                        WHERE status IN ('dispatching', 'running');
                    """)
        }
        migrator.registerMigration("v5-routes-and-cancel-after") { db in
            try db.execute(
                sql: """
                    -- A client's Cancel-After; the fallback route (a JSON array of models) and where the
                    -- job is on it; the model each attempt asked.
                    ALTER TABLE generations ADD COLUMN cancel_at REAL;
                    ALTER TABLE generations ADD COLUMN route TEXT;
                    ALTER TABLE generations ADD COLUMN route_index INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE attempts ADD COLUMN model TEXT;
                    """)
        }
        migrator.registerMigration("v6-webhooks") { db in
            try db.execute(
                sql: """
                    -- Signing secrets per API key, sealed under the master key (never in clear).
                    CREATE TABLE webhook_secrets (
                        key_id TEXT PRIMARY KEY,
                        sealed BLOB NOT NULL,
                        previous BLOB,
                        previous_until REAL,
                        created_at REAL NOT NULL
                    );
                    CREATE TABLE webhook_deliveries (
                        id TEXT PRIMARY KEY,
                        generation_id TEXT NOT NULL,
                        owner_key_id TEXT NOT NULL,
                        event_seq INTEGER NOT NULL,
                        event_type TEXT NOT NULL,
                        url TEXT NOT NULL,
                        state TEXT NOT NULL,
                        attempts INTEGER NOT NULL DEFAULT 0,
                        next_attempt_at REAL,
                        lease_owner TEXT,
                        lease_expires_at REAL,
                        body TEXT,
                        created_at REAL NOT NULL,
                        delivered_at REAL
                    );
                    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at)
                        WHERE state = 'pending';
                    CREATE INDEX webhook_deliveries_generation ON webhook_deliveries(generation_id, event_seq);
                    -- Ended deliveries expire with the events they carried.
                    CREATE INDEX webhook_deliveries_ended ON webhook_deliveries(created_at) WHERE state != 'pending';
                    CREATE TABLE webhook_attempts (
                        delivery_id TEXT NOT NULL,
                        number INTEGER NOT NULL,
                        at REAL NOT NULL,
                        status_code INTEGER,
                        error TEXT,
                        duration_ms INTEGER NOT NULL,
                        PRIMARY KEY (delivery_id, number)
                    );
                    """)
        }
        migrator.registerMigration("v7-batches") { db in
            try db.execute(
                sql: """
                    CREATE TABLE batches (
                        id TEXT PRIMARY KEY,
                        owner_key_id TEXT NOT NULL,
                        total INTEGER NOT NULL,
                        max_concurrency INTEGER NOT NULL,
                        stop_on_error INTEGER NOT NULL,
                        priority INTEGER NOT NULL,
                        metadata TEXT NOT NULL,
                        created_at REAL NOT NULL,
                        stopped_at REAL,
                        stop_reason TEXT,
                        -- Jobs that may still be held (a hint for the sweep; the rows decide).
                        held_count INTEGER NOT NULL
                    );
                    CREATE INDEX batches_holding ON batches(held_count) WHERE held_count > 0 AND stopped_at IS NULL;
                    CREATE INDEX batches_owner ON batches(owner_key_id, id);
                    -- A batch's jobs; those held for its window have no due time until released.
                    ALTER TABLE generations ADD COLUMN batch_id TEXT;
                    ALTER TABLE generations ADD COLUMN batch_index INTEGER;
                    ALTER TABLE generations ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE generations ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
                    CREATE INDEX generations_batch ON generations(batch_id, batch_index) WHERE batch_id IS NOT NULL;
                    CREATE INDEX generations_batch_held ON generations(batch_id, batch_index)
                        WHERE held = 1 AND status = 'pending';
                    -- A batch's unfinished jobs, released or held: counted at each release.
                    CREATE INDEX generations_batch_open ON generations(batch_id, held)
                        WHERE batch_id IS NOT NULL AND \(active);
                    -- Batch jobs that failed, newest first: where a stop on error is looked for.
                    CREATE INDEX generations_batch_failed ON generations(updated_at)
                        WHERE batch_id IS NOT NULL AND status = 'failed';
                    CREATE INDEX batches_stopped ON batches(stopped_at) WHERE stopped_at IS NOT NULL;
                    """)
        }
        migrator.registerMigration("v8-monitoring") { db in
            try db.execute(sql: SQLiteSchema.monitoring)
        }
        migrator.registerMigration("v9-images") { db in
            try db.execute(
                sql: """
                    ALTER TABLE generations ADD COLUMN inputs TEXT;
                    ALTER TABLE generations ADD COLUMN waits_for TEXT;
                    CREATE INDEX generations_waiting ON generations(waits_for) WHERE status = 'waiting';
                    CREATE TABLE uploads (
                        id TEXT PRIMARY KEY,
                        owner_key_id TEXT NOT NULL,
                        object_key TEXT NOT NULL,
                        info TEXT NOT NULL,
                        created_at REAL NOT NULL,
                        expires_at REAL NOT NULL
                    );
                    CREATE INDEX uploads_object ON uploads(object_key);
                    CREATE TABLE input_objects (
                        object_key TEXT PRIMARY KEY,
                        expires_at REAL NOT NULL
                    );
                    CREATE INDEX input_objects_expiry ON input_objects(expires_at);
                    """)
        }
        migrator.registerMigration("v10-costs") { db in
            try db.execute(sql: SQLiteSchema.costs)
        }
        migrator.registerMigration("v11-experiments") { db in
            try db.execute(
                sql: """
                    CREATE TABLE experiments (
                        id TEXT PRIMARY KEY,
                        name TEXT NOT NULL UNIQUE,
                        description TEXT NOT NULL,
                        status TEXT NOT NULL,
                        definition TEXT NOT NULL,
                        created_at REAL NOT NULL,
                        updated_at REAL NOT NULL,
                        started_at REAL,
                        ended_at REAL
                    );
                    -- The experiment a job was enrolled in, and the variant it got.
                    ALTER TABLE generations ADD COLUMN experiment_id TEXT;
                    ALTER TABLE generations ADD COLUMN experiment_variant TEXT;
                    CREATE INDEX generations_experiment ON generations(experiment_id, experiment_variant)
                        WHERE experiment_id IS NOT NULL;
                    -- What applications said of jobs (kept apart: an ended job never changes).
                    CREATE TABLE ratings (
                        generation_id TEXT PRIMARY KEY,
                        owner_key_id TEXT NOT NULL,
                        rating INTEGER NOT NULL,
                        feedback TEXT,
                        rated_at REAL NOT NULL
                    );
                    """)
        }
        return migrator
    }

    /// What attempts cost, keys' budgets, and the running totals budgets are checked against
    /// (see `SpendStore`). The triggers keep `key_spend` right on every path that ends a job or
    /// charges an attempt, whichever statement comes first in a transaction.
    static var costs: String {
        let terminal = terminalList
        let period = { (row: String) in
            """
            period IN ('day:' || strftime('%Y-%m-%d', CAST(\(row).created_at AS INTEGER), 'unixepoch'),
                       'month:' || strftime('%Y-%m', CAST(\(row).created_at AS INTEGER), 'unixepoch'))
            """
        }
        let paid = { (row: String) in
            "(CASE WHEN \(ChargedSQL.charged(row, boolean: false)) THEN COALESCE(\(row).cost, 0) ELSE 0 END)"
        }
        return """
            ALTER TABLE attempts ADD COLUMN cost REAL;
            ALTER TABLE attempts ADD COLUMN charge TEXT;
            ALTER TABLE attempts ADD COLUMN charges_on_acceptance INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE generations ADD COLUMN reserved_cost REAL;
            ALTER TABLE api_keys ADD COLUMN budget_daily REAL;
            ALTER TABLE api_keys ADD COLUMN budget_monthly REAL;
            CREATE TABLE key_spend (
                key_id TEXT NOT NULL,
                period TEXT NOT NULL,
                amount REAL NOT NULL,
                PRIMARY KEY (key_id, period)
            );
            -- A job that ends swaps its reservation for what its charged attempts cost.
            CREATE TRIGGER generations_settle_spend AFTER UPDATE OF status ON generations
            WHEN NEW.reserved_cost IS NOT NULL AND NEW.status IN \(terminal) AND OLD.status NOT IN \(terminal)
            BEGIN
                UPDATE key_spend SET amount = amount - NEW.reserved_cost
                    + (SELECT COALESCE(SUM(\(paid("a"))), 0) FROM attempts a WHERE a.generation_id = NEW.id)
                WHERE key_id = NEW.owner_key_id AND \(period("NEW"));
            END;
            -- An attempt charged (or costed anew) after its job ended counts then.
            CREATE TRIGGER attempts_charge_after_end AFTER UPDATE ON attempts
            WHEN \(paid("NEW")) != \(paid("OLD"))
            BEGIN
                UPDATE key_spend SET amount = amount + \(paid("NEW")) - \(paid("OLD"))
                WHERE key_id = (
                    SELECT g.owner_key_id FROM generations g
                    WHERE g.id = NEW.generation_id AND g.reserved_cost IS NOT NULL AND g.status IN \(terminal))
                  AND period IN (
                    SELECT 'day:' || strftime('%Y-%m-%d', CAST(g.created_at AS INTEGER), 'unixepoch') FROM generations g
                    WHERE g.id = NEW.generation_id
                    UNION ALL
                    SELECT 'month:' || strftime('%Y-%m', CAST(g.created_at AS INTEGER), 'unixepoch') FROM generations g
                    WHERE g.id = NEW.generation_id);
            END;
            """
    }

    /// Alerts, the error log, and the indexes alert rules read attempts by.
    static let monitoring = """
        CREATE TABLE alerts (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            severity TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            message TEXT NOT NULL,
            details TEXT NOT NULL,
            created_at REAL NOT NULL,
            last_seen_at REAL NOT NULL,
            occurrences INTEGER NOT NULL,
            level INTEGER NOT NULL,
            resolved_at REAL,
            acknowledged_at REAL,
            acknowledged_by TEXT,
            deliveries TEXT NOT NULL
        );
        CREATE INDEX alerts_fingerprint ON alerts(fingerprint, id);
        CREATE INDEX alerts_unresolved ON alerts(type) WHERE resolved_at IS NULL;
        CREATE INDEX alerts_resolved ON alerts(resolved_at) WHERE resolved_at IS NOT NULL;
        CREATE TABLE error_log (
            id TEXT PRIMARY KEY,
            level TEXT NOT NULL,
            source TEXT NOT NULL,
            code TEXT,
            message TEXT NOT NULL,
            generation_id TEXT,
            context TEXT NOT NULL,
            at REAL NOT NULL
        );
        CREATE INDEX error_log_at ON error_log(at);
        CREATE INDEX error_log_source ON error_log(source, id);
        CREATE INDEX error_log_generation ON error_log(generation_id, id) WHERE generation_id IS NOT NULL;
        CREATE INDEX attempts_finished ON attempts(finished_at) WHERE finished_at IS NOT NULL;
        CREATE INDEX attempts_created ON attempts(created_at);
        CREATE INDEX generations_ended ON generations(updated_at) WHERE status IN ('completed', 'failed');
        """
}
