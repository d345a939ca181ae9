import Foundation
import XCTest

@testable import GenGateCore

final class OutboundURLTests: XCTestCase {
    let strict = OutboundURLPolicy(allowPrivate: false)

    func testPrivateLoopbackAndLinkLocalAddressesAreRefused() {
        for url in [
            "http://127.0.0.1/hook", "http://127.1.2.3:8080/", "http://10.0.0.5/x", "http://172.20.1.1/x",
            "http://192.168.1.10/x", "http://169.254.169.254/latest/meta-data", "http://100.64.0.1/",
            "http://0.0.0.0/", "http://[::1]/x", "http://[fe80::1]/x", "http://[fd00::5]/x",
            "http://[::ffff:127.0.0.1]/x", "http://[::ffff:10.1.1.1]/x", "http://[64:ff9b::a00:1]/x",
            "http://224.0.0.1/", "http://localhost/x", "http://LOCALHOST.:80/x", "http://db.internal/x",
            "http://printer.local/x", "http://intranet/x", "http://api.localhost/x",
        ] {
            XCTAssertNotNil(strict.problem(with: url), url)
        }
    }

    func testPublicURLsAreAllowedAndMalformedOnesExplained() {
        for url in ["https://example.com/hook", "http://93.184.216.34:8080/x", "https://[2606:4700::1111]/x"] {
            XCTAssertNil(strict.problem(with: url), url)
        }
        XCTAssertEqual(strict.problem(with: "ftp://example.com/x"), "must be an http or https URL")
        XCTAssertEqual(strict.problem(with: "not a url"), "must be an http or https URL")
        XCTAssertEqual(
            strict.problem(with: "https://user:pw@example.com/"), "must not carry credentials (user:password@)")
        XCTAssertEqual(strict.problem(with: "https:///path"), "must name a host")
        XCTAssertNotNil(strict.problem(with: "https://example.com/" + String(repeating: "a", count: 3_000)))
        XCTAssertNil(OutboundURLPolicy(allowPrivate: true).problem(with: "http://127.0.0.1:9/x"))
    }

    func testANameIsCheckedAgainAfterResolution() async throws {
        do {
            _ = try await strict.checkResolved(host: "localhost")
            XCTFail("localhost resolves to loopback")
        } catch let refused as OutboundURLRefused {
            XCTAssertTrue(refused.reason.contains("resolves to"), refused.reason)
        }
        do {
            _ = try await strict.checkResolved(host: "no-such-host.invalid")
            XCTFail("an unknown name")
        } catch let refused as OutboundURLRefused {
            XCTAssertTrue(refused.reason.contains("does not resolve"), refused.reason)
            XCTAssertFalse(refused.final, "a name may resolve later")
        }
        let allowed = try await OutboundURLPolicy(allowPrivate: true).checkResolved(host: "localhost")
        XCTAssertNil(allowed)
        XCTAssertEqual(IPAddress("::ffff:127.0.0.1")?.isPublic, false)
        XCTAssertEqual(IPAddress("::7f00:1")?.isPublic, false, "IPv4-compatible")
        XCTAssertEqual(IPAddress("2002:7f00:1::1")?.isPublic, false, "6to4 of 127.0.0.1")
        XCTAssertEqual(IPAddress("2002:0808:0808::1")?.isPublic, true, "6to4 of 8.8.8.8")
    }

    func testAddressesClassify() {
        XCTAssertEqual(IPAddress("10.1.2.3")?.description, "10.1.2.3")
        XCTAssertEqual(IPAddress("8.8.8.8")?.isPublic, true)
        XCTAssertEqual(IPAddress("172.32.0.1")?.isPublic, true, "just past 172.16/12")
        XCTAssertEqual(IPAddress("172.31.255.255")?.isPublic, false)
        XCTAssertEqual(IPAddress("2001:db8::1")?.isPublic, false, "documentation")
        XCTAssertNil(IPAddress("example.com"))
    }

    func testSecretsSealAndOpenOnlyUnderTheirKey() throws {
        let box = try SecretBox(key: SecretBox.newKey())
        let sealed = try box.seal(Data("whsec_abc".utf8))
        XCTAssertFalse(String(decoding: sealed, as: UTF8.self).contains("whsec_abc"))
        XCTAssertEqual(try box.open(sealed), Data("whsec_abc".utf8))
        XCTAssertThrowsError(try SecretBox(key: SecretBox.newKey()).open(sealed))
        var tampered = sealed
        tampered[tampered.count - 1] ^= 1
        XCTAssertThrowsError(try box.open(tampered))
        XCTAssertThrowsError(try SecretBox(key: [1, 2, 3]))
    }

    func testNewSecretsAreStandardWebhooksSecrets() throws {
        let secret = StandardWebhooks.newSecret()
        XCTAssertTrue(secret.hasPrefix("whsec_"))
        let key = try XCTUnwrap(StandardWebhooks.key(secret: secret))
        XCTAssertEqual(key.count, 24)
        XCTAssertNotEqual(StandardWebhooks.newSecret(), secret)
        let signature = StandardWebhooks.sign(key: key, id: "msg_1", timestamp: 1_700_000_000, body: Data("{}".utf8))
        XCTAssertNoThrow(
            try StandardWebhooks.verify(
                key: key,
                headers: ["webhook-id": "msg_1", "webhook-timestamp": "1700000000", "webhook-signature": signature],
                body: Data("{}".utf8), now: Date(timeIntervalSince1970: 1_700_000_010)))
    }

    func testWebhookEventsOfEventTypes() {
        XCTAssertEqual(WebhookEvent.of(.generationStarted), .start)
        XCTAssertEqual(WebhookEvent.of(.generationCancelled), .completed)
        XCTAssertEqual(WebhookEvent.of(.generationFailed), .completed)
        XCTAssertNil(WebhookEvent.of(.generationCreated))
        XCTAssertNil(WebhookEvent.of(.generationStreamChunk))
    }
}
