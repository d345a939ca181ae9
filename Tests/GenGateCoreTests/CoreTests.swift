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
            retryable, ["provider_error", "provider_timeout", "provider_unavailable", "rate_limited", "upload_failed"])
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
}
