import Foundation
import GenGateCore
import XCTest

@testable import GenGateProviderSim
@testable import GenGateProviders

/// The Hunyuan adapter against the Hunyuan simulator, which checks every call's TC3 signature.
final class HunyuanAdapterTests: XCTestCase {
    var sim: RunningSimulator!
    var adapter: HunyuanAdapter!

    override func setUp() async throws {
        sim = try await RunningSimulator.start(
            "hunyuan", key: "AKIDtest:secret_test",
            knobs: try SimKnobs().applying(.object(["task_seconds": .number(0.3)])))
        adapter = HunyuanAdapter(
            secretID: "AKIDtest", secretKey: "secret_test",
            endpoint: ProviderEndpoint(baseURL: sim.baseURL, requestTimeoutSeconds: 2))
    }

    override func tearDown() async throws {
        await adapter?.shutdown()
        sim?.stop()
    }

    func request(outputs: [Int] = [0, 1, 2], width: Int? = 1024, params: [String: JSONValue] = [:]) -> ProviderRequest {
        ProviderRequest(
            generationID: "gen_1", clientReference: "gen_1-a1", model: "hunyuan/hunyuan-image", prompt: "雨中的灯塔",
            outputIndexes: outputs, seed: 41, width: width, height: width, params: params)
    }

    /// Tencent's worked example (Signature v3, CVM `DescribeInstances`), with its published
    /// intermediate hash and signature.
    func testThePublishedExampleSignature() {
        let signer = TC3Signature(
            secretID: "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", secretKey: "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            service: "cvm")
        let request = TC3Signature.Request(
            method: "GET", query: "Limit=10&Offset=0",
            headers: ["content-type": "application/x-www-form-urlencoded", "host": "cvm.tencentcloudapi.com"],
            payload: [], timestamp: 1_539_084_154)
        XCTAssertEqual(
            Digest.sha256Hex(TC3Signature.canonicalRequest(request).text),
            "91c9c192c14460df6c1ffc69e34e6c5e90708de2a6d282cccf957dbf1aa7f3a7")
        XCTAssertEqual(signer.signature(request), "5da7a33f6993f0614b047e5df4582db9e9bf4672ba50567dba16c6ccf174c474")
        XCTAssertEqual(
            signer.authorization(request),
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2018-10-09/cvm/tc3_request, "
                + "SignedHeaders=content-type;host, Signature=5da7a33f6993f0614b047e5df4582db9e9bf4672ba50567dba16c6ccf174c474"
        )
        let parsed = TC3Signature.parse(authorization: signer.authorization(request))
        XCTAssertEqual(parsed?.signedHeaders, ["content-type", "host"])
        XCTAssertEqual(parsed?.day, "2018-10-09")
        XCTAssertNil(TC3Signature.parse(authorization: "Bearer x"))
    }

    func testImagesAreMadeAndFetched() async throws {
        let request = request(params: ["negative_prompt": .string("fog"), "LogoAdd": .number(0)])
        let id = try await adapter.submit(request)
        guard case .succeeded(let outputs) = try await finish(adapter, id, request).state else { return XCTFail() }
        XCTAssertEqual(outputs.map(\.index), [0, 1, 2])
        let (data, type) = try await adapter.fetch(outputs[1])
        XCTAssertEqual(type, "image/png")
        XCTAssertEqual(Array(data.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
        let task = try XCTUnwrap(sim.simulator.tasks { $0.id == id }.first)
        XCTAssertEqual(task.input["NegativePrompt"], .string("fog"))
        XCTAssertEqual(task.input["Resolution"], .string("1024:1024"))
        XCTAssertEqual(task.input["Num"], .number(3))
        XCTAssertEqual(task.input["Seed"], .number(41))
        XCTAssertEqual(task.input["LogoAdd"], .number(0))
    }

    func testRefusalsAndFailures() async throws {
        await assertThrows(try await adapter.submit(request(width: 999))) { error in
            XCTAssertEqual(error.code, .invalidRequest)
            XCTAssertTrue(error.message.contains("InvalidParameterValue"), error.message)
        }
        try sim.set(["p_balance": 1])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .quotaExceeded)
        }
        try sim.set(["p_balance": 0, "p_429": 1])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .rateLimited)
        }
        try sim.set(["p_429": 0, "p_5xx": 1])
        await assertThrows(try await adapter.submit(request())) { error in
            XCTAssertEqual(error.code, .providerUnavailable)
        }
        try sim.set(["p_5xx": 0, "p_policy": 1])
        let refused = try await adapter.submit(request())
        guard case .failed(let policy) = try await finish(adapter, refused, request()).state else { return XCTFail() }
        XCTAssertEqual(policy.code, .contentPolicy)
        try sim.set(["p_policy": 0, "p_empty": 1])
        let empty = try await adapter.submit(request())
        guard case .failed(let nothing) = try await finish(adapter, empty, request()).state else { return XCTFail() }
        XCTAssertTrue(nothing.retryable, "a job done without images is a retryable failure")
    }

    func testTheSimulatorChecksTheSignature() async throws {
        let stranger = HunyuanAdapter(
            secretID: "AKIDtest", secretKey: "not_the_secret", endpoint: ProviderEndpoint(baseURL: sim.baseURL))
        await assertThrows(try await stranger.submit(request())) { error in
            XCTAssertEqual(error.code, .authenticationFailed)
            XCTAssertTrue(error.message.contains("AuthFailure.SignatureFailure"), error.message)
        }
        await stranger.shutdown()
        let late = Date().addingTimeInterval(-600)
        await assertThrows(try await adapter.call("QueryHunyuanImageJob", .object(["JobId": .string("x")]), now: late))
        { error in
            XCTAssertTrue(error.message.contains("AuthFailure.SignatureExpire"), error.message)
        }
        XCTAssertEqual(sim.simulator.stats.submissions, 0)
    }

    /// Tencent's own answers, as its documentation shows them, through the mapping table.
    func testRecordedAnswers() throws {
        let done = try JSONCoding.decode(
            JSONValue.self,
            from: Data(
                """
                {"JobStatusCode": "5", "JobStatusMsg": "处理完成", "JobErrorCode": "", "JobErrorMsg": "",
                 "ResultImage": ["https://aiart-1258344699.cos.ap-guangzhou.myqcloud.com/text_to_img/a.jpg"],
                 "ResultDetails": ["Success"], "RevisedPrompt": ["雨中的灯塔"], "RequestId": "r"}
                """.utf8))
        guard case .succeeded(let outputs) = try HunyuanAdapter.state(of: done, request: request(outputs: [4])) else {
            return XCTFail()
        }
        XCTAssertEqual(outputs.map(\.index), [4])
        XCTAssertEqual(outputs.first?.contentType, "image/jpeg")
        let failed = JSONValue.object([
            "JobStatusCode": .string("4"), "JobErrorCode": .string("FailedOperation.GenerateImageFailed"),
            "JobErrorMsg": .string("sensitive"),
        ])
        guard case .failed(let policy) = try HunyuanAdapter.state(of: failed, request: request()) else {
            return XCTFail()
        }
        XCTAssertEqual(policy.code, .contentPolicy)
        XCTAssertEqual(
            try HunyuanAdapter.state(of: .object(["JobStatusCode": .string("1")]), request: request()), .queued)
        XCTAssertThrowsError(try HunyuanAdapter.state(of: .object(["JobStatusCode": .string("3")]), request: request()))
        let table: [(String, ErrorCode)] = [
            ("AuthFailure.SignatureExpire", .authenticationFailed),
            ("RequestLimitExceeded.UinLimitExceeded", .rateLimited),
            ("RequestLimitExceeded.JobNumExceed", .rateLimited),
            ("FailedOperation.EngineServerLimitExceeded", .rateLimited),
            ("OperationDenied.TextIllegalDetected", .contentPolicy),
            ("ResourceUnavailable.InArrears", .quotaExceeded),
            ("FailedOperation.ResourcePackExhausted", .quotaExceeded),
            ("FailedOperation.EngineRequestTimeout", .providerTimeout),
            ("InternalError", .providerUnavailable),
            ("InvalidParameterValue.ParameterValueError", .invalidRequest),
            ("FailedOperation.ImageDecodeFailed", .invalidRequest),
            ("FailedOperation.Something", .providerError),
        ]
        for (code, expected) in table {
            let error = HunyuanAdapter.error(code: code, message: "m")
            XCTAssertEqual(error.code, expected, code)
            XCTAssertEqual(error.providerCode, code, "Tencent's own code is kept")
        }
    }
}
