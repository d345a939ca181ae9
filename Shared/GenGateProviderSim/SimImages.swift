import AsyncHTTPClient
import Foundation
import GenGateCore
import GenGateObjects
import NIOCore

/// An input image a simulated provider received, as it found it: how it came (raw base64, a
/// `data:` URL, a URL it fetched), what its bytes are, and their hash. Listed in `/_sim/stats`
/// so tests can check what reached the provider.
public struct ReceivedImage: Codable, Sendable, Equatable {
    public var field: String
    public var form: String
    public var contentType: String
    public var bytes: Int
    public var sha256: String

    enum CodingKeys: String, CodingKey {
        case field, form, bytes, sha256
        case contentType = "content_type"
    }
}

extension ProviderSimulator {
    /// The most received images `/_sim/stats` keeps.
    static let receivedKept = 100

    /// Reads an input image the way the provider would: `forms` are what it takes (`base64`
    /// without a `data:` prefix, `data_url`, `url`, which it fetches). Returns why it refuses one
    /// (a form it does not take, bytes that are no image, a URL that does not answer), or nil
    /// once it is recorded.
    func receiveImage(_ text: String, field: String, forms: Set<String>) async -> String? {
        var form = "base64"
        var data: Data?
        if text.hasPrefix("http://") || text.hasPrefix("https://") {
            form = "url"
            guard forms.contains(form) else { return "\(field) must not be a URL" }
            do {
                let response = try await HTTPClient.shared.execute(
                    HTTPClientRequest(url: text), timeout: .seconds(30))
                guard response.status == .ok else {
                    return "\(field): fetching it answered HTTP \(response.status.code)"
                }
                data = Data(try await response.body.collect(upTo: 64 << 20).readableBytesView)
            } catch {
                return "\(field): it could not be fetched (\(error))"
            }
        } else if text.hasPrefix("data:") {
            form = "data_url"
            guard forms.contains(form) else { return "\(field) must be a URL or raw base64, not a data: URL" }
            data = text.firstIndex(of: ",").flatMap { Data(base64Encoded: String(text[text.index(after: $0)...])) }
        } else {
            guard forms.contains(form) else { return "\(field) must be a URL" }
            data = Data(base64Encoded: text)
        }
        guard let data, !data.isEmpty else { return "\(field) is not valid base64" }
        return receiveImage(bytes: data, field: field, form: form)
    }

    /// As `receiveImage(_:field:forms:)`, for bytes that came as they are (a multipart file).
    func receiveImage(bytes data: Data, field: String, form: String) -> String? {
        guard let type = ContentSniffer.format(of: Array(data.prefix(ContentSniffer.headLength))),
            ["image/png", "image/jpeg", "image/webp"].contains(type)
        else {
            return "\(field) is not a PNG, JPEG or WebP image"
        }
        let received = ReceivedImage(
            field: field, form: form, contentType: type, bytes: data.count, sha256: Digest.sha256Hex(data))
        state.withLock { state in
            state.stats.receivedImages.append(received)
            if state.stats.receivedImages.count > Self.receivedKept { state.stats.receivedImages.removeFirst() }
        }
        return nil
    }
}
