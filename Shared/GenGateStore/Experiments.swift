import Foundation
import GenGateCore

/// A/B experiments, the jobs enrolled in them, and the ratings applications give jobs.
public protocol ExperimentStore: Sendable {
    /// Saves a new experiment; false if its name is taken (nothing written).
    func createExperiment(_ experiment: Experiment) async throws -> Bool
    /// An experiment by its id or its name.
    func experiment(_ idOrName: String) async throws -> Experiment?
    /// Experiments by id (oldest first), after `cursor`.
    func experiments(after cursor: String?, limit: Int) async throws -> [Experiment]
    /// Writes `experiment` (its description, definition, status and times) if it is still in
    /// one of `from`; nil otherwise.
    func updateExperiment(_ experiment: Experiment, from: Set<Experiment.Status>) async throws -> Experiment?
    /// Deletes a draft no job was enrolled in; false otherwise.
    func deleteExperiment(id: String) async throws -> Bool
    /// Every job enrolled in an experiment, as its results read them.
    func experimentSamples(id: String) async throws -> [ExperimentSample]
    /// Records (or replaces) the rating of a job its key owns; false if it has no such job.
    func rate(_ rating: Rating) async throws -> Bool
    func rating(generationID: String) async throws -> Rating?
}

/// What an application said of a job's outputs: 1 to 5, and optional words.
public struct Rating: Sendable, Equatable {
    public var generationID: String
    public var ownerKeyID: String
    public var value: Int
    public var feedback: String?
    public var ratedAt: Date

    public init(generationID: String, ownerKeyID: String, value: Int, feedback: String?, ratedAt: Date) {
        self.generationID = generationID
        self.ownerKeyID = ownerKeyID
        self.value = value
        self.feedback = feedback
        self.ratedAt = ratedAt
    }
}

extension Experiment {
    /// The definition as the store keeps it.
    public var storedDefinition: String {
        String(decoding: (try? JSONCoding.encode(definitionJSON)) ?? Data("{}".utf8), as: UTF8.self)
    }

    /// An experiment read back from its columns.
    public static func stored(
        id: String, name: String, description: String, status: String, definition: String, createdAt: Double,
        updatedAt: Double, startedAt: Double?, endedAt: Double?
    ) -> Experiment {
        let json = (try? JSONCoding.decode(JSONValue.self, from: Data(definition.utf8))) ?? .object([:])
        let (variants, metrics) = decodeDefinition(json)
        return Experiment(
            id: id, name: name, description: description, status: Status(rawValue: status) ?? .paused,
            variants: variants, metrics: metrics, createdAt: Date(timeIntervalSince1970: createdAt),
            updatedAt: Date(timeIntervalSince1970: updatedAt),
            startedAt: startedAt.map(Date.init(timeIntervalSince1970:)),
            endedAt: endedAt.map(Date.init(timeIntervalSince1970:)))
    }
}
