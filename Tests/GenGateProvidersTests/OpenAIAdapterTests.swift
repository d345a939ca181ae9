import Foundation
import GenGateCore
import Synchronization
import XCTest

@testable import GenGateProviderSim
@testable import GenGateProviders

/// The OpenAI adapter against the OpenAI simulator: synchronous images and streamed chat.
final class OpenAIAdapterTests: XCTestCase {
    var sim: RunningSimulator!
    var adapter: OpenAIAdapter!
    var scratch: URL!

    override func setUp() async throws {
        sim = try await RunningSimulator.start(
            "openai", key: "sk-test", knobs: try SimKnobs().applying(.object(["task_seconds": .number(0.2)])))
        adapter = OpenAIAdapter(
            key: "sk-test", endpoint: ProviderEndpoint(baseURL: sim.baseURL + "/v1", requestTimeoutSeconds: 2))
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("gg-openai-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDown() async throws {
        await adapter?.shutdown()
        sim?.stop()
        if let scratch { try? FileManager.default.removeItem(at: scratch) }
    }

    final class ChunkLog: Sendable {
        let items = Mutex<[String]>([])
    }
    let chunks = ChunkLog()

    var sink: GenerationSink {
        let scratch = scratch!
        let chunks = chunks
        return GenerationSink(
            scratchFile: { scratch.appendingPathComponent(UUID().uuidString) },
            chunk: { text in chunks.items.withLock { $0.append(text) } })
    }

    /// Scratch files left behind (the engine removes what it stores; nothing else may remain).
    var leftovers: [String] { (try? FileManager.default.contentsOfDirectory(atPath: scratch.path)) ?? [] }

    func request(
        _ model: String, outputs: [Int] = [0], prompt: String = "a lighthouse", params: [String: JSONValue] = [:]
    )
        -> ProviderRequest
    {
        ProviderRequest(
            generationID: "gen_1", clientReference: "gen_1-a\(Int.random(in: 1...1_000_000))", model: model,
            prompt: prompt, outputIndexes: outputs, seed: nil, width: 1024, height: 1024, params: params)
    }

    func testEditsSendTheirImagesAsMultipartFiles() async throws {
        let png = PNGImage.encodeRGB(width: 4, height: 4, pixels: Array(repeating: 30, count: 48))
        var edit = request("openai/gpt-image-1", outputs: [0, 1], params: ["quality": .string("low")])
        edit.images = [
            ProviderImage(delivery: .multipart, contentType: "image/png", text: "", data: png),
            ProviderImage(delivery: .multipart, contentType: "image/png", text: "", data: png),
        ]
        let made = try await adapter.generate(edit, into: sink)
        XCTAssertEqual(made.map(\.index), [0, 1])
        let received = sim.simulator.stats.receivedImages
        XCTAssertEqual(received.map(\.field), ["image[]", "image[]"])
        XCTAssertEqual(received.map(\.form), ["multipart", "multipart"])
        XCTAssertEqual(received.first?.sha256, Digest.sha256Hex(png))
        let task = try XCTUnwrap(sim.simulator.tasks { _ in true }.last)
        XCTAssertEqual(task.input["prompt"], .string("a lighthouse"))
        XCTAssertEqual(task.input["quality"], .string("low"))
        XCTAssertEqual(task.input["n"], .number(2))
        // dall-e-2 edits one image, named `image`.
        var one = request("openai/dall-e-2")
        one.images = [ProviderImage(delivery: .multipart, contentType: "image/png", text: "", data: png)]
        _ = try await adapter.generate(one, into: sink)
        XCTAssertEqual(sim.simulator.stats.receivedImages.last?.field, "image")
        for output in made { try? FileManager.default.removeItem(at: output.file) }
    }

    func testMultipartBodiesReadBackAsTheyWereWritten() throws {
        var form = Multipart(boundary: "b0undary")
        form.parts = [
            .init(name: "prompt", data: Data("two\r\nlines \"quoted\"".utf8)),
            .init(name: "image[]", filename: "a.png", contentType: "image/png", data: Data([0, 13, 10, 45, 45, 255])),
        ]
        let parts = try XCTUnwrap(Multipart.parse(form.body, contentType: form.contentType))
        XCTAssertEqual(parts, form.parts)
        XCTAssertNil(Multipart.parse(Data("not multipart".utf8), contentType: form.contentType))
    }

    func testImagesComeAsBase64OrURLs() async throws {
        let asked = request("openai/gpt-image-1", outputs: [2, 3, 4])
        let made = try await adapter.generate(asked, into: sink)
        XCTAssertEqual(made.map(\.index), [2, 3, 4])
        XCTAssertEqual(asked.charges.reported, ProviderCharge(inputTokens: 10, outputTokens: 272 * 3), "its usage")
        XCTAssertEqual(Set(made.map(\.contentType)), ["image/png"], "read from the bytes")
        for output in made {
            XCTAssertEqual(Array(try Data(contentsOf: output.file).prefix(4)), [0x89, 0x50, 0x4E, 0x47])
        }
        XCTAssertEqual(Set(leftovers), Set(made.map(\.file.lastPathComponent)), "the answer's own file is gone")
        let task = try XCTUnwrap(sim.simulator.tasks { $0.model == "gpt-image-1" }.first)
        XCTAssertNil(task.input["response_format"], "gpt-image models refuse the field")
        XCTAssertEqual(task.input["size"], .string("1024x1024"))

        let linked = try await adapter.generate(
            request("openai/dall-e-2", outputs: [0, 1], params: ["response_format": .string("url")]), into: sink)
        XCTAssertEqual(linked.map(\.contentType), ["image/png", "image/png"])
        let base64 = try await adapter.generate(request("openai/dall-e-2"), into: sink)
        XCTAssertEqual(base64.count, 1)
        XCTAssertEqual(
            sim.simulator.tasks { $0.model == "dall-e-2" }.compactMap { $0.input["response_format"]?.stringValue }
                .sorted(), ["b64_json", "url"])
    }

    func testChatStreamsItsText() async throws {
        let asked = request(
            "openai/gpt-4o-mini", prompt: "the tide comes in", params: ["temperature": .number(0.2)])
        let made = try await adapter.generate(asked, into: sink)
        XCTAssertEqual(made.count, 1)
        // The usage chunk the stream ends with (asked for with include_usage).
        XCTAssertEqual(asked.charges.reported?.inputTokens, 4)
        XCTAssertGreaterThan(asked.charges.reported?.outputTokens ?? 0, 0)
        XCTAssertEqual(made[0].contentType, "text/plain; charset=utf-8")
        let text = String(decoding: try Data(contentsOf: made[0].file), as: UTF8.self)
        XCTAssertEqual(text, "Echo: the tide comes in")
        let streamed = chunks.items.withLock { $0 }
        XCTAssertGreaterThan(streamed.count, 3, "the text arrived in pieces")
        XCTAssertEqual(streamed.joined(), text)
        let task = try XCTUnwrap(sim.simulator.tasks { $0.model == "gpt-4o-mini" }.first)
        XCTAssertEqual(task.input["stream"], .bool(true))
        XCTAssertEqual(task.input["temperature"], .number(0.2))
    }

    func testRefusalsAndFailures() async throws {
        let stranger = OpenAIAdapter(key: "sk-wrong", endpoint: ProviderEndpoint(baseURL: sim.baseURL + "/v1"))
        await assertThrows(try await stranger.generate(request("openai/gpt-image-1"), into: sink)) { error in
            XCTAssertEqual(error.code, .authenticationFailed)
            XCTAssertFalse(error.message.contains("sk-wrong"))
        }
        await stranger.shutdown()
        try sim.set(["p_balance": 1])
        await assertThrows(try await adapter.generate(request("openai/gpt-4o-mini"), into: sink)) { error in
            XCTAssertEqual(error.code, .quotaExceeded, "429 insufficient_quota is balance, not a rate limit")
        }
        try sim.set(["p_balance": 0, "p_429": 1, "retry_after_s": 2])
        await assertThrows(try await adapter.generate(request("openai/gpt-image-1"), into: sink)) { error in
            XCTAssertEqual(error.code, .rateLimited)
            XCTAssertEqual(error.retryAfter, 2)
        }
        try sim.set(["p_429": 0, "p_policy": 1])
        await assertThrows(try await adapter.generate(request("openai/gpt-image-1"), into: sink)) { error in
            XCTAssertEqual(error.code, .contentPolicy)
        }
        await assertThrows(try await adapter.generate(request("openai/gpt-4o-mini"), into: sink)) { error in
            XCTAssertEqual(error.code, .contentPolicy, "finish_reason content_filter")
        }
        try sim.set(["p_policy": 0, "p_empty": 1])
        await assertThrows(try await adapter.generate(request("openai/dall-e-2"), into: sink)) { error in
            XCTAssertTrue(error.retryable, "an answer without images is a retryable failure")
        }
        await assertThrows(try await adapter.generate(request("openai/gpt-4o-mini"), into: sink)) { error in
            XCTAssertTrue(error.retryable, "an answer without text is a retryable failure")
        }
        XCTAssertEqual(leftovers, [], "no scratch file outlives a failed call")
        XCTAssertEqual(OpenAIAdapter.defaultModels.first { $0.id == "openai/dall-e-3" }?.maxOutputsPerCall, 1)
    }

    /// OpenAI's own error bodies through the mapping table.
    func testRecordedErrors() {
        func answer(_ status: Int, _ body: String, headers: [(String, String)] = []) -> ProviderHTTP.Answer {
            ProviderHTTP.Answer(status: .init(statusCode: status), headers: .init(headers), body: .init(string: body))
        }
        let cases: [(ProviderHTTP.Answer, ErrorCode)] = [
            (
                answer(
                    429,
                    #"{"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}"#
                ), .quotaExceeded
            ),
            (
                answer(
                    429,
                    #"{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}"#,
                    headers: [("retry-after-ms", "1500")]), .rateLimited
            ),
            (
                answer(
                    400,
                    #"{"error": {"message": "Your request was rejected as a result of our safety system.", "type": "image_generation_user_error", "code": "moderation_blocked"}}"#
                ), .contentPolicy
            ),
            (
                answer(401, #"{"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}"#),
                .authenticationFailed
            ),
            (answer(400, #"{"error": {"message": "Invalid size", "param": "size"}}"#), .invalidRequest),
            (answer(503, #"{"error": {"message": "The engine is currently overloaded"}}"#), .providerUnavailable),
        ]
        for (answer, code) in cases {
            XCTAssertEqual(adapter.error(answer).code, code, answer.text)
        }
        XCTAssertEqual(adapter.error(cases[1].0).retryAfter, 1.5)
        XCTAssertEqual(adapter.error(cases[0].0).providerCode, "insufficient_quota")
    }

    /// Base64 values are taken out of an answer as it is read, large ones included, with JSON's
    /// escaped slashes and the rest of the answer intact.
    func testBase64FieldsAreDecodedAsTheyAreRead() throws {
        let big = Data((0..<700_000).map { _ in UInt8.random(in: 0...255) })
        let small = Data("hello".utf8)
        let escaped = big.base64EncodedString().replacingOccurrences(of: "/", with: "\\/")
        let answer = scratch.appendingPathComponent("answer.json")
        try Data(
            """
            {"created": 1, "note": "a \\"b64_json\\" in a string is text", "data": [
              {"b64_json" : "\(escaped)", "revised_prompt": "x"},
              {"url": null, "b64_json":"\(small.base64EncodedString())"},
              {"url": "https://example.com/a.png", "b64_json": ""}], "usage": {"total_tokens": 3}}
            """.utf8
        ).write(to: answer)
        let extracted = try Base64Fields.extract(field: "b64_json", from: answer) {
            self.scratch.appendingPathComponent(UUID().uuidString)
        }
        XCTAssertEqual(extracted.files.count, 2)
        XCTAssertEqual(try Data(contentsOf: extracted.files[0]), big)
        XCTAssertEqual(try Data(contentsOf: extracted.files[1]), small)
        XCTAssertEqual(
            extracted.skeleton["data"],
            .array([
                .object(["b64_json": .number(0), "revised_prompt": .string("x")]),
                .object(["url": .null, "b64_json": .number(1)]),
                .object(["url": .string("https://example.com/a.png"), "b64_json": .null]),
            ]))
        XCTAssertEqual(extracted.skeleton["note"], .string("a \"b64_json\" in a string is text"))
        for file in extracted.files { try FileManager.default.removeItem(at: file) }

        try Data(#"{"data": [{"b64_json": "aGVsbG8"#.utf8).write(to: answer)
        XCTAssertThrowsError(
            try Base64Fields.extract(field: "b64_json", from: answer) {
                self.scratch.appendingPathComponent(UUID().uuidString)
            })
        try Data(#"{"data": [{"b64_json": "!!!!"}]}"#.utf8).write(to: answer)
        XCTAssertThrowsError(
            try Base64Fields.extract(field: "b64_json", from: answer) {
                self.scratch.appendingPathComponent(UUID().uuidString)
            })
        XCTAssertEqual(leftovers, ["answer.json"], "a failed extraction leaves no file")
        XCTAssertEqual(MediaType.sniff([0xFF, 0xD8, 0xFF, 0xE0]), "image/jpeg")
        XCTAssertEqual(MediaType.sniff(Array("RIFF\0\0\0\0WEBPVP8 ".utf8)), "image/webp")
    }

    /// How a chat's stream is read: it ends at `[DONE]`, a stream cut short is no answer, a
    /// refusal is content policy, and a server that ignored `stream: true` is read whole.
    func testAChatReplyIsWholeOrNothing() throws {
        var reply = OpenAIAdapter.ChatReply()
        XCTAssertTrue(try reply.take(#"data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}"#))
        XCTAssertEqual(reply.pendingText, "Hel")
        XCTAssertTrue(try reply.take(": keep-alive"))
        XCTAssertThrowsError(try reply.check(), "no [DONE] and no finish_reason: cut short") { error in
            XCTAssertEqual((error as? GenGateError)?.retryable, true)
        }
        XCTAssertTrue(try reply.take(#"data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}"#))
        XCTAssertFalse(try reply.take("data: [DONE]"), "the stream is over at [DONE]")
        XCTAssertNoThrow(try reply.check())

        var refused = OpenAIAdapter.ChatReply()
        _ = try refused.take(#"data: {"choices": [{"index": 0, "delta": {"refusal": "I can't help"}}]}"#)
        _ = try refused.take(#"data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}"#)
        XCTAssertThrowsError(try refused.check()) { error in
            XCTAssertEqual((error as? GenGateError)?.code, .contentPolicy)
        }

        var plain = OpenAIAdapter.ChatReply()
        _ = try plain.take(#"{"object": "chat.completion", "choices": [{"index": 0,"#)
        _ = try plain.take(#" "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}]}"#)
        XCTAssertEqual(try plain.wholeAnswer(), "whole")
        XCTAssertNoThrow(try plain.check())

        var broken = OpenAIAdapter.ChatReply()
        XCTAssertThrowsError(try broken.take(#"data: {"error": {"message": "overloaded"}}"#))
    }
}
