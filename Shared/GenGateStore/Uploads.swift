import Foundation
import GenGateCore

/// An image an API key uploaded (`POST /v1/uploads`): what it is, and the object holding it.
/// Objects are shared: the same bytes uploaded twice the same day are one object.
public struct Upload: Sendable, Equatable {
    public var id: String
    public var ownerKeyID: String
    public var objectKey: String
    public var info: ImageInfo
    public var createdAt: Date
    /// When the upload, and its object, go.
    public var expiresAt: Date

    public init(id: String, ownerKeyID: String, objectKey: String, info: ImageInfo, createdAt: Date, expiresAt: Date) {
        self.id = id
        self.ownerKeyID = ownerKeyID
        self.objectKey = objectKey
        self.info = info
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }
}

/// Uploads, and the input objects (uploads, fetched and preprocessed images) to delete once they
/// expire. An input object's key carries its expiry day, so nothing is ever written under a key
/// whose time has passed: deleting an expired object cannot race with a writer reusing it.
public protocol ImageStore: Sendable {
    func insertUpload(_ upload: Upload) async throws
    /// The upload `id`, if there is one and it has not expired.
    func upload(id: String, now: Date) async throws -> Upload?
    /// Notes that the input object `key` is to be deleted at `expiresAt` (again: no change).
    /// Called before the object is written, so a crash in between leaves it to be deleted too.
    func recordInputObject(key: String, expiresAt: Date) async throws
    /// Input objects whose time has passed, oldest first.
    func expiredInputObjects(now: Date, limit: Int) async throws -> [String]
    /// Forgets an input object once deleted, and the uploads it held.
    func forgetInputObject(key: String) async throws
    /// Jobs `waiting` for `parent`'s output.
    func jobsWaiting(for parent: String, limit: Int) async throws -> [String]
    /// Waiting jobs whose awaited job has ended or is gone: their release was missed (the process
    /// that ended the job died first).
    func waitingOnEndedJobs(limit: Int) async throws -> [String]
}
