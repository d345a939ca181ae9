import Foundation
import GenGateCore
import GenGateStore
import PostgresNIO

/// Experiments and ratings on PostgreSQL (see `ExperimentStore`; each statement mirrors
/// `SQLiteStore`'s).
extension PostgresStore {
    public func createExperiment(_ experiment: Experiment) async throws -> Bool {
        try await write { db -> Bool in
            try await db.changes(
                """
                INSERT INTO experiments (id, name, description, status, definition, created_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING
                """,
                [
                    experiment.id, experiment.name, experiment.description, experiment.status.rawValue,
                    experiment.storedDefinition, experiment.createdAt.timeIntervalSince1970,
                    experiment.updatedAt.timeIntervalSince1970,
                ]) == 1
        }
    }

    static func decodeExperiment(_ row: PostgresRandomAccessRow) throws -> Experiment {
        Experiment.stored(
            id: try row.get("id"), name: try row.get("name"), description: try row.get("description"),
            status: try row.get("status"), definition: try row.get("definition"),
            createdAt: try row.get("created_at"), updatedAt: try row.get("updated_at"),
            startedAt: try row.get("started_at"), endedAt: try row.get("ended_at"))
    }

    public func experiment(_ idOrName: String) async throws -> Experiment? {
        try await read { db in
            try await db.row("SELECT * FROM experiments WHERE id = $1 OR name = $1 LIMIT 1", [idOrName]).map(
                Self.decodeExperiment)
        }
    }

    public func experiments(after cursor: String?, limit: Int) async throws -> [Experiment] {
        try await read { db in
            try await db.rows("SELECT * FROM experiments WHERE id > $1 ORDER BY id LIMIT $2", [cursor ?? "", limit])
                .map(Self.decodeExperiment)
        }
    }

    public func updateExperiment(_ experiment: Experiment, from: Set<Experiment.Status>) async throws -> Experiment? {
        let expected = from.map(\.rawValue).sorted()
        return try await write { db -> Experiment? in
            try await db.row(
                """
                UPDATE experiments SET description = $1, status = $2, definition = $3, updated_at = $4, started_at = $5,
                    ended_at = $6
                WHERE id = $7 AND status = ANY($8)
                RETURNING *
                """,
                [
                    experiment.description, experiment.status.rawValue, experiment.storedDefinition,
                    experiment.updatedAt.timeIntervalSince1970, experiment.startedAt?.timeIntervalSince1970,
                    experiment.endedAt?.timeIntervalSince1970, experiment.id, expected,
                ]
            ).map(Self.decodeExperiment)
        }
    }

    public func deleteExperiment(id: String) async throws -> Bool {
        try await write { db -> Bool in
            try await db.changes(
                """
                DELETE FROM experiments WHERE id = $1 AND status = 'draft'
                  AND NOT EXISTS (SELECT 1 FROM generations WHERE experiment_id = $1)
                """, [id]) == 1
        }
    }

    public func experimentSamples(id: String) async throws -> [ExperimentSample] {
        let paid = "CASE WHEN \(ChargedSQL.charged("a", boolean: true)) THEN COALESCE(a.cost, 0) ELSE 0 END"
        return try await read { db in
            try await db.rows(
                """
                SELECT g.experiment_variant AS variant, g.status AS status, g.created_at AS created_at,
                    g.completed_at AS completed_at,
                    (SELECT COUNT(*) FROM outputs o WHERE o.generation_id = g.id AND o.stored_at IS NOT NULL)::bigint
                        AS outputs,
                    (SELECT COALESCE(SUM(\(paid)), 0) FROM attempts a WHERE a.generation_id = g.id)::double precision
                        AS cost,
                    r.rating AS rating
                FROM generations g LEFT JOIN ratings r ON r.generation_id = g.id
                WHERE g.experiment_id = $1
                """, [id]
            ).map { row in
                let completed: Double? = try row.get("completed_at")
                let created: Double = try row.get("created_at")
                return ExperimentSample(
                    variant: try row.get("variant", as: String?.self) ?? "",
                    status: GenerationStatus(rawValue: try row.get("status")) ?? .pending,
                    durationSeconds: completed.map { $0 - created }, cost: try row.get("cost"),
                    outputs: try row.get("outputs"), rating: try row.get("rating", as: Int?.self))
            }
        }
    }

    public func rate(_ rating: Rating) async throws -> Bool {
        try await write { db -> Bool in
            guard
                try await db.row(
                    "SELECT 1 AS one FROM generations WHERE id = $1 AND owner_key_id = $2",
                    [rating.generationID, rating.ownerKeyID]) != nil
            else { return false }
            try await db.run(
                """
                INSERT INTO ratings (generation_id, owner_key_id, rating, feedback, rated_at) VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (generation_id) DO UPDATE SET rating = excluded.rating, feedback = excluded.feedback,
                    rated_at = excluded.rated_at
                """,
                [
                    rating.generationID, rating.ownerKeyID, rating.value, rating.feedback,
                    rating.ratedAt.timeIntervalSince1970,
                ])
            return true
        }
    }

    public func rating(generationID: String) async throws -> Rating? {
        try await read { db in
            try await db.row("SELECT * FROM ratings WHERE generation_id = $1", [generationID]).map {
                Rating(
                    generationID: try $0.get("generation_id"), ownerKeyID: try $0.get("owner_key_id"),
                    value: try $0.get("rating"), feedback: try $0.get("feedback"),
                    ratedAt: Date(timeIntervalSince1970: try $0.get("rated_at")))
            }
        }
    }
}
