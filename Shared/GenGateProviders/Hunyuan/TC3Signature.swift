import Crypto
import Foundation
import GenGateCore

/// Tencent Cloud API 3.0's request signature, TC3-HMAC-SHA256
/// (https://www.tencentcloud.com/document/api/1021/34193), written here because no Swift
/// library we depend on speaks it; the published example is its test vector, and Tencent's own
/// Python SDK signs what the Hunyuan simulator verifies with it. Used to sign (the adapter) and to
/// verify (the simulator).
public struct TC3Signature: Sendable, Equatable {
    public var secretID: String
    public var secretKey: String
    /// The product, as in the host name and the credential scope: `hunyuan`.
    public var service: String

    public init(secretID: String, secretKey: String, service: String) {
        self.secretID = secretID
        self.secretKey = secretKey
        self.service = service
    }

    /// What is signed: the request as the server will see it.
    public struct Request: Sendable {
        public var method: String
        public var path: String
        /// For GET; empty for POST.
        public var query: String
        /// The signed headers, by lowercase name (at least `content-type` and `host`).
        public var headers: [String: String]
        public var payload: [UInt8]
        public var timestamp: Int

        public init(
            method: String, path: String = "/", query: String = "", headers: [String: String], payload: [UInt8],
            timestamp: Int
        ) {
            self.method = method
            self.path = path
            self.query = query
            self.headers = headers
            self.payload = payload
            self.timestamp = timestamp
        }
    }

    /// `YYYY-MM-DD`, the UTC day of a Unix timestamp.
    public static func day(of timestamp: Int) -> String {
        String(Timestamp.format(Date(timeIntervalSince1970: Double(timestamp))).prefix(10))
    }

    /// The canonical request: method, path, query, the headers (lowercase name, `:`, trimmed
    /// value, each ending in a newline, sorted), their names, and the payload's SHA-256.
    static func canonicalRequest(_ request: Request) -> (text: String, signedHeaders: String) {
        let names = request.headers.keys.map { $0.lowercased() }.sorted()
        let headers = names.map { name in
            "\(name):\((request.headers[name] ?? "").trimmingCharacters(in: .whitespaces))\n"
        }.joined()
        let signed = names.joined(separator: ";")
        let text = [
            request.method, request.path, request.query, headers, signed, Digest.sha256Hex(request.payload),
        ].joined(separator: "\n")
        return (text, signed)
    }

    /// The hex signature of `request`.
    public func signature(_ request: Request) -> String {
        let day = Self.day(of: request.timestamp)
        let scope = "\(day)/\(service)/tc3_request"
        let stringToSign = [
            "TC3-HMAC-SHA256", String(request.timestamp), scope,
            Digest.sha256Hex(Self.canonicalRequest(request).text),
        ].joined(separator: "\n")
        func hmac(_ key: some ContiguousBytes, _ message: String) -> [UInt8] {
            Array(HMAC<SHA256>.authenticationCode(for: Data(message.utf8), using: SymmetricKey(data: key)))
        }
        let signing = hmac(hmac(hmac(Data(("TC3" + secretKey).utf8), day), service), "tc3_request")
        return Digest.hex(hmac(signing, stringToSign))
    }

    /// The `Authorization` header of `request`.
    public func authorization(_ request: Request) -> String {
        let day = Self.day(of: request.timestamp)
        return "TC3-HMAC-SHA256 Credential=\(secretID)/\(day)/\(service)/tc3_request, "
            + "SignedHeaders=\(Self.canonicalRequest(request).signedHeaders), Signature=\(signature(request))"
    }

    /// The parts of an `Authorization` header, or nil when it is not a TC3 one.
    public struct Parsed: Sendable, Equatable {
        public var secretID: String
        public var day: String
        public var service: String
        public var signedHeaders: [String]
        public var signature: String
    }

    public static func parse(authorization: String) -> Parsed? {
        guard authorization.hasPrefix("TC3-HMAC-SHA256 ") else { return nil }
        var fields: [String: String] = [:]
        for part in authorization.dropFirst("TC3-HMAC-SHA256 ".count).split(separator: ",") {
            let pair = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            guard pair.count == 2 else { return nil }
            fields[String(pair[0])] = String(pair[1])
        }
        guard let credential = fields["Credential"], let signed = fields["SignedHeaders"],
            let signature = fields["Signature"]
        else { return nil }
        let scope = credential.split(separator: "/").map(String.init)
        guard scope.count == 4, scope[3] == "tc3_request" else { return nil }
        return Parsed(
            secretID: scope[0], day: scope[1], service: scope[2],
            signedHeaders: signed.split(separator: ";").map(String.init), signature: signature)
    }
}
