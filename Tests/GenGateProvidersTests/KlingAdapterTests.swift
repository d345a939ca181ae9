import Foundation
import GenGateCore
import XCTest

@testable import GenGateProviderSim
@testable import GenGateProviders

/// The Kling adapter against the Kling simulator, which checks every call's JWT.
final class KlingAdapterTests: XCTestCase {
    var sim: RunningSimulator!
    var adapter: KlingAdapter!
    static let secret = "sk_test_0123456789abcdef0123456789"

    override func setUp() async throws {
        sim = try await RunningSimulator.start(
            "kling", key: "ak_test:\(Self.secret)",
            knobs: try SimKnobs().applying(.object(["task_seconds": .number(0.3)])))
        adapter = KlingAdapter(
            accessKey: "ak_test", secretKey: Self.secret,
            endpoint: ProviderEndpoint(baseURL: sim.baseURL, requestTimeoutSeconds: 2))
    }

    override func tearDown() async throws {
        await adapter?.shutdown()
        sim?.stop()
    }

    func request(_ model: String = "kling/kling-v1-6", outputs: [Int] = [0], params: [String: JSONValue] = [:])
        -> ProviderRequest
    {
        ProviderRequest(
            generationID: "gen_1", clientReference: "gen_1-a\(Int.random(in: 1...1_000_000))", model: model,
            prompt: "a paper boat on a river", outputIndexes: outputs, seed: 7, width: nil, height: nil,
            params: params)
    }

    func testTextToVideoIsMadeAndDownloaded() async throws {
        let request = request(params: ["duration": .number(5), "mode": .string("std")])
        let id = try await adapter.submit(request)
        guard case .succeeded(let outputs) = try await finish(adapter, id, request).state else { return XCTFail() }
        XCTAssertEqual(outputs.map(\.index), [0])
        XCTAssertEqual(outputs.map(\.contentType), ["video/mp4"])
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("gg-kling-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        _ = try await adapter.download(outputs[0], to: file)
        XCTAssertEqual(String(decoding: try Data(contentsOf: file)[4..<8], as: UTF8.self), "ftyp")
        // The body as Kling wants it: the model by name, the duration a string, our reference.
        let task = try XCTUnwrap(sim.simulator.tasks { $0.id == id }.first)
        XCTAssertEqual(task.model, "videos/text2video:kling-v1-6")
        XCTAssertEqual(task.input["duration"], .string("5"))
        XCTAssertEqual(task.input["external_task_id"], .string(request.clientReference))
        XCTAssertNil(task.input["seed"], "Kling takes no seed")
    }

    func testImageToVideoAndImages() async throws {
        // Input images go as raw base64 (`image`, then `image_tail`), which the simulator decodes.
        let png = PNGImage.encodeRGB(width: 4, height: 4, pixels: Array(repeating: 200, count: 48))
        var still = request()
        still.images = [
            ProviderImage(delivery: .base64, contentType: "image/png", text: png.base64EncodedString()),
            ProviderImage(delivery: .base64, contentType: "image/png", text: png.base64EncodedString()),
        ]
        still.inputImageCount = 2
        let video = try await adapter.submit(still)
        let task = sim.simulator.tasks { $0.id == video }.first
        XCTAssertEqual(task?.model, "videos/image2video:kling-v1-6")
        XCTAssertEqual(task?.input["image"], .string(png.base64EncodedString()))
        XCTAssertEqual(sim.simulator.stats.receivedImages.map(\.field), ["image", "image_tail"])
        XCTAssertEqual(sim.simulator.stats.receivedImages.first?.sha256, Digest.sha256Hex(png))
        // Status checks know the task is image-to-video without the images themselves.
        var checking = request()
        checking.inputImageCount = 2
        guard case .succeeded = try await finish(adapter, video, checking).state else { return XCTFail() }
        // Kling refuses a data: URL.
        var prefixed = request()
        prefixed.images = [
            ProviderImage(
                delivery: .dataURL, contentType: "image/png", text: "data:image/png;base64,\(png.base64EncodedString())"
            )
        ]
        do {
            _ = try await adapter.submit(prefixed)
            XCTFail("a data: URL was taken")
        } catch let error as GenGateError {
            XCTAssertEqual(error.code, .invalidRequest)
        }

        let images = request("kling/image/kling-v2", outputs: [3, 4, 5])
        let id = try await adapter.submit(images)
        guard case .succeeded(let outputs) = try await finish(adapter, id, images).state else { return XCTFail() }
        XCTAssertEqual(outputs.map(\.index), [3, 4, 5])
        XCTAssertEqual(Set(outputs.map(\.contentType)), ["image/png"])
        let (data, type) = try await adapter.fetch(outputs[2])
        XCTAssertEqual(type, "image/png")
        XCTAssertEqual(Array(data.prefix(4)), [0x89, 0x50, 0x4E, 0x47])

        XCTAssertThrowsError(try KlingAdapter.model("kling/../v1"))
        XCTAssertEqual(try KlingAdapter.model("kling/image/kling-v1-5").isImage, true)
    }

    func testRefusalsAndFailures() async throws {
        try sim.set(["p_balance": 1])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .quotaExceeded, "429 with code 1102 is out of balance, not a rate limit")
        }
        try sim.set(["p_balance": 0, "p_429": 1, "retry_after_s": 3])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .rateLimited)
            XCTAssertEqual(error.retryAfter, 3)
        }
        try sim.set(["p_429": 0, "p_5xx": 1])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .providerUnavailable)
        }
        try sim.set(["p_5xx": 0, "p_policy": 1])
        let refused = request()
        let policy = try await adapter.submit(refused)
        guard case .failed(let failure) = try await finish(adapter, policy, refused).state else { return XCTFail() }
        XCTAssertEqual(failure.code, .contentPolicy)
        try sim.set(["p_policy": 0, "p_empty": 1])
        let emptyRequest = request()
        let empty = try await adapter.submit(emptyRequest)
        guard case .failed(let nothing) = try await finish(adapter, empty, emptyRequest).state else {
            return XCTFail()
        }
        XCTAssertTrue(nothing.retryable, "a success without outputs is a retryable failure")
        try sim.set(["p_empty": 0])
        await assertThrows(try await adapter.submit(request(params: ["duration": .bool(true)]))) { error in
            XCTAssertEqual(error.code, .invalidRequest)
        }
    }

    func testTheSimulatorChecksTheToken() async throws {
        let stranger = KlingAdapter(
            accessKey: "ak_test", secretKey: String(Self.secret.reversed()),
            endpoint: ProviderEndpoint(baseURL: sim.baseURL))
        await assertThrows(try await stranger.submit(request())) { error in
            XCTAssertEqual(error.code, .authenticationFailed)
            XCTAssertTrue(error.message.contains("code 1002"), error.message)
        }
        await stranger.shutdown()
        // A token signed with the right secret but expired, as one kept too long would be.
        let stale = try await adapter.authorization(now: Date().addingTimeInterval(-3_600))
        let answer = try await adapter.http.send(.GET, "/v1/videos/text2video?pageNum=1&pageSize=10", headers: stale)
        XCTAssertEqual(answer.status.code, 401)
        XCTAssertEqual(answer.json?["code"]?.intValue, 1004)
        let fresh = try await adapter.authorization()
        let token = try XCTUnwrap(fresh.first?.1.dropFirst("Bearer ".count))
        let header = try XCTUnwrap(
            Data(base64Encoded: String(token.split(separator: ".")[0]).paddedBase64).flatMap {
                try? JSONCoding.decode(JSONValue.self, from: $0)
            })
        XCTAssertEqual(header["typ"], .string("JWT"))
        XCTAssertEqual(header["alg"], .string("HS256"))
    }

    func testACrashedSubmissionIsFoundByItsReference() async throws {
        let lost = request()
        try sim.set(["p_lost_answer": 1])
        await assertThrows(try await adapter.submit(lost)) { error in
            XCTAssertTrue(error.retryable)
        }
        try sim.set(["p_lost_answer": 0])
        for _ in 0..<3 { _ = try await adapter.submit(request()) }  // others after it
        let found = try await adapter.findSubmission(clientReference: lost.clientReference, request: lost)
        let task = try XCTUnwrap(sim.simulator.tasks { $0.reference == lost.clientReference }.first)
        XCTAssertEqual(found, task.id)
        let never = try await adapter.findSubmission(clientReference: "gen_x-a1", request: lost)
        XCTAssertNil(never)
        await assertThrows(
            try await adapter.findSubmission(clientReference: "gen_x-a1", request: request("kling/image/kling-v2"))
        ) { error in
            XCTAssertFalse(error.retryable, "image tasks cannot be found: recovery counts a possible double charge")
        }
        XCTAssertEqual(sim.simulator.stats.duplicateSubmissions, 0)
    }

    /// Kling's own answers, as its documentation shows them, through the mapping table.
    func testRecordedAnswers() throws {
        let video = try JSONCoding.decode(
            JSONValue.self,
            from: Data(
                """
                {"task_id": "CjhMVmdXzqAAAAAAAzJ3dw", "task_status": "succeed", "task_status_msg": "",
                 "task_info": {"external_task_id": "gen_1-a1"}, "created_at": 1722769557708,
                 "updated_at": 1722769868412, "final_unit_deduction": "1",
                 "task_result": {"videos": [{"id": "0e1a4f1d", "url": "https://cdn.klingai.com/bs2/upload-kling-api/1/v.mp4",
                   "duration": "5.1"}]}}
                """.utf8))
        guard case .succeeded(let outputs) = try KlingAdapter.state(of: video, request: request()) else {
            return XCTFail()
        }
        XCTAssertEqual(outputs.first?.source, "https://cdn.klingai.com/bs2/upload-kling-api/1/v.mp4")
        XCTAssertEqual(outputs.first?.contentType, "video/mp4")
        let refused = JSONValue.object([
            "task_id": .string("x"), "task_status": .string("failed"),
            "task_status_msg": .string("Failure to pass the risk control system"),
        ])
        guard case .failed(let policy) = try KlingAdapter.state(of: refused, request: request()) else {
            return XCTFail()
        }
        XCTAssertEqual(policy.code, .contentPolicy)
        let broke = JSONValue.object([
            "task_id": .string("x"), "task_status": .string("failed"), "task_status_msg": .string("internal error"),
        ])
        guard case .failed(let error) = try KlingAdapter.state(of: broke, request: request()) else { return XCTFail() }
        XCTAssertEqual(error.code, .providerError)
        XCTAssertEqual(
            try KlingAdapter.state(of: .object(["task_status": .string("submitted")]), request: request()), .queued)
        XCTAssertThrowsError(
            try KlingAdapter.state(of: .object(["task_status": .string("paused")]), request: request()))

        func answer(_ status: Int, _ body: String) -> ProviderHTTP.Answer {
            ProviderHTTP.Answer(status: .init(statusCode: status), headers: [:], body: .init(string: body))
        }
        let cases: [(Int, String, ErrorCode)] = [
            (401, #"{"code": 1004, "message": "Authorization is expired"}"#, .authenticationFailed),
            (429, #"{"code": 1102, "message": "resource pack exhausted"}"#, .quotaExceeded),
            (429, #"{"code": 1303, "message": "parallel task over resource pack limit"}"#, .rateLimited),
            (400, #"{"code": 1301, "message": "content security"}"#, .contentPolicy),
            (400, #"{"code": 1201, "message": "duration invalid"}"#, .invalidRequest),
            (500, #"{"code": 5000, "message": "Server internal error"}"#, .providerUnavailable),
            (502, "<html>bad gateway</html>", .providerUnavailable),
        ]
        for (status, body, code) in cases {
            XCTAssertEqual(adapter.error(answer(status, body)).code, code, body)
        }
        XCTAssertEqual(adapter.error(answer(429, cases[2].1)).providerCode, "1303", "Kling's own code is kept")
        XCTAssertNil(adapter.error(answer(502, "<html>bad gateway</html>")).providerCode)
    }
}

extension String {
    /// Base64url (as in a JWT) as the padded base64 Foundation decodes.
    var paddedBase64: String {
        let plain = replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        return plain + String(repeating: "=", count: (4 - plain.count % 4) % 4)
    }
}
