import Foundation

/// The signature of a link that works without an API key for a while (an output's, an input
/// image's): an HMAC of what it names and its expiry, under a key derived from the master key
/// for the link's purpose, in URL-safe base64.
public enum SignedLink {
    public static func signature(box: SecretBox, purpose: String, message: String) -> String {
        box.authenticationCode(Data(message.utf8), purpose: purpose).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
