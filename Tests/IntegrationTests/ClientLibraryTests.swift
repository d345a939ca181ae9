import Foundation
import GenGateClient
import GenGateCore
import XCTest

/// The Swift client library (`GenGateClient`) against a whole system, and the CLI that uses it.
final class ClientLibraryTests: XCTestCase {
    func testSubmitWaitEventsOutputsCancelAndTypedErrors() async throws {
        let system = try await GenGateSystem.start(environment: ["GENGATE_SIM_LATENCY_MS": "800"])
        defer { system.stop() }
        let gengate = GenGateClient(baseURL: system.baseURL, apiKey: system.adminKey)

        let job = try await gengate.submit(GenerationRequest(model: "sim/image", prompt: "a lighthouse", n: 2))
        XCTAssertEqual(job.status, .pending)
        var seen: [JobEvent] = []
        for try await event in gengate.events(of: job.id) { seen.append(event) }
        guard case .event(_, let first)? = seen.first, case .done(let status)? = seen.last else {
            return XCTFail("\(seen)")
        }
        XCTAssertEqual(first.type, .generationCreated)
        XCTAssertEqual(status, .completed)
        let outputs = seen.filter {
            if case .event(_, let event) = $0 { return event.type == .generationOutput }
            return false
        }
        XCTAssertEqual(outputs.count, 2)
        let done = try await gengate.wait(for: job.id)
        XCTAssertEqual(done.status, .completed)
        XCTAssertEqual(done.outputs.count, 2)
        let bytes = try await gengate.output(job.id, index: 1)
        XCTAssertEqual(Digest.sha256Hex(bytes), done.outputs[1].sha256)

        // One call: Prefer: wait.
        let waited = try await gengate.submit(GenerationRequest(model: "sim/image", prompt: "quick"), wait: 20)
        XCTAssertEqual(waited.status, .completed)

        // Text, as it is written (the sim writes it whole at the end).
        let textJob = try await gengate.submit(GenerationRequest(model: "sim/text", prompt: "a haiku"))
        var text = ""
        for try await piece in gengate.text(of: textJob.id) { text += piece }
        let textOutput = try await gengate.output(textJob.id, index: 0)
        XCTAssertEqual(text, String(decoding: textOutput, as: UTF8.self))
        XCTAssertFalse(text.isEmpty)

        // Cancel, and a wait that ends with it.
        let slow = try await gengate.submit(GenerationRequest(model: "sim/video", prompt: "slow"))
        let cancelled = try await gengate.cancel(slow.id)
        XCTAssertEqual(cancelled.status, .cancelled)
        let ended = try await gengate.wait(for: slow.id, timeout: .seconds(10))
        XCTAssertEqual(ended.error?.reason, "client")

        do {
            _ = try await gengate.submit(GenerationRequest(model: "no/such", prompt: "x"))
            XCTFail("an unknown model was accepted")
        } catch GenGateClientError.api(let failure) {
            XCTAssertEqual(failure.status, 400)
            XCTAssertEqual(failure.code, "unknown_model")
            XCTAssertEqual(failure.details.first?.path, "model")
        }
        do {
            _ = try await GenGateClient(baseURL: system.baseURL, apiKey: "gg_wrong").job(job.id)
            XCTFail("a wrong key was accepted")
        } catch GenGateClientError.api(let failure) {
            XCTAssertEqual(failure.code, "unauthorized")
        }
    }

    func testBatchesAndWebhookVerification() async throws {
        let system = try await GenGateSystem.start(environment: ["GENGATE_SIM_LATENCY_MS": "300"])
        defer { system.stop() }
        let gengate = GenGateClient(baseURL: system.baseURL, apiKey: system.adminKey)
        let batch = try await gengate.submitBatch(
            (0..<4).map { GenerationRequest(model: "sim/image", prompt: "job \($0)") }, maxConcurrency: 2,
            priority: .high)
        XCTAssertEqual(batch.total, 4)
        var now = batch
        for _ in 0..<100 where !now.isFinished {
            try await Task.sleep(for: .milliseconds(100))
            now = try await gengate.batch(batch.id)
        }
        XCTAssertEqual(now.status, "completed")
        XCTAssertEqual(now.counts["completed"], 4)

        let secret = try await gengate.webhookSecret()
        let key = try XCTUnwrap(StandardWebhooks.key(secret: secret))
        let body = Data(#"{"type": "generation.completed", "data": {"id": "gen_1", "status": "completed"}}"#.utf8)
        let stamp = Int(Date().timeIntervalSince1970)
        let headers = [
            "Webhook-Id": "msg_1", "Webhook-Timestamp": "\(stamp)",
            "Webhook-Signature": StandardWebhooks.sign(key: key, id: "msg_1", timestamp: stamp, body: body),
        ]
        let payload = try GenGateClient.verifyWebhook(secret: secret, headers: headers, body: body)
        XCTAssertEqual(payload.type, "generation.completed")
        XCTAssertEqual(payload.job.id, "gen_1")
        XCTAssertEqual(payload.id, "msg_1")
        var tampered = body
        tampered[tampered.count - 2] = UInt8(ascii: " ")
        XCTAssertThrowsError(try GenGateClient.verifyWebhook(secret: secret, headers: headers, body: tampered)) {
            guard case GenGateClientError.invalidWebhook(let why) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(why, "no signature matches")
        }
    }

    /// `gengate watch` follows a job through the client library's event stream.
    func testTheCLIWatchesAJobLive() async throws {
        let system = try await GenGateSystem.start(environment: ["GENGATE_SIM_LATENCY_MS": "1500"])
        defer { system.stop() }
        let id = try await system.submit(#"{"model": "sim/image", "prompt": "watched"}"#)
        let (status, output, errors) = try GenGateSystem.command([
            "watch", id, "--url", system.baseURL, "--key", system.adminKey,
        ])
        XCTAssertEqual(status, 0, errors)
        XCTAssertTrue(errors.contains("\(id) running"), errors)
        XCTAssertTrue(errors.contains("\(id) completed 100%"), errors)
        let printed = try JSONCoding.decode(JSONValue.self, from: output)
        XCTAssertEqual(printed["status"], .string("completed"))
    }
}
