import Crypto
import Foundation

/// Webhook signatures in the Standard Webhooks form (https://www.standardwebhooks.com), which
/// Replicate uses: headers `webhook-id`, `webhook-timestamp` (Unix seconds) and
/// `webhook-signature` (space-separated `v1,<base64>` entries, several during a key rotation),
/// each an HMAC-SHA256 of `<id>.<timestamp>.<body>` keyed by the secret, written `whsec_<base64>`.
public enum StandardWebhooks {
    /// How far a timestamp may be from now (the specification's five minutes): older deliveries
    /// are refused as replays.
    public static let tolerance: TimeInterval = 300

    /// The key bytes of a `whsec_…` secret, or nil when it is not one.
    public static func key(secret: String) -> [UInt8]? {
        let encoded = secret.hasPrefix("whsec_") ? String(secret.dropFirst("whsec_".count)) : secret
        guard let data = Data(base64Encoded: encoded), !data.isEmpty else { return nil }
        return Array(data)
    }

    /// The `v1,<base64>` signature of a delivery.
    public static func sign(key: [UInt8], id: String, timestamp: Int, body: Data) -> String {
        var message = Data("\(id).\(timestamp).".utf8)
        message.append(body)
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key))
        return "v1," + Data(mac).base64EncodedString()
    }

    public enum Failure: Error, Equatable {
        case missingHeaders
        case stale
        case mismatch
    }

    /// Checks a delivery's headers (by lowercase name) and body against `key`; throws why not.
    public static func verify(key: [UInt8], headers: [String: String], body: Data, now: Date = Date()) throws {
        guard let id = headers["webhook-id"], let stamp = headers["webhook-timestamp"].flatMap({ Int($0) }),
            let signatures = headers["webhook-signature"]
        else { throw Failure.missingHeaders }
        guard abs(now.timeIntervalSince1970 - Double(stamp)) <= tolerance else { throw Failure.stale }
        let expected = sign(key: key, id: id, timestamp: stamp, body: body)
        for candidate in signatures.split(separator: " ") where candidate.hasPrefix("v1,") {
            if Digest.constantTimeEqual(String(candidate), expected) { return }
        }
        throw Failure.mismatch
    }
}
