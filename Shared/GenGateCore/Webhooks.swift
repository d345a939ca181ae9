import Crypto
import Foundation

/// The job events an application can have delivered to its webhook (`webhook_events` on a
/// submission), as Replicate names them.
public enum WebhookEvent: String, Codable, Sendable, CaseIterable {
    /// A provider accepted the job's submission and works on it (asynchronous providers).
    case start
    /// Progress, at most one delivery per ten points.
    case progress
    /// An output is stored.
    case output
    /// The job ended: completed, failed or cancelled.
    case completed

    /// What a submission with a webhook and no `webhook_events` gets.
    public static let defaults: [WebhookEvent] = [.output, .completed]

    /// The webhook event an event of `type` is, if any.
    public static func of(_ type: EventType) -> WebhookEvent? {
        switch type {
        case .generationStarted: .start
        case .generationProgress: .progress
        case .generationOutput: .output
        case .generationCompleted, .generationFailed, .generationCancelled: .completed
        default: nil
        }
    }
}

/// Seals secrets that GenGate must read back itself (webhook signing secrets) before they reach
/// the store: AES-256-GCM under a master key kept outside the store, so a copy of the database
/// alone signs nothing.
public struct SecretBox: Sendable {
    private let key: SymmetricKey

    public init(key: [UInt8]) throws {
        guard key.count == 32 else {
            throw GenGateError(.internalError, "the master key must be 32 bytes, got \(key.count)")
        }
        self.key = SymmetricKey(data: key)
    }

    public func seal(_ plaintext: Data) throws -> Data {
        guard let combined = try AES.GCM.seal(plaintext, using: key).combined else {
            throw GenGateError(.internalError, "cannot seal a secret")
        }
        return combined
    }

    /// The plaintext, or an error if `sealed` was not sealed under this key (or was altered).
    public func open(_ sealed: Data) throws -> Data {
        try AES.GCM.open(AES.GCM.SealedBox(combined: sealed), using: key)
    }

    /// An HMAC-SHA256 of `message` under a key derived from the master key for `purpose` (HKDF),
    /// so that one master key serves several uses without one's tags being valid for another.
    public func authenticationCode(_ message: Data, purpose: String) -> Data {
        let derived = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: key, info: Data("gengate \(purpose)".utf8), outputByteCount: 32)
        return Data(HMAC<SHA256>.authenticationCode(for: message, using: derived))
    }

    /// A new random key.
    public static func newKey() -> [UInt8] {
        SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
    }
}

extension StandardWebhooks {
    /// A new signing secret in the specification's form: `whsec_` and 24 random bytes in base64.
    public static func newSecret() -> String {
        "whsec_" + Data(SymmetricKey(size: .init(bitCount: 192)).withUnsafeBytes { Array($0) }).base64EncodedString()
    }
}
