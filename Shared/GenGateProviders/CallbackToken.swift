import Crypto
import Foundation
import GenGateCore

/// The token in a callback URL: an HMAC of the provider, the job and the attempt, keyed by a
/// hash of the provider's own credentials, so every GenGate process with those credentials
/// (on any host) makes and checks the same tokens, and no one without them can forge a callback.
public struct CallbackToken: Sendable {
    let key: SymmetricKey

    /// The key of a provider's tokens, from its credentials' values.
    public init(credentials: [String]) {
        var material = Data("gengate callback token\u{0}".utf8)
        for value in credentials { material.append(contentsOf: Array(value.utf8) + [0]) }
        key = SymmetricKey(data: SHA256.hash(data: material))
    }

    public func make(provider: String, generationID: String, attempt: Int) -> String {
        mac("\(provider)/\(generationID)/\(attempt)")
    }

    /// The secret a provider that echoes one (Flux) is given for an attempt: not the URL's token,
    /// so a URL seen in a log does not also give away the secret.
    public func secret(provider: String, generationID: String, attempt: Int) -> String {
        mac("secret/\(provider)/\(generationID)/\(attempt)")
    }

    func mac(_ text: String) -> String {
        Digest.hex(HMAC<SHA256>.authenticationCode(for: Data(text.utf8), using: key).prefix(20))
    }

    /// Whether `token` is the one for these, compared in constant time.
    public func verify(_ token: String, provider: String, generationID: String, attempt: Int) -> Bool {
        Digest.constantTimeEqual(token, make(provider: provider, generationID: generationID, attempt: attempt))
    }

    /// The callback URL of an attempt under GenGate's public base URL.
    public func url(base: String, provider: String, generationID: String, attempt: Int) -> String {
        "\(base)/v1/callbacks/\(provider)/\(generationID)/\(attempt)/"
            + make(provider: provider, generationID: generationID, attempt: attempt)
    }
}
