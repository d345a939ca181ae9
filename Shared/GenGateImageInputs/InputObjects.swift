import Foundation
import GenGateCore
import GenGateObjects
import GenGateImages
import GenGateStore
import NIOPosix

/// Where input images live in object storage (uploads, images fetched from URLs, preprocessed
/// images): `inputs/<day>/<sha256>.<ext>`, `<day>` the UTC day at whose end the object is
/// deleted. The same bytes stored the same day are one object; nothing is ever written under a
/// day that has passed, so the sweep that deletes a day's objects never races a writer.
public struct InputObjects: Sendable {
    public let store: any GenerationStore
    public let objects: any ObjectStore
    /// Days an object is kept (at least; up to a day more, to the end of its day).
    public let keepDays: Int

    public init(store: any GenerationStore, objects: any ObjectStore, keepDays: Int) {
        self.store = store
        self.objects = objects
        self.keepDays = keepDays
    }

    static let day = 86_400.0

    /// The key for bytes of this hash and format stored at `now`, and when it goes.
    public func place(sha256: String, format: ImageFormat, now: Date) -> (key: String, expiresAt: Date) {
        let day = (now.timeIntervalSince1970 / Self.day).rounded(.down) + Double(keepDays)
        let expiresAt = Date(timeIntervalSince1970: (day + 1) * Self.day)
        let date = Timestamp.format(Date(timeIntervalSince1970: day * Self.day)).prefix(10)
        return ("inputs/\(date)/\(sha256).\(ObjectKey.fileExtension(for: format.contentType))", expiresAt)
    }

    /// Stores the file (consumed) as an input object unless today's object of these bytes is
    /// there already. The deletion is on record before the object is written.
    public func put(file: URL, sha256: String, format: ImageFormat, now: Date = Date()) async throws -> (
        key: String, expiresAt: Date
    ) {
        let (key, expiresAt) = place(sha256: sha256, format: format, now: now)
        try await store.recordInputObject(key: key, expiresAt: expiresAt)
        if try await objects.exists(key: key) {
            try? FileManager.default.removeItem(at: file)
        } else {
            _ = try await objects.put(key: key, file: file, contentType: format.contentType)
        }
        return (key, expiresAt)
    }

    /// As `put(file:…)`, for bytes in memory.
    public func put(data: Data, sha256: String, format: ImageFormat, now: Date = Date()) async throws -> (
        key: String, expiresAt: Date
    ) {
        let (key, expiresAt) = place(sha256: sha256, format: format, now: now)
        try await store.recordInputObject(key: key, expiresAt: expiresAt)
        if try await !objects.exists(key: key) {
            _ = try await objects.put(key: key, data: data, contentType: format.contentType)
        }
        return (key, expiresAt)
    }

    /// A local file holding the object `key`: the object's own with local storage, otherwise a
    /// scratch copy (`scratch` true: the caller removes it).
    public func localCopy(key: String) async throws -> (file: URL, scratch: Bool)? {
        if let local = try await objects.localFile(key: key) { return (URL(fileURLWithPath: local.path), false) }
        let file = try objects.scratchFile()
        // Streamed through a presigned URL (a 50 MB upload is never whole in memory).
        if let url = objects.temporaryURL(key: key, now: Date()) {
            return try await StreamedFile.download(url, to: file, timeoutSeconds: 300) ? (file, true) : nil
        }
        guard let data = try await objects.get(key: key) else { return nil }
        try await NIOThreadPool.singleton.runIfActive { try data.write(to: file) }
        return (file, true)
    }
}
