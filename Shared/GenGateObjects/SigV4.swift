import Crypto
import Foundation
import GenGateCore

/// AWS credentials: an access key and its secret, and a session token with temporary ones.
public struct AWSCredentials: Sendable, Equatable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    /// The standard `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`; nil
    /// unless both of the first two are set.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment)
        -> AWSCredentials?
    {
        guard let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty,
            let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty
        else { return nil }
        let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        return AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
    }
}

/// AWS Signature Version 4 (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html),
/// in an `Authorization` header or in a presigned URL's query. Written here because no Swift
/// library this package depends on signs AWS requests (Soto would bring a whole SDK for one
/// algorithm); AWS's published examples are its test vectors, and a real S3-compatible server
/// (moto, which checks signatures with botocore) verifies what it signs in the tests.
///
/// Paths are encoded once, as S3 wants (other services encode twice); the S3 store is its user.
public struct SigV4: Sendable {
    public var credentials: AWSCredentials
    public var region: String
    public var service: String

    public init(credentials: AWSCredentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// What is signed: a request as the server will see it.
    public struct Request: Sendable {
        public var method: String
        /// The host as sent in `Host` (with the port unless it is the scheme's default).
        public var host: String
        /// The path, already encoded (`encode(_:keepSlash: true)` of each key): it is signed as is.
        public var path: String
        /// Query parameters, not encoded.
        public var query: [(String, String)]
        /// Headers to sign besides `host` (and the `x-amz-*` ones `sign` adds).
        public var headers: [(String, String)]

        public init(
            method: String, host: String, path: String, query: [(String, String)] = [], headers: [(String, String)] = []
        ) {
            self.method = method
            self.host = host
            self.path = path
            self.query = query
            self.headers = headers
        }
    }

    /// The SHA-256 of an empty payload.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"

    /// The headers to send with `request`: its own, `x-amz-date`, `x-amz-content-sha256` (S3
    /// wants it on every request), `x-amz-security-token` with temporary credentials, and
    /// `Authorization`. `payloadHash` is the hex SHA-256 of the body.
    public func sign(_ request: Request, payloadHash: String, at date: Date) -> [(String, String)] {
        let stamp = Self.stamp(date)
        var headers = request.headers
        headers.append(("x-amz-date", stamp.time))
        if service == "s3" { headers.append(("x-amz-content-sha256", payloadHash)) }
        if let token = credentials.sessionToken { headers.append(("x-amz-security-token", token)) }
        let (canonicalHeaders, signedHeaders) = Self.canonical(headers: headers + [("host", request.host)])
        let canonicalRequest = [
            request.method, request.path, Self.canonical(query: request.query), canonicalHeaders, signedHeaders,
            payloadHash,
        ].joined(separator: "\n")
        let signature = self.signature(of: canonicalRequest, stamp: stamp)
        headers.append(
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope(stamp.day)), "
                    + "SignedHeaders=\(signedHeaders), Signature=\(signature)"
            ))
        return headers
    }

    /// The query of a presigned URL for `request` (only `host` signed, the payload unsigned),
    /// good for `expires` seconds from `date` (S3 allows 1 s to 7 days).
    public func presignedQuery(_ request: Request, expires: Int, at date: Date) -> String {
        let stamp = Self.stamp(date)
        var query = request.query
        query.append(("X-Amz-Algorithm", "AWS4-HMAC-SHA256"))
        query.append(("X-Amz-Credential", "\(credentials.accessKeyID)/\(scope(stamp.day))"))
        query.append(("X-Amz-Date", stamp.time))
        query.append(("X-Amz-Expires", String(expires)))
        if let token = credentials.sessionToken { query.append(("X-Amz-Security-Token", token)) }
        query.append(("X-Amz-SignedHeaders", "host"))
        let (canonicalHeaders, signedHeaders) = Self.canonical(headers: [("host", request.host)])
        let canonicalQuery = Self.canonical(query: query)
        let canonicalRequest = [
            request.method, request.path, canonicalQuery, canonicalHeaders, signedHeaders, Self.unsignedPayload,
        ].joined(separator: "\n")
        return canonicalQuery + "&X-Amz-Signature=" + signature(of: canonicalRequest, stamp: stamp)
    }

    func scope(_ day: String) -> String { "\(day)/\(region)/\(service)/aws4_request" }

    func signature(of canonicalRequest: String, stamp: (day: String, time: String)) -> String {
        let stringToSign = [
            "AWS4-HMAC-SHA256", stamp.time, scope(stamp.day), Digest.sha256Hex(canonicalRequest),
        ].joined(separator: "\n")
        var key = SymmetricKey(data: Data(("AWS4" + credentials.secretAccessKey).utf8))
        for part in [stamp.day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(part.utf8), using: key)))
        }
        return Digest.hex(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: key))
    }

    /// `yyyyMMdd` and `yyyyMMdd'T'HHmmss'Z'` in UTC.
    static func stamp(_ date: Date) -> (day: String, time: String) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        func two(_ value: Int?) -> String { String(format: "%02d", value ?? 0) }
        let day = String(format: "%04d", parts.year ?? 0) + two(parts.month) + two(parts.day)
        return (day, day + "T" + two(parts.hour) + two(parts.minute) + two(parts.second) + "Z")
    }

    /// Lowercase names, sorted; values trimmed with inner runs of spaces made one; values of one
    /// name joined by commas. The canonical header block (each line ending in a newline) and the
    /// signed header list.
    static func canonical(headers: [(String, String)]) -> (block: String, names: String) {
        var byName: [String: [String]] = [:]
        for (name, value) in headers {
            let trimmed = value.trimmingCharacters(in: .whitespaces).split(
                separator: " ", omittingEmptySubsequences: true
            )
            .joined(separator: " ")
            byName[name.lowercased(), default: []].append(trimmed)
        }
        let names = byName.keys.sorted()
        let block = names.map { "\($0):\(byName[$0]!.joined(separator: ","))\n" }.joined()
        return (block, names.joined(separator: ";"))
    }

    /// Names and values encoded, sorted by name then value, joined with `&`.
    static func canonical(query: [(String, String)]) -> String {
        let encoded: [(name: String, value: String)] = query.map { (encode($0.0), encode($0.1)) }
        let sorted = encoded.sorted { $0.name == $1.name ? $0.value < $1.value : $0.name < $1.name }
        return sorted.map { $0.name + "=" + $0.value }.joined(separator: "&")
    }

    /// `A–Z a–z 0–9 - . _ ~`, by byte.
    static let unreserved: [Bool] = (0..<256).map { byte in
        let scalar = UnicodeScalar(UInt8(byte))
        return ("A"..."Z").contains(scalar) || ("a"..."z").contains(scalar) || ("0"..."9").contains(scalar)
            || "-._~".unicodeScalars.contains(scalar)
    }

    /// RFC 3986 percent-encoding as SigV4 wants it: everything but `A–Z a–z 0–9 - . _ ~` (and `/`
    /// with `keepSlash`), in uppercase hex, byte by byte of the UTF-8.
    public static func encode(_ text: String, keepSlash: Bool = false) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        let hex = Array("0123456789ABCDEF".utf8)
        for byte in text.utf8 {
            if unreserved[Int(byte)] || (keepSlash && byte == 0x2F) {
                out.unicodeScalars.append(UnicodeScalar(byte))
            } else {
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(UnicodeScalar(hex[Int(byte >> 4)]))
                out.unicodeScalars.append(UnicodeScalar(hex[Int(byte & 0x0F)]))
            }
        }
        return out
    }
}
