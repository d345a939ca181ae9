import Foundation
import GRDB
import GenGateCore

/// Experiments and ratings on SQLite (see `ExperimentStore`).
extension SQLiteStore {
    public func createExperiment(_ experiment: Experiment) async throws -> Bool {
        try await batcher.write { db -> Bool in
            try db.run(
                sql: """
                    INSERT INTO experiments (id, name, description, status, definition, created_at, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING
                    """,
                arguments: [
                    experiment.id, experiment.name, experiment.description, experiment.status.rawValue,
                    experiment.storedDefinition, experiment.createdAt.timeIntervalSince1970,
                    experiment.updatedAt.timeIntervalSince1970,
                ])
            return db.changesCount == 1
        }
    }

    static func decodeExperiment(_ row: Row) -> Experiment {
        Experiment.stored(
            id: row["id"], name: row["name"], description: row["description"], status: row["status"],
            definition: row["definition"], createdAt: row["created_at"], updatedAt: row["updated_at"],
            startedAt: row["started_at"], endedAt: row["ended_at"])
    }

    public func experiment(_ idOrName: String) async throws -> Experiment? {
        try await pool.read { db in
            try Row.fetchOne(
                db, cached: "SELECT * FROM experiments WHERE id = ? OR name = ? LIMIT 1",
                arguments: [idOrName, idOrName]
            ).map(Self.decodeExperiment)
        }
    }

    public func experiments(after cursor: String?, limit: Int) async throws -> [Experiment] {
        try await pool.read { db in
            try Row.fetchAll(
                db, cached: "SELECT * FROM experiments WHERE id > ? ORDER BY id LIMIT ?",
                arguments: [cursor ?? "", limit]
            ).map(Self.decodeExperiment)
        }
    }

    public func updateExperiment(_ experiment: Experiment, from: Set<Experiment.Status>) async throws -> Experiment? {
        let expected = from.map(\.rawValue).sorted()
        return try await batcher.write { db -> Experiment? in
            var arguments: StatementArguments = [
                experiment.description, experiment.status.rawValue, experiment.storedDefinition,
                experiment.updatedAt.timeIntervalSince1970, experiment.startedAt?.timeIntervalSince1970,
                experiment.endedAt?.timeIntervalSince1970, experiment.id,
            ]
            arguments += StatementArguments(expected)
            try db.run(
                sql: """
                    UPDATE experiments SET description = ?, status = ?, definition = ?, updated_at = ?, started_at = ?,
                        ended_at = ?
                    WHERE id = ? AND status IN (\(databaseQuestionMarks(count: expected.count)))
                    """, arguments: arguments)
            guard db.changesCount == 1 else { return nil }
            return try Row.fetchOne(db, cached: "SELECT * FROM experiments WHERE id = ?", arguments: [experiment.id])
                .map(Self.decodeExperiment)
        }
    }

    public func deleteExperiment(id: String) async throws -> Bool {
        try await batcher.write { db -> Bool in
            try db.run(
                sql: """
                    DELETE FROM experiments WHERE id = ? AND status = 'draft'
                      AND NOT EXISTS (SELECT 1 FROM generations INDEXED BY generations_experiment
                                      WHERE experiment_id = ? AND experiment_id IS NOT NULL)
                    """, arguments: [id, id])
            return db.changesCount == 1
        }
    }

    public func experimentSamples(id: String) async throws -> [ExperimentSample] {
        let paid = "CASE WHEN \(ChargedSQL.charged("a", boolean: false)) THEN COALESCE(a.cost, 0) ELSE 0 END"
        return try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT g.experiment_variant AS variant, g.status AS status, g.created_at AS created_at,
                        g.completed_at AS completed_at,
                        (SELECT COUNT(*) FROM outputs o WHERE o.generation_id = g.id AND o.stored_at IS NOT NULL) AS outputs,
                        (SELECT COALESCE(SUM(\(paid)), 0) FROM attempts a WHERE a.generation_id = g.id) AS cost,
                        r.rating AS rating
                    FROM generations g INDEXED BY generations_experiment
                    LEFT JOIN ratings r ON r.generation_id = g.id
                    WHERE g.experiment_id = ? AND g.experiment_id IS NOT NULL
                    """, arguments: [id]
            ).map { row in
                let completed: Double? = row["completed_at"]
                let created: Double = row["created_at"]
                return ExperimentSample(
                    variant: row["variant"], status: GenerationStatus(rawValue: row["status"]) ?? .pending,
                    durationSeconds: completed.map { $0 - created }, cost: row["cost"], outputs: row["outputs"],
                    rating: row["rating"])
            }
        }
    }

    public func rate(_ rating: Rating) async throws -> Bool {
        try await batcher.write { db -> Bool in
            guard
                try Bool.fetchOne(
                    db, cached: "SELECT 1 FROM generations WHERE id = ? AND owner_key_id = ?",
                    arguments: [rating.generationID, rating.ownerKeyID]) != nil
            else { return false }
            try db.run(
                sql: """
                    INSERT INTO ratings (generation_id, owner_key_id, rating, feedback, rated_at) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (generation_id) DO UPDATE SET rating = excluded.rating, feedback = excluded.feedback,
                        rated_at = excluded.rated_at
                    """,
                arguments: [
                    rating.generationID, rating.ownerKeyID, rating.value, rating.feedback,
                    rating.ratedAt.timeIntervalSince1970,
                ])
            return true
        }
    }

    public func rating(generationID: String) async throws -> Rating? {
        try await pool.read { db in
            try Row.fetchOne(db, cached: "SELECT * FROM ratings WHERE generation_id = ?", arguments: [generationID]).map
            {
                Rating(
                    generationID: $0["generation_id"], ownerKeyID: $0["owner_key_id"], value: $0["rating"],
                    feedback: $0["feedback"], ratedAt: Date(timeIntervalSince1970: $0["rated_at"]))
            }
        }
    }
}
