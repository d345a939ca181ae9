import Foundation
import XCTest
import GenGateCore
@testable import GenGateProviders

final class PNGImageTests: XCTestCase {
    /// Reads the chunks of a PNG, checking every CRC; returns (type, body) pairs.
    func chunks(_ png: Data) throws -> [(String, [UInt8])] {
        let bytes = [UInt8](png)
        XCTAssertEqual(Array(bytes.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "PNG signature")
        var offset = 8
        var result: [(String, [UInt8])] = []
        func u32(_ at: Int) -> UInt32 { bytes[at..<(at + 4)].reduce(0) { $0 << 8 | UInt32($1) } }
        while offset < bytes.count {
            let length = Int(u32(offset))
            let type = String(decoding: bytes[(offset + 4)..<(offset + 8)], as: UTF8.self)
            let body = Array(bytes[(offset + 8)..<(offset + 8 + length)])
            XCTAssertEqual(
                u32(offset + 8 + length), PNGImage.crc32(Array(bytes[(offset + 4)..<(offset + 8 + length)])),
                "CRC of \(type)")
            result.append((type, body))
            offset += 12 + length
        }
        return result
    }

    func testCRC32MatchesTheStandardCheckValue() {
        XCTAssertEqual(PNGImage.crc32(Array("123456789".utf8)), 0xCBF4_3926)
    }

    func testEncodedImageIsAValidPNGWithTheRightPixels() throws {
        let pixels: [UInt8] = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]
        let png = PNGImage.encodeRGB(width: 2, height: 2, pixels: pixels)
        let parts = try chunks(png)
        XCTAssertEqual(parts.map(\.0), ["IHDR", "IDAT", "IEND"])
        XCTAssertEqual(parts[0].1, [0, 0, 0, 2, 0, 0, 0, 2, 8, 2, 0, 0, 0])
        // Undo the stored deflate blocks by hand: zlib header, then per block BFINAL/LEN/NLEN/data.
        let zlib = parts[1].1
        XCTAssertEqual(Array(zlib.prefix(2)), [0x78, 0x01])
        var raw: [UInt8] = []
        var at = 2
        while true {
            let final = zlib[at] & 1
            let length = Int(zlib[at + 1]) | Int(zlib[at + 2]) << 8
            XCTAssertEqual(UInt16(length) ^ 0xFFFF, UInt16(zlib[at + 3]) | UInt16(zlib[at + 4]) << 8)
            raw += zlib[(at + 5)..<(at + 5 + length)]
            at += 5 + length
            if final == 1 { break }
        }
        XCTAssertEqual(raw, [0, 255, 0, 0, 0, 255, 0, 0, 0, 0, 255, 10, 20, 30])
        let adler = zlib[at..<(at + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        XCTAssertEqual(adler, PNGImage.adler32(raw))
    }

    func testLargeImagesSpanSeveralStoredBlocks() throws {
        let png = PNGImage.encodeRGB(width: 200, height: 200, pixels: [UInt8](repeating: 7, count: 200 * 200 * 3))
        XCTAssertGreaterThan(png.count, 120_000)
        XCTAssertEqual(try chunks(png).map(\.0), ["IHDR", "IDAT", "IEND"])
    }
}

final class SimProviderTests: XCTestCase {
    func request(
        model: String = "sim/image", indexes: [Int] = [0, 1], seed: Int? = 5, prompt: String = "a red fox / ünïcode"
    ) -> ProviderRequest {
        ProviderRequest(
            generationID: "gen_1", clientReference: "gen_1-a1", model: model, prompt: prompt, outputIndexes: indexes,
            seed: seed, width: nil, height: nil, params: [:])
    }

    func testTaskRunsThenSucceedsWithOneOutputPerIndex() async throws {
        let sim = SimProvider(settings: .init(latency: .milliseconds(300), failureRate: 0))
        let taskID = try await sim.submit(request())
        guard case .running(let progress, _) = try await sim.status(taskID: taskID, request: request()) else {
            return XCTFail("a fresh task must be running")
        }
        XCTAssertLessThan(progress ?? 100, 50)
        try await Task.sleep(for: .milliseconds(350))
        guard case .succeeded(let outputs) = try await sim.status(taskID: taskID, request: request()) else {
            return XCTFail("the task must have succeeded after its latency")
        }
        XCTAssertEqual(outputs.map(\.index), [0, 1])
        XCTAssertEqual(outputs.map(\.contentType), ["image/png", "image/png"])
        let first = try await sim.fetch(outputs[0])
        let again = try await sim.fetch(outputs[0])
        let second = try await sim.fetch(outputs[1])
        XCTAssertEqual(first.data, again.data, "outputs are deterministic")
        XCTAssertNotEqual(first.data, second.data, "each index is a different image")
        XCTAssertEqual(Array(first.data.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
    }

    func testAnotherProcessSeesTheSameTask() async throws {
        let sim = SimProvider(settings: .init(latency: .zero, failureRate: 0))
        let taskID = try await sim.submit(request())
        // Another process with other settings: they do not matter.
        let elsewhere = SimProvider(settings: .init(latency: .seconds(100), failureRate: 1))
        guard case .succeeded = try await elsewhere.status(taskID: taskID, request: request()) else {
            return XCTFail("the task's state travels in its id")
        }
    }

    func testFailureRateOneFailsRetryably() async throws {
        let sim = SimProvider(settings: .init(latency: .zero, failureRate: 1))
        let taskID = try await sim.submit(request())
        guard case .failed(let error) = try await sim.status(taskID: taskID, request: request()) else {
            return XCTFail("failure rate 1 must fail")
        }
        XCTAssertEqual(error.code, .providerError)
        XCTAssertTrue(error.retryable)
    }

    func testTextModelYieldsText() async throws {
        let sim = SimProvider(settings: .init(latency: .zero, failureRate: 0))
        let textRequest = request(model: "sim/text", indexes: [0])
        let taskID = try await sim.submit(textRequest)
        guard case .succeeded(let outputs) = try await sim.status(taskID: taskID, request: textRequest) else {
            return XCTFail()
        }
        let fetched = try await sim.fetch(outputs[0])
        XCTAssertEqual(fetched.contentType, "text/plain; charset=utf-8")
        XCTAssertTrue(String(decoding: fetched.data, as: UTF8.self).contains("a red fox / ünïcode"))
    }

    func testUnknownTasksAndSourcesAreErrorsNotCrashes() async throws {
        let sim = SimProvider()
        do {
            _ = try await sim.status(taskID: "garbage", request: request())
            XCTFail("an unknown task must fail")
        } catch let error as GenGateError {
            XCTAssertEqual(error.code, .providerError)
        }
        for source in ["sim://image/99999x1/0/0/eA", "sim://image/axb/0/0/eA", "https://x", "sim://video/1x1/0/0/eA"] {
            do {
                _ = try await sim.fetch(Output(index: 0, source: source, contentType: "image/png"))
                XCTFail("\(source) must be refused")
            } catch let error as GenGateError {
                XCTAssertEqual(error.code, .uploadFailed)
            }
        }
    }

    func testRegistryKnowsTheSimModels() throws {
        let registry = ProviderRegistry(adapters: [SimProvider()])
        XCTAssertEqual(registry.model("sim/image")?.maxOutputs, 10)
        XCTAssertEqual(registry.model("sim/text")?.kind, .text)
        XCTAssertNil(registry.model("nope"))
        XCTAssertThrowsError(try registry.adapter("replicate"))
    }
}
