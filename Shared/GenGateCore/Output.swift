import Foundation

/// One output of a generation. It is first known by where the provider put it (`source`), then
/// checkpointed once stored in object storage (`objectKey`, `bytes`, `sha256`).
public struct Output: Codable, Sendable, Equatable {
    public var index: Int
    /// Where to fetch it from: a provider URL, a `data:` URL, or a provider-specific reference.
    public var source: String
    public var contentType: String
    public var objectKey: String?
    public var bytes: Int?
    public var sha256: String?
    public var storedAt: Date?

    public init(
        index: Int, source: String, contentType: String, objectKey: String? = nil, bytes: Int? = nil,
        sha256: String? = nil, storedAt: Date? = nil
    ) {
        self.index = index
        self.source = source
        self.contentType = contentType
        self.objectKey = objectKey
        self.bytes = bytes
        self.sha256 = sha256
        self.storedAt = storedAt
    }

    public var isStored: Bool { objectKey != nil && storedAt != nil }

    enum CodingKeys: String, CodingKey {
        case index, source, bytes, sha256
        case contentType = "content_type"
        case objectKey = "object_key"
        case storedAt = "stored_at"
    }
}
