import Foundation
import GenGateCore

/// Links to stored outputs that work without an API key for a while: `/files/{id}/{index}` with
/// an expiry and an HMAC of both (under a key derived from the master key). OpenAI-style image
/// answers hand these out as `url`, as OpenAI's own are plain, expiring links.
struct OutputLinks: Sendable {
    let box: SecretBox
    let baseURL: String
    /// How long a link works.
    let lifetime: TimeInterval

    func link(generationID: String, index: Int, now: Date = Date()) -> String {
        let expires = Int(now.addingTimeInterval(lifetime).timeIntervalSince1970)
        return
            "\(baseURL)/files/\(generationID)/\(index)?expires=\(expires)&signature=\(signature(generationID, index, expires))"
    }

    func signature(_ generationID: String, _ index: Int, _ expires: Int) -> String {
        SignedLink.signature(box: box, purpose: "output links", message: "\(generationID)/\(index)/\(expires)")
    }

    /// Whether a link's parts are one this deployment made and it has not expired.
    func isValid(generationID: String, index: Int, expires: String?, signature given: String?, now: Date = Date())
        -> Bool
    {
        guard let expires = expires.flatMap(Int.init), let given, Double(expires) >= now.timeIntervalSince1970 else {
            return false
        }
        return Digest.constantTimeEqual(given, signature(generationID, index, expires))
    }
}
