import GenGateStore
import Foundation

/// The schema of the PostgreSQL store, as named migrations applied in order, each in its own
/// transaction, by whoever holds the migration lock (several hosts may start at once). Never
/// edit a migration that has shipped; add a new one.
///
/// The tables mirror the SQLite store's column for column (times as seconds since 1970, the
/// request as JSON text), so that both backends answer alike; what SQLite's `json_extract` read
/// from the request at query time (webhook, webhook events) is kept in columns of its own.
enum PostgresSchema {
    /// `pg_advisory_lock` keys: migrations, and the writer lock (see `PostgresWriteBatcher`).
    static let migrationLock: Int64 = 0x6765_6E67_6174_6501
    static let writerLock: Int64 = 0x6765_6E67_6174_6502

    static let active = "status NOT IN ('completed', 'failed', 'cancelled')"

    /// A migration's statements, one at a time (the extended protocol takes one per query):
    /// split at each `;` that ends a line outside a `$$` function body.
    static func statements(_ sql: String) -> [String] {
        var statements: [String] = []
        var current = ""
        var inBody = false
        for line in sql.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("--") && current.isEmpty { continue }
            current += line + "\n"
            if line.components(separatedBy: "$$").count % 2 == 0 { inBody.toggle() }
            if !inBody && trimmed.hasSuffix(";") {
                statements.append(current.trimmingCharacters(in: .whitespacesAndNewlines))
                current = ""
            }
        }
        let rest = current.trimmingCharacters(in: .whitespacesAndNewlines)
        if !rest.isEmpty { statements.append(rest) }
        return statements
    }

    static let migrations: [(name: String, sql: String)] = [
        (
            "v1-gengate",
            """
            CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                secret_hash TEXT NOT NULL UNIQUE,
                is_admin BOOLEAN NOT NULL DEFAULT FALSE,
                created_at DOUBLE PRECISION NOT NULL,
                revoked_at DOUBLE PRECISION
            );

            -- Ids compare byte by byte (cursors, newest first), whatever the database's locale.
            CREATE TABLE generations (
                id TEXT COLLATE "C" PRIMARY KEY,
                owner_key_id TEXT NOT NULL REFERENCES api_keys(id),
                model TEXT NOT NULL,
                provider TEXT NOT NULL,
                request TEXT NOT NULL,
                n BIGINT NOT NULL DEFAULT 1,
                status TEXT NOT NULL,
                version BIGINT NOT NULL,
                progress BIGINT NOT NULL DEFAULT 0,
                attempts BIGINT NOT NULL DEFAULT 0,
                error TEXT,
                provider_task_id TEXT,
                lease_owner TEXT,
                lease_expires_at DOUBLE PRECISION,
                next_action_at DOUBLE PRECISION,
                deadline_at DOUBLE PRECISION NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                dispatching_at DOUBLE PRECISION,
                running_at DOUBLE PRECISION,
                uploading_at DOUBLE PRECISION,
                retry_wait_at DOUBLE PRECISION,
                completed_at DOUBLE PRECISION,
                failed_at DOUBLE PRECISION,
                cancelled_at DOUBLE PRECISION,
                checks BIGINT NOT NULL DEFAULT 0,
                check_failures BIGINT NOT NULL DEFAULT 0,
                handler_failures BIGINT NOT NULL DEFAULT 0,
                cancel_at DOUBLE PRECISION,
                route TEXT,
                route_index BIGINT NOT NULL DEFAULT 0,
                batch_id TEXT,
                batch_index BIGINT,
                held BOOLEAN NOT NULL DEFAULT FALSE,
                priority BIGINT NOT NULL DEFAULT 0,
                -- From the request, for the deliveries made as events are recorded.
                webhook_url TEXT,
                webhook_events TEXT[] NOT NULL DEFAULT '{}',
                deadline_seconds DOUBLE PRECISION
            );
            CREATE INDEX generations_owner ON generations(owner_key_id, id);
            CREATE INDEX generations_owner_status ON generations(owner_key_id, status, id);
            CREATE INDEX generations_active ON generations(status, next_action_at) WHERE \(active);
            CREATE INDEX generations_unleased_due ON generations(status, next_action_at)
                WHERE lease_owner IS NULL AND \(active);
            CREATE INDEX generations_leased ON generations(lease_expires_at) WHERE lease_owner IS NOT NULL;
            CREATE INDEX generations_deadline ON generations(deadline_at) WHERE \(active);
            CREATE INDEX generations_provider_open ON generations(provider) WHERE status IN ('dispatching', 'running');
            CREATE INDEX generations_batch ON generations(batch_id, batch_index) WHERE batch_id IS NOT NULL;
            CREATE INDEX generations_batch_held ON generations(batch_id, batch_index) WHERE held AND status = 'pending';
            CREATE INDEX generations_batch_open ON generations(batch_id, held) WHERE batch_id IS NOT NULL AND \(active);
            CREATE INDEX generations_batch_failed ON generations(updated_at) WHERE batch_id IS NOT NULL AND status = 'failed';

            CREATE TABLE attempts (
                generation_id TEXT NOT NULL REFERENCES generations(id),
                number BIGINT NOT NULL,
                provider TEXT NOT NULL,
                client_reference TEXT NOT NULL,
                provider_task_id TEXT,
                output_indexes TEXT NOT NULL,
                state TEXT NOT NULL,
                error TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                finished_at DOUBLE PRECISION,
                possible_double_charge BOOLEAN NOT NULL DEFAULT FALSE,
                model TEXT,
                PRIMARY KEY (generation_id, number)
            );
            CREATE INDEX attempts_open ON attempts(generation_id) WHERE state IN ('submitting', 'submitted');
            CREATE INDEX attempts_double_charged ON attempts(provider) WHERE possible_double_charge;

            CREATE TABLE outputs (
                generation_id TEXT NOT NULL REFERENCES generations(id),
                idx BIGINT NOT NULL,
                source TEXT NOT NULL,
                content_type TEXT NOT NULL,
                object_key TEXT,
                bytes BIGINT,
                sha256 TEXT,
                stored_at DOUBLE PRECISION,
                PRIMARY KEY (generation_id, idx)
            );

            -- Sequence numbers are handed out under the writer lock, so they follow commit order.
            CREATE TABLE events (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                generation_id TEXT,
                type TEXT NOT NULL,
                at DOUBLE PRECISION NOT NULL,
                payload TEXT NOT NULL
            );
            CREATE INDEX events_generation ON events(generation_id, seq);
            CREATE INDEX events_at ON events(at);

            CREATE TABLE leader_leases (
                name TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL
            );

            CREATE TABLE idempotency_keys (
                key_id TEXT NOT NULL,
                key TEXT NOT NULL,
                request_hash TEXT NOT NULL,
                generation_id TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (key_id, key)
            );
            CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);

            CREATE TABLE instances (
                name TEXT PRIMARY KEY,
                seen_at DOUBLE PRECISION NOT NULL,
                silent_after DOUBLE PRECISION NOT NULL
            );

            CREATE TABLE provider_limits (
                provider TEXT PRIMARY KEY,
                concurrency DOUBLE PRECISION,
                rate DOUBLE PRECISION,
                tokens DOUBLE PRECISION NOT NULL,
                refilled_at DOUBLE PRECISION NOT NULL,
                decreased_at DOUBLE PRECISION
            );

            CREATE TABLE webhook_secrets (
                key_id TEXT PRIMARY KEY,
                sealed BYTEA NOT NULL,
                previous BYTEA,
                previous_until DOUBLE PRECISION,
                created_at DOUBLE PRECISION NOT NULL
            );
            CREATE TABLE webhook_deliveries (
                id TEXT PRIMARY KEY,
                generation_id TEXT NOT NULL,
                owner_key_id TEXT NOT NULL,
                event_seq BIGINT NOT NULL,
                event_type TEXT NOT NULL,
                url TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts BIGINT NOT NULL DEFAULT 0,
                next_attempt_at DOUBLE PRECISION,
                lease_owner TEXT,
                lease_expires_at DOUBLE PRECISION,
                body TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                delivered_at DOUBLE PRECISION
            );
            CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE state = 'pending';
            CREATE INDEX webhook_deliveries_generation ON webhook_deliveries(generation_id, event_seq);
            CREATE INDEX webhook_deliveries_ended ON webhook_deliveries(created_at) WHERE state != 'pending';
            CREATE TABLE webhook_attempts (
                delivery_id TEXT NOT NULL,
                number BIGINT NOT NULL,
                at DOUBLE PRECISION NOT NULL,
                status_code BIGINT,
                error TEXT,
                duration_ms BIGINT NOT NULL,
                PRIMARY KEY (delivery_id, number)
            );

            CREATE TABLE batches (
                id TEXT COLLATE "C" PRIMARY KEY,
                owner_key_id TEXT NOT NULL,
                total BIGINT NOT NULL,
                max_concurrency BIGINT NOT NULL,
                stop_on_error BOOLEAN NOT NULL,
                priority BIGINT NOT NULL,
                metadata TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                stopped_at DOUBLE PRECISION,
                stop_reason TEXT,
                held_count BIGINT NOT NULL
            );
            CREATE INDEX batches_holding ON batches(held_count) WHERE held_count > 0 AND stopped_at IS NULL;
            CREATE INDEX batches_owner ON batches(owner_key_id, id);
            CREATE INDEX batches_stopped ON batches(stopped_at) WHERE stopped_at IS NOT NULL;

            -- What must never happen, refused by the store itself (SQLSTATE GG001).
            CREATE FUNCTION gengate_terminal_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF OLD.status IN ('completed', 'failed', 'cancelled') THEN
                    RAISE EXCEPTION 'a completed, failed or cancelled generation never changes'
                        USING ERRCODE = 'GG001';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER generations_terminal_is_final BEFORE UPDATE ON generations
                FOR EACH ROW EXECUTE FUNCTION gengate_terminal_is_final();

            CREATE FUNCTION gengate_attempts_never_go_back() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF (OLD.state <> 'submitting' AND NEW.state = 'submitting')
                   OR (OLD.provider_task_id IS NOT NULL AND NEW.provider_task_id IS DISTINCT FROM OLD.provider_task_id)
                   OR (OLD.state IN ('succeeded', 'failed', 'abandoned') AND NEW.state <> OLD.state) THEN
                    RAISE EXCEPTION 'an attempt never goes back: its submission and outcome are final once recorded'
                        USING ERRCODE = 'GG001';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER attempts_never_go_back BEFORE UPDATE ON attempts
                FOR EACH ROW EXECUTE FUNCTION gengate_attempts_never_go_back();

            CREATE FUNCTION gengate_outputs_within_n() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.idx < 0 OR NEW.idx >= (SELECT n FROM generations WHERE id = NEW.generation_id) THEN
                    RAISE EXCEPTION 'a generation never has more outputs than it asked for' USING ERRCODE = 'GG001';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER outputs_within_n BEFORE INSERT ON outputs
                FOR EACH ROW EXECUTE FUNCTION gengate_outputs_within_n();
            """
        ),
        (
            "v2-monitoring",
            """
            CREATE TABLE alerts (
                id TEXT COLLATE "C" PRIMARY KEY,
                type TEXT NOT NULL,
                severity TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                message TEXT NOT NULL,
                details TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                last_seen_at DOUBLE PRECISION NOT NULL,
                occurrences BIGINT NOT NULL,
                level BIGINT NOT NULL,
                resolved_at DOUBLE PRECISION,
                acknowledged_at DOUBLE PRECISION,
                acknowledged_by TEXT,
                deliveries TEXT NOT NULL
            );
            CREATE INDEX alerts_fingerprint ON alerts(fingerprint, id);
            CREATE INDEX alerts_unresolved ON alerts(type) WHERE resolved_at IS NULL;
            CREATE INDEX alerts_resolved ON alerts(resolved_at) WHERE resolved_at IS NOT NULL;
            CREATE TABLE error_log (
                id TEXT COLLATE "C" PRIMARY KEY,
                level TEXT NOT NULL,
                source TEXT NOT NULL,
                code TEXT,
                message TEXT NOT NULL,
                generation_id TEXT,
                context TEXT NOT NULL,
                at DOUBLE PRECISION NOT NULL
            );
            CREATE INDEX error_log_at ON error_log(at);
            CREATE INDEX error_log_source ON error_log(source, id);
            CREATE INDEX error_log_generation ON error_log(generation_id, id) WHERE generation_id IS NOT NULL;
            CREATE INDEX attempts_finished ON attempts(finished_at) WHERE finished_at IS NOT NULL;
            CREATE INDEX attempts_created ON attempts(created_at);
            CREATE INDEX generations_ended ON generations(updated_at) WHERE status IN ('completed', 'failed');
            """
        ),
        (
            "v3-images",
            """
            ALTER TABLE generations ADD COLUMN inputs TEXT;
            ALTER TABLE generations ADD COLUMN waits_for TEXT;
            CREATE INDEX generations_waiting ON generations(waits_for) WHERE status = 'waiting';
            CREATE TABLE uploads (
                id TEXT COLLATE "C" PRIMARY KEY,
                owner_key_id TEXT NOT NULL,
                object_key TEXT NOT NULL,
                info TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL
            );
            CREATE INDEX uploads_object ON uploads(object_key);
            CREATE TABLE input_objects (
                object_key TEXT PRIMARY KEY,
                expires_at DOUBLE PRECISION NOT NULL
            );
            CREATE INDEX input_objects_expiry ON input_objects(expires_at);
            """
        ),
        ("v4-costs", costs),
        (
            "v5-experiments",
            """
            CREATE TABLE experiments (
                id TEXT COLLATE "C" PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                description TEXT NOT NULL,
                status TEXT NOT NULL,
                definition TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                started_at DOUBLE PRECISION,
                ended_at DOUBLE PRECISION
            );
            ALTER TABLE generations ADD COLUMN experiment_id TEXT;
            ALTER TABLE generations ADD COLUMN experiment_variant TEXT;
            CREATE INDEX generations_experiment ON generations(experiment_id, experiment_variant)
                WHERE experiment_id IS NOT NULL;
            CREATE TABLE ratings (
                generation_id TEXT PRIMARY KEY,
                owner_key_id TEXT NOT NULL,
                rating BIGINT NOT NULL,
                feedback TEXT,
                rated_at DOUBLE PRECISION NOT NULL
            );
            """
        ),
    ]

    /// What attempts cost, keys' budgets and their running totals: as SQLite's `v10-costs`.
    static var costs: String {
        let paid = { (row: String) in
            "(CASE WHEN \(ChargedSQL.charged(row, boolean: true)) THEN COALESCE(\(row).cost, 0) ELSE 0 END)"
        }
        let day = { (created: String) in
            "'day:' || to_char(to_timestamp(floor(\(created))) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        }
        let month = { (created: String) in
            "'month:' || to_char(to_timestamp(floor(\(created))) AT TIME ZONE 'UTC', 'YYYY-MM')"
        }
        return """
            ALTER TABLE attempts ADD COLUMN cost DOUBLE PRECISION;
            ALTER TABLE attempts ADD COLUMN charge TEXT;
            ALTER TABLE attempts ADD COLUMN charges_on_acceptance BOOLEAN NOT NULL DEFAULT FALSE;
            ALTER TABLE generations ADD COLUMN reserved_cost DOUBLE PRECISION;
            ALTER TABLE api_keys ADD COLUMN budget_daily DOUBLE PRECISION;
            ALTER TABLE api_keys ADD COLUMN budget_monthly DOUBLE PRECISION;
            CREATE TABLE key_spend (
                key_id TEXT NOT NULL,
                period TEXT NOT NULL,
                amount DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (key_id, period)
            );
            -- A job that ends swaps its reservation for what its charged attempts cost.
            CREATE FUNCTION gengate_settle_spend() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE key_spend SET amount = amount - NEW.reserved_cost
                    + (SELECT COALESCE(SUM(\(paid("a"))), 0) FROM attempts a WHERE a.generation_id = NEW.id)
                WHERE key_id = NEW.owner_key_id AND period IN (\(day("NEW.created_at")), \(month("NEW.created_at")));
                RETURN NULL;
            END $$;
            CREATE TRIGGER generations_settle_spend AFTER UPDATE OF status ON generations
                FOR EACH ROW
                WHEN (NEW.reserved_cost IS NOT NULL AND NEW.status IN ('completed', 'failed', 'cancelled')
                      AND OLD.status NOT IN ('completed', 'failed', 'cancelled'))
                EXECUTE FUNCTION gengate_settle_spend();
            -- An attempt charged (or costed anew) after its job ended counts then.
            CREATE FUNCTION gengate_charge_after_end() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                job RECORD;
            BEGIN
                SELECT owner_key_id, created_at INTO job FROM generations
                WHERE id = NEW.generation_id AND reserved_cost IS NOT NULL
                  AND status IN ('completed', 'failed', 'cancelled');
                IF FOUND THEN
                    UPDATE key_spend SET amount = amount + \(paid("NEW")) - \(paid("OLD"))
                    WHERE key_id = job.owner_key_id
                      AND period IN (\(day("job.created_at")), \(month("job.created_at")));
                END IF;
                RETURN NULL;
            END $$;
            CREATE TRIGGER attempts_charge_after_end AFTER UPDATE ON attempts
                FOR EACH ROW WHEN (\(paid("NEW")) <> \(paid("OLD")))
                EXECUTE FUNCTION gengate_charge_after_end();
            """
    }
}
