import Foundation
import GenGateCore
import NIOPosix

/// Where outputs live: the local directory by default, an S3-compatible
/// service when configured. Writes are whole-or-nothing: a reader never sees half an object.
///
/// Implementations do their I/O off Swift's cooperative threads, and move large objects in
/// chunks, never whole in memory.
public protocol ObjectStore: Sendable {
    /// Stores `data` under `key`, replacing what was there. Returns what was stored.
    func put(key: String, data: Data, contentType: String) async throws -> StoredObject
    /// Stores the file at `file` under `key`, replacing what was there. Returns what was stored.
    /// The file is consumed (moved in or deleted) once stored; after a failure it is left where
    /// it is, so that a caller trying again need not fetch it again (nor pay for it again).
    func put(key: String, file: URL, contentType: String) async throws -> StoredObject
    /// The object's bytes, or nil if there is none under `key` (for small objects).
    func get(key: String) async throws -> Data?
    /// A local file holding the object, and its size, to stream from; nil if there is none.
    func localFile(key: String) async throws -> (path: String, size: Int)?
    /// A scratch file (on the same file system, for the local store), for a download on its way in.
    func scratchFile() throws -> URL
    /// A URL anyone may fetch the object from, for good (a public bucket, a CDN); nil if none.
    func publicURL(key: String) -> String?
    /// A URL that works without credentials for a while (a presigned URL); nil when GenGate
    /// serves the object itself.
    func temporaryURL(key: String, now: Date) -> String?
    /// Whether objects can be stored now (for health reports and start-up).
    func check() async -> ObjectStoreCheck
    /// Whether there is an object under `key`.
    func exists(key: String) async throws -> Bool
    /// Deletes the object under `key`; none there is no error.
    func delete(key: String) async throws
}

/// What a look at object storage found.
public enum ObjectStoreCheck: Sendable, Equatable {
    case ok
    /// The service answered, and refused: credentials, permissions, no such bucket.
    case refused(String)
    /// No answer.
    case unreachable(String)
}

extension ObjectStore {
    /// Stores an output's file (consumed once stored, as `put(key:file:)`) under `key(contentType)`, its content type told by its
    /// bytes (`ContentSniffer`), not by the provider: the one way in for every output, whether it
    /// came as a URL to download or as base64 in an answer.
    public func putOutput(file: URL, claimed: String, key: (String) -> String) async throws -> StoredObject {
        let head: [UInt8]
        do {
            head = try await NIOThreadPool.singleton.runIfActive {
                let handle = try FileHandle(forReadingFrom: file)
                defer { try? handle.close() }
                return Array(try handle.read(upToCount: ContentSniffer.headLength) ?? Data())
            }
        } catch {
            throw GenGateError(.uploadFailed, "cannot read a downloaded output: \(error)")
        }
        let contentType = try ContentSniffer.contentType(head: head, claimed: claimed)
        return try await put(key: key(contentType), file: file, contentType: contentType)
    }

    /// As `putOutput(file:…)`, for an output held in memory.
    public func putOutput(data: Data, claimed: String, key: (String) -> String) async throws -> StoredObject {
        let contentType = try ContentSniffer.contentType(head: data.prefix(ContentSniffer.headLength), claimed: claimed)
        return try await put(key: key(contentType), data: data, contentType: contentType)
    }
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
        case "video/quicktime": return "mov"
        case "video/x-matroska": return "mkv"
        case "image/avif": return "avif"
        case "image/heic": return "heic"
        case "image/bmp": return "bmp"
        case "image/tiff": return "tiff"
        case "image/svg+xml": return "svg"
        case "audio/mpeg": return "mp3"
        case "audio/wav": return "wav"
        case "audio/ogg": return "ogg"
        case "audio/flac": return "flac"
        case "audio/mp4": return "m4a"
        case "application/pdf": return "pdf"
        case "text/plain": return "txt"
        case "application/json": return "json"
        default: return "bin"
        }
    }
}
