import Foundation
import GenGateCore
import XCTest

/// The OpenAPI document: valid (openapi-spec-validator), complete (every route the code
/// registers), the one api-ingress serves, and true (schemathesis fuzzes a running system with it
/// and finds no server error and no answer that breaks it).
final class OpenAPITests: XCTestCase {
    static let document = EventSchemaTests.root.appendingPathComponent("docs/openapi.json")

    func testTheDocumentIsValidOpenAPI31() throws {
        let result = try Python.inline(
            "import json, sys; from openapi_spec_validator import validate; "
                + "validate(json.load(open(sys.argv[1]))); print('valid')",
            arguments: [Self.document.path])
        XCTAssertEqual(result.status, 0, result.output)
        let text = try String(contentsOf: Self.document, encoding: .utf8)
        XCTAssertTrue(text.contains(#""openapi": "3.1.0""#))
    }

    /// Every route registered in api-ingress's source is in the document, and nothing else is.
    func testEveryRouteIsDocumented() throws {
        let sources = EventSchemaTests.root.appendingPathComponent("Services/api-ingress")
        var routes: Set<String> = []
        let pattern = try NSRegularExpression(pattern: #"(group|router)\.(get|post|delete|put|patch)\("([^"]+)"\)"#)
        for file in try FileManager.default.contentsOfDirectory(atPath: sources.path) where file.hasSuffix(".swift") {
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            for match in pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                let scope = String(text[Range(match.range(at: 1), in: text)!])
                let method = String(text[Range(match.range(at: 2), in: text)!])
                var path = String(text[Range(match.range(at: 3), in: text)!])
                path = path.split(separator: "/").map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0) }
                    .joined(separator: "/")
                routes.insert("\(method) \(scope == "group" ? "/v1/" : "/")\(path)")
            }
        }
        let document = try JSONCoding.decode(JSONValue.self, from: Data(contentsOf: Self.document))
        guard case .object(let paths)? = document["paths"] else { return XCTFail("no paths") }
        var documented: Set<String> = []
        for (path, item) in paths {
            guard case .object(let operations) = item else { continue }
            for method in operations.keys { documented.insert("\(method) \(path)") }
        }
        XCTAssertEqual(routes.subtracting(documented), [], "routes missing from docs/openapi.json")
        XCTAssertEqual(documented.subtracting(routes), [], "documented routes the code does not have")
    }

    /// api-ingress embeds docs/openapi.json (scripts/embed-openapi): they must not drift apart.
    func testTheServedDocumentIsTheRepositorysMadeThisDeploymentsOwn() async throws {
        let swift = try String(
            contentsOf: EventSchemaTests.root.appendingPathComponent("Services/api-ingress/OpenAPIDocument.swift"),
            encoding: .utf8)
        let start = try XCTUnwrap(swift.range(of: "#\"\"\"\n"))
        let end = try XCTUnwrap(swift.range(of: "\"\"\"#", options: .backwards))
        XCTAssertEqual(
            String(swift[start.upperBound..<end.lowerBound]), try String(contentsOf: Self.document, encoding: .utf8),
            "run scripts/embed-openapi")

        let system = try await GenGateSystem.start()
        defer { system.stop() }
        let served = try await system.request(.GET, "/openapi.json", key: .some(nil))
        XCTAssertEqual(served.status, 200)
        let model = served.json["components"]?["schemas"]?["GenerationRequest"]?["properties"]?["model"]
        XCTAssertEqual(model?["enum"], .array(["sim/image", "sim/text", "sim/video"].map(JSONValue.string)))
        let chat = served.json["paths"]?["/v1/chat/completions"]?["post"]?["requestBody"]?["content"]?[
            "application/json"]?["schema"]?["properties"]?["model"]
        XCTAssertEqual(chat?["enum"], .array([.string("sim/text")]))
        XCTAssertEqual(served.json["servers"]?.arrayValue?.first?["url"], .string(system.baseURL))
    }

    /// schemathesis (property-based, from PyPI) against a running system: no 5xx, every answer
    /// as documented (status, content type, headers, body schema), and every request the
    /// document calls valid accepted. The endless event streams are left out (they have tests of
    /// their own), and so are providers' callbacks (they need a provider's proof).
    func testTheFuzzerFindsNoServerErrorAndNoAnswerThatBreaksTheDocument() async throws {
        let system = try await GenGateSystem.start(environment: ["GENGATE_SIM_LATENCY_MS": "100"])
        defer { system.stop() }
        let examples = ProcessInfo.processInfo.environment["GENGATE_FUZZ_EXAMPLES"] ?? "15"
        let started = ContinuousClock.now
        let result = try Python.inline(
            "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
            arguments: [
                "run", system.baseURL + "/openapi.json", "-H", "Authorization: Bearer \(system.adminKey)",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
                "--max-examples", examples, "--seed", "7", "--exclude-path-regex", "(/events$|/callbacks/)",
                "--request-timeout", "70", "--no-color",
            ],
            // schemathesis keeps a cache where it runs: not in the repository.
            in: FileManager.default.temporaryDirectory)
        print("schemathesis (\(examples) examples an operation) in \(ContinuousClock.now - started)")
        let summary = result.output.split(separator: "\n").suffix(40).joined(separator: "\n")
        XCTAssertEqual(result.status, 0, summary)
        print(summary)
    }
}
