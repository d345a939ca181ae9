import Foundation
import GenGateCore

/// Where outputs live: the local directory by default, an S3-compatible
/// service when configured. Writes are whole-or-nothing: a reader never sees half an object.
///
/// Implementations do their I/O off Swift's cooperative threads, and move large objects in
/// chunks, never whole in memory.
public protocol ObjectStore: Sendable {
    /// Stores `data` under `key`, replacing what was there. Returns what was stored.
    func put(key: String, data: Data, contentType: String) async throws -> StoredObject
    /// Stores the file at `file` under `key` (the file is consumed: moved in or deleted),
    /// replacing what was there. Returns what was stored.
    func put(key: String, file: URL, contentType: String) async throws -> StoredObject
    /// The object's bytes, or nil if there is none under `key` (for small objects).
    func get(key: String) async throws -> Data?
    /// A local file holding the object, and its size, to stream from; nil if there is none.
    func localFile(key: String) async throws -> (path: String, size: Int)?
    /// A scratch file on the same file system, for a download on its way in.
    func scratchFile() throws -> URL
}

/// An object as stored: where, how big, and its checksum.
public struct StoredObject: Sendable, Equatable {
    public var key: String
    public var bytes: Int
    public var sha256: String
    public var contentType: String

    public init(key: String, bytes: Int, sha256: String, contentType: String) {
        self.key = key
        self.bytes = bytes
        self.sha256 = sha256
        self.contentType = contentType
    }
}

/// Predictable object keys: `prefix/yyyy/mm/dd/<generation>/<index>.<ext>`,
/// dated by the generation's creation (UTC) so every output of one job sits together.
public enum ObjectKey {
    /// `attempt`: for outputs stored before their record commits (a synchronous provider's),
    /// so a late attempt never overwrites the object another attempt recorded.
    public static func forOutput(
        prefix: String, generationID: String, createdAt: Date, index: Int, contentType: String, attempt: Int? = nil
    ) -> String {
        // One directory a day, not one per generation: a directory is an inode to allocate and
        // to sync on every job, and object stores have no directories anyway.
        let date = Timestamp.format(createdAt).prefix(10).replacingOccurrences(of: "-", with: "/")
        let trimmed = prefix.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        let head = trimmed.isEmpty ? "" : trimmed + "/"
        let suffix = attempt.map { "-a\($0)" } ?? ""
        return "\(head)\(date)/\(generationID)-\(index)\(suffix).\(fileExtension(for: contentType))"
    }

    public static func fileExtension(for contentType: String) -> String {
        switch contentType.split(separator: ";").first.map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) {
        case "image/png": return "png"
        case "image/jpeg": return "jpg"
        case "image/webp": return "webp"
        case "image/gif": return "gif"
        case "video/mp4": return "mp4"
        case "video/webm": return "webm"
        case "text/plain": return "txt"
        case "application/json": return "json"
        default: return "bin"
        }
    }
}
