import Foundation
import NIOCore
import NIOHTTP1
import XCTest

@testable import GenGateObjects

/// AWS Signature Version 4 against AWS's published vectors: the SigV4 test suite
/// (get-vanilla, get-vanilla-query-order-key-case, get-utf8) and the S3 examples of "Signature
/// Calculations for the Authorization Header" and "Query String Authentication".
final class SigV4Tests: XCTestCase {
    /// 2015-08-30T12:36:00Z, the test suite's time.
    let suiteTime = Date(timeIntervalSince1970: 1_440_938_160)
    /// 2013-05-24T00:00:00Z, the S3 examples' time.
    let s3Time = Date(timeIntervalSince1970: 1_369_353_600)
    let suite = SigV4(
        credentials: .init(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        region: "us-east-1", service: "service")
    let s3 = SigV4(
        credentials: .init(
            accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        region: "us-east-1")

    func authorization(_ headers: [(String, String)]) -> String {
        headers.first { $0.0 == "Authorization" }?.1 ?? ""
    }

    func testTheSigV4TestSuite() {
        let cases: [(String, [(String, String)], String)] = [
            ("/", [], "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),  // get-vanilla
            // get-vanilla-query-order-key-case: the query is sorted before it is signed
            (
                "/", [("Param2", "value2"), ("Param1", "value1")],
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            ),
            // get-utf8
            ("/" + SigV4.encode("ሴ"), [], "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
        ]
        for (path, query, signature) in cases {
            let headers = suite.sign(
                .init(method: "GET", host: "example.amazonaws.com", path: path, query: query),
                payloadHash: SigV4.emptyPayloadHash, at: suiteTime)
            XCTAssertEqual(
                authorization(headers),
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                    + "SignedHeaders=host;x-amz-date, Signature=\(signature)", path)
            XCTAssertTrue(headers.contains { $0 == ("x-amz-date", "20150830T123600Z") })
        }
    }

    func testTheS3HeaderExamples() {
        // GET Object, with a Range header.
        let get = s3.sign(
            .init(
                method: "GET", host: "examplebucket.s3.amazonaws.com", path: "/test.txt",
                headers: [("Range", "bytes=0-9")]),
            payloadHash: SigV4.emptyPayloadHash, at: s3Time)
        XCTAssertEqual(
            authorization(get),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                + "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        XCTAssertTrue(get.contains { $0 == ("x-amz-content-sha256", SigV4.emptyPayloadHash) })

        // PUT Object: a signed payload, and a key whose `$` is encoded once.
        let body = "Welcome to Amazon S3."
        let payloadHash = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        XCTAssertEqual(S3ObjectStore.sha256Hex(.init(string: body)), payloadHash)
        let put = s3.sign(
            .init(
                method: "PUT", host: "examplebucket.s3.amazonaws.com", path: "/" + SigV4.encode("test$file.text"),
                headers: [("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")]),
            payloadHash: payloadHash, at: s3Time)
        XCTAssertTrue(
            authorization(put).hasSuffix(
                "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
                    + "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"))

        // GET Bucket (list objects), with a query.
        let list = s3.sign(
            .init(
                method: "GET", host: "examplebucket.s3.amazonaws.com", path: "/",
                query: [("max-keys", "2"), ("prefix", "J")]),
            payloadHash: SigV4.emptyPayloadHash, at: s3Time)
        XCTAssertTrue(
            authorization(list).hasSuffix("Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"))

        // GET Bucket lifecycle: a query parameter without a value.
        let lifecycle = s3.sign(
            .init(method: "GET", host: "examplebucket.s3.amazonaws.com", path: "/", query: [("lifecycle", "")]),
            payloadHash: SigV4.emptyPayloadHash, at: s3Time)
        XCTAssertTrue(
            authorization(lifecycle).hasSuffix(
                "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"))
    }

    func testTheS3PresignedURLExample() {
        let query = s3.presignedQuery(
            .init(method: "GET", host: "examplebucket.s3.amazonaws.com", path: "/test.txt"), expires: 86_400,
            at: s3Time)
        XCTAssertEqual(
            query,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
                + "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
                + "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    }

    func testTemporaryCredentialsSignTheirToken() {
        var withToken = s3
        withToken.credentials.sessionToken = "the-token"
        let headers = withToken.sign(
            .init(method: "GET", host: "examplebucket.s3.amazonaws.com", path: "/test.txt"),
            payloadHash: SigV4.emptyPayloadHash, at: s3Time)
        XCTAssertTrue(headers.contains { $0 == ("x-amz-security-token", "the-token") })
        XCTAssertTrue(authorization(headers).contains("x-amz-security-token"))
        let query = withToken.presignedQuery(
            .init(method: "GET", host: "examplebucket.s3.amazonaws.com", path: "/test.txt"), expires: 60, at: s3Time)
        XCTAssertTrue(query.contains("X-Amz-Security-Token=the-token"))
    }

    func testEncoding() {
        XCTAssertEqual(SigV4.encode("a b+c/d~e_f.g-h"), "a%20b%2Bc%2Fd~e_f.g-h")
        XCTAssertEqual(
            SigV4.encode("outputs/2026/11/23/gen_1-0.png", keepSlash: true), "outputs/2026/11/23/gen_1-0.png")
        XCTAssertEqual(SigV4.encode("ключ"), "%D0%BA%D0%BB%D1%8E%D1%87")
        XCTAssertEqual(SigV4.canonical(query: [("b", "2"), ("a", "x y"), ("a", "+")]), "a=%2B&a=x%20y&b=2")
        XCTAssertEqual(
            SigV4.canonical(headers: [("X-Amz-Date", "  1 "), ("My-Header", "a   b  c")]).block,
            "my-header:a b c\nx-amz-date:1\n")
    }

    func testS3AddressingAndSettings() throws {
        let credentials = AWSCredentials(accessKeyID: "AKID", secretAccessKey: "secret")
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("s3-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let pathStyle = try S3ObjectStore(
            settings: .init(
                endpoint: "http://127.0.0.1:9000/", bucket: "outputs", region: "eu-west-1", pathStyle: true,
                credentials: credentials),
            scratch: scratch)
        XCTAssertEqual(pathStyle.host, "127.0.0.1:9000")
        XCTAssertEqual(try pathStyle.objectPath("a/b c.png"), "/outputs/a/b%20c.png")
        let url = try XCTUnwrap(pathStyle.temporaryURL(key: "a/b.png", now: s3Time))
        XCTAssertTrue(url.hasPrefix("http://127.0.0.1:9000/outputs/a/b.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&"), url)
        XCTAssertTrue(url.contains("%2Feu-west-1%2Fs3%2Faws4_request"))
        XCTAssertNil(pathStyle.publicURL(key: "a/b.png"))

        let hosted = try S3ObjectStore(
            settings: .init(
                endpoint: S3Settings.awsEndpoint(region: "us-east-1"), bucket: "my.bucket-1", region: "us-east-1",
                pathStyle: false, publicURL: "https://cdn.example.com/", credentials: credentials),
            scratch: scratch)
        XCTAssertEqual(hosted.host, "my.bucket-1.s3.us-east-1.amazonaws.com")
        XCTAssertEqual(try hosted.objectPath("x.png"), "/x.png")
        XCTAssertEqual(hosted.publicURL(key: "outputs/a b.png"), "https://cdn.example.com/outputs/a%20b.png")

        for key in ["", "/abs", "../up", "a//b", "a/./b", ".hidden"] {
            XCTAssertThrowsError(try hosted.objectPath(key), key)
        }
        for bucket in ["ab", "Upper", "under_score", "-dash", "dots..twice", String(repeating: "a", count: 64)] {
            XCTAssertThrowsError(
                try S3ObjectStore(
                    settings: .init(
                        endpoint: "https://s3.example.com", bucket: bucket, region: "x", pathStyle: true,
                        credentials: credentials),
                    scratch: scratch), bucket)
        }
        XCTAssertThrowsError(
            try S3ObjectStore(
                settings: .init(
                    endpoint: "ftp://host", bucket: "outputs", region: "x", pathStyle: true, credentials: credentials),
                scratch: scratch))
        XCTAssertThrowsError(
            try S3ObjectStore(
                settings: .init(
                    endpoint: "https://host", bucket: "outputs", region: "x", pathStyle: true, partSize: 1 << 20,
                    credentials: credentials),
                scratch: scratch))
        XCTAssertThrowsError(
            try S3ObjectStore(
                settings: .init(
                    endpoint: "https://host", bucket: "outputs", region: "x", pathStyle: true, partSize: 16 << 20,
                    memory: 8 << 20, credentials: credentials),
                scratch: scratch), "memory for less than one part")

        // Requests go to the service where GenGate reaches it; presigned URLs point where
        // clients reach it, signed for that host.
        let behindAName = try S3ObjectStore(
            settings: .init(
                endpoint: "http://minio:9000", bucket: "outputs", region: "us-east-1", pathStyle: true,
                urlEndpoint: "https://files.example.com/s3", credentials: credentials),
            scratch: scratch)
        XCTAssertEqual(behindAName.host, "minio:9000")
        let outside = try XCTUnwrap(behindAName.temporaryURL(key: "a/b.png", now: s3Time))
        XCTAssertTrue(outside.hasPrefix("https://files.example.com/s3/outputs/a/b.png?X-Amz-Algorithm="), outside)
        let signedFor = SigV4(credentials: credentials, region: "us-east-1").presignedQuery(
            .init(method: "GET", host: "files.example.com", path: "/s3/outputs/a/b.png"), expires: 3_600, at: s3Time)
        XCTAssertTrue(outside.hasSuffix(signedFor), "signed for the host the client asks")
        XCTAssertThrowsError(
            try S3ObjectStore(
                settings: .init(
                    endpoint: "http://minio:9000", bucket: "outputs", region: "x", pathStyle: true,
                    urlEndpoint: "files.example.com", credentials: credentials),
                scratch: scratch), "a URL endpoint without a scheme")
        let literal = try S3ObjectStore(
            settings: .init(
                endpoint: "http://[::1]:9000", bucket: "outputs", region: "x", pathStyle: true, credentials: credentials
            ),
            scratch: scratch)
        XCTAssertEqual(literal.host, "[::1]:9000", "an IPv6 literal keeps its brackets")
    }

    func testS3ErrorAnswersAreExplained() throws {
        let store = try S3ObjectStore(
            settings: .init(
                endpoint: "http://127.0.0.1:9000", bucket: "outputs", region: "us-east-1", pathStyle: true,
                credentials: .init(accessKeyID: "AKID", secretAccessKey: "secret")),
            scratch: FileManager.default.temporaryDirectory.appendingPathComponent("s3-\(UUID().uuidString)"))
        func answer(_ status: HTTPResponseStatus, _ xml: String) -> S3ObjectStore.Answer {
            .init(status: status, headers: [:], body: .init(string: xml))
        }
        let refused = store.failure(
            answer(
                .forbidden,
                "<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>"
            ), doing: "PUT k")
        XCTAssertEqual(refused.code, .uploadFailed)
        XCTAssertTrue(refused.retryable, "an operator may fix credentials while the job waits")
        XCTAssertTrue(refused.message.contains("InvalidAccessKeyId"), refused.message)
        XCTAssertTrue(refused.message.contains("AWS_ACCESS_KEY_ID"), refused.message)
        let malformed = store.failure(
            answer(.badRequest, "<Error><Code>EntityTooSmall</Code><Message>small</Message></Error>"), doing: "x")
        XCTAssertFalse(malformed.retryable)
        let slow = store.failure(answer(.serviceUnavailable, "<Error><Code>SlowDown</Code></Error>"), doing: "x")
        XCTAssertTrue(slow.retryable)
        XCTAssertEqual(S3XML.value(of: "UploadId", in: .init(string: "<a><UploadId>x&amp;y</UploadId></a>")), "x&y")
    }
}
