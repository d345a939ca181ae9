import Foundation
import XCTest
@testable import GenGateCore

final class IdentifierTests: XCTestCase {
    func testIdsHavePrefixFixedLengthAndSortByTime() {
        let early = Identifier.make("gen", at: Date(timeIntervalSince1970: 1_700_000_000))
        let late = Identifier.make("gen", at: Date(timeIntervalSince1970: 1_700_000_001))
        XCTAssertTrue(early.hasPrefix("gen_"))
        XCTAssertEqual(early.count, 4 + 26)
        XCTAssertLessThan(early, late, "ids must sort by creation time")
        XCTAssertNotEqual(Identifier.make("gen"), Identifier.make("gen"))
    }

    func testRandomTokenUsesOnlyBase32Characters() {
        let token = Identifier.randomToken(count: 40)
        XCTAssertEqual(token.count, 40)
        XCTAssertTrue(token.allSatisfy { "0123456789abcdefghjkmnpqrstvwxyz".contains($0) })
    }
}

final class ErrorTaxonomyTests: XCTestCase {
    func testRetryableClasses() {
        let retryable = ErrorCode.allCases.filter(\.isRetryable).map(\.rawValue).sorted()
        XCTAssertEqual(
            retryable,
            [
                "provider_error", "provider_timeout", "provider_unavailable", "rate_limited", "unavailable",
                "upload_failed",
            ])
        XCTAssertEqual(ErrorCode.allCases.filter(\.isJobClass).count, 15)
    }

    /// docs/ERRORS.md lists every code with its HTTP status and whether it is retryable, as the
    /// code says: the one documented set.
    func testTheErrorsDocumentListsEveryCodeAsItIs() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("docs/ERRORS.md"), encoding: .utf8)
        var listed: [String: (status: Int, retryable: Bool, jobClass: Bool)] = [:]
        var inJobClasses = false
        for line in text.split(separator: "\n") {
            if line.hasPrefix("## ") { inJobClasses = line == "## Job classes" }
            guard line.hasPrefix("| `") else { continue }
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 3, let status = Int(cells[1]) else { continue }
            listed[cells[0].trimmingCharacters(in: CharacterSet(charactersIn: "`"))] = (
                status, cells[2] == "yes", inJobClasses
            )
        }
        for code in ErrorCode.allCases {
            let row = try XCTUnwrap(listed[code.rawValue], "\(code.rawValue) is not in docs/ERRORS.md")
            XCTAssertEqual(row.status, code.httpStatus, code.rawValue)
            XCTAssertEqual(row.retryable, code.isRetryable, code.rawValue)
            XCTAssertEqual(row.jobClass, code.isJobClass, "\(code.rawValue) is in the wrong section")
        }
        XCTAssertEqual(listed.count, ErrorCode.allCases.count, "docs/ERRORS.md lists a code that does not exist")
    }

    func testErrorRoundTripsThroughJSON() throws {
        let error = GenGateError(.rateLimited, "slow down", retryAfter: 12)
        let data = try JSONCoding.encode(error)
        XCTAssertEqual(
            String(decoding: data, as: UTF8.self),
            #"{"code":"rate_limited","message":"slow down","retry_after":12,"retryable":true}"#)
        XCTAssertEqual(try JSONCoding.decoder().decode(GenGateError.self, from: data), error)
    }

    func testWrapKeepsGenGateErrorsAndHidesOthersAsInternal() {
        let own = GenGateError(.contentPolicy, "nope")
        XCTAssertEqual(GenGateError.wrap(own), own)
        struct Other: Error {}
        XCTAssertEqual(GenGateError.wrap(Other()).code, .internalError)
        XCTAssertFalse(GenGateError.wrap(Other()).retryable)
    }
}

final class JSONTests: XCTestCase {
    func testJSONValueRoundTrip() throws {
        let text = #"{"a":[1,2.5,"x",true,null],"b":{"c":"d"}}"#
        let value = try JSONCoding.decoder().decode(JSONValue.self, from: Data(text.utf8))
        XCTAssertEqual(value["b"]?["c"]?.stringValue, "d")
        XCTAssertEqual(String(decoding: try JSONCoding.encode(value), as: UTF8.self), text)
    }

    func testIntValueRefusesFractionsAndHugeNumbers() {
        XCTAssertEqual(JSONValue.number(4).intValue, 4)
        XCTAssertNil(JSONValue.number(4.5).intValue)
        XCTAssertNil(JSONValue.number(1e300).intValue)
        XCTAssertNil(JSONValue.string("4").intValue)
    }

    func testTimestampsAreUTCWithMilliseconds() {
        let date = Date(timeIntervalSince1970: 1_795_000_000.123)
        let text = Timestamp.format(date)
        XCTAssertEqual(text, "2026-11-18T11:06:40.123Z")
        XCTAssertEqual(Timestamp.parse(text)!.timeIntervalSince1970, date.timeIntervalSince1970, accuracy: 0.001)
        XCTAssertNotNil(Timestamp.parse("2026-11-18T11:06:40Z"))
        XCTAssertNil(Timestamp.parse("yesterday"))
    }

    /// The hand-written form agrees with Foundation's ISO 8601 style, both ways, across leap
    /// years, month ends, dates before 1970 and the far future.
    func testTimestampsAgreeWithFoundation() {
        var generator = SystemRandomNumberGenerator()
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        var dates = [-86_400_000.5, -1, 0, 951_782_400_000, 951_868_799_999, 4_107_542_400_000, 253_402_300_799_999]
            .map { Date(timeIntervalSince1970: $0 / 1_000) }
        for _ in 0..<2_000 {
            dates.append(
                Date(
                    timeIntervalSince1970: Double(
                        Int64.random(in: -2_000_000_000_000...9_000_000_000_000, using: &generator)) / 1_000))
        }
        for date in dates {
            // Foundation truncates fractions (x.123 held as x.12299… prints .122), so it is asked
            // for the whole second only; the milliseconds are checked by arithmetic.
            let millis = Int64((date.timeIntervalSince1970 * 1_000).rounded())
            let second = Double(millis >= 0 ? millis / 1_000 : (millis - 999) / 1_000)
            let fraction = millis - Int64(second) * 1_000
            let expected =
                Date(timeIntervalSince1970: second).formatted(style).dropLast(5)
                + "." + String(repeating: "0", count: 3 - String(fraction).count) + String(fraction) + "Z"
            let text = Timestamp.format(date)
            XCTAssertEqual(text, String(expected), "\(date.timeIntervalSince1970)")
            XCTAssertEqual(
                Timestamp.parse(text)?.timeIntervalSince1970 ?? .nan, Double(millis) / 1_000, accuracy: 0.0005)
        }
        for invalid in [
            "2026-02-30T00:00:00.000Z", "2026-13-01T00:00:00.000Z", "2026-11-18T24:00:00.000Z",
            "2026-11-18T11:06:4x.123Z",
        ] {
            XCTAssertNil(Timestamp.parseFixed(invalid), invalid)
        }
        XCTAssertEqual(
            Timestamp.parse("2024-02-29T23:59:59.999Z")?.timeIntervalSince1970 ?? 0, 1_709_251_199.999, accuracy: 0.0005
        )
    }

    func testMissingOutputIndexes() {
        var generation = Generation(
            id: "gen_x", ownerKeyID: "key_x", request: GenerationRequest(model: "sim/image", prompt: "p", n: 4),
            provider: "sim",
            status: .uploading, version: 1, progress: 0, attempts: 1, error: nil, providerTaskID: nil, leaseOwner: nil,
            leaseExpiresAt: nil, nextActionAt: nil, deadlineAt: Date(), createdAt: Date(), updatedAt: Date(),
            phaseTimes: [:],
            outputs: [
                Output(
                    index: 1, source: "s", contentType: "image/png", objectKey: "k", bytes: 1, sha256: "h",
                    storedAt: Date()),
                Output(index: 2, source: "s", contentType: "image/png"),
            ])
        XCTAssertEqual(generation.missingOutputIndexes, [0, 2, 3])
        generation.outputs = []
        XCTAssertEqual(generation.missingOutputIndexes, [0, 1, 2, 3])
    }

    /// The Standard Webhooks specification's own example, and what verification refuses.
    func testStandardWebhooksSignaturesMatchThePublishedExample() throws {
        let key = try XCTUnwrap(StandardWebhooks.key(secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
        let body = Data(#"{"test": 2432232314}"#.utf8)
        let signature = StandardWebhooks.sign(
            key: key, id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330, body: body)
        XCTAssertEqual(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        let sent = Date(timeIntervalSince1970: 1_614_265_330)
        var headers = [
            "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
            "webhook-signature": "v1,bm9wZQ== \(signature)",
        ]
        XCTAssertNoThrow(try StandardWebhooks.verify(key: key, headers: headers, body: body, now: sent))
        XCTAssertThrowsError(try StandardWebhooks.verify(key: key, headers: headers, body: body, now: sent + 301)) {
            XCTAssertEqual($0 as? StandardWebhooks.Failure, .stale, "a replay after five minutes")
        }
        XCTAssertThrowsError(
            try StandardWebhooks.verify(key: key, headers: headers, body: Data(#"{"test": 1}"#.utf8), now: sent)
        ) { XCTAssertEqual($0 as? StandardWebhooks.Failure, .mismatch) }
        headers["webhook-id"] = nil
        XCTAssertThrowsError(try StandardWebhooks.verify(key: key, headers: headers, body: body, now: sent)) {
            XCTAssertEqual($0 as? StandardWebhooks.Failure, .missingHeaders)
        }
        XCTAssertNil(StandardWebhooks.key(secret: "whsec_!!"))
    }
}
