import Foundation
import GenGateCore
import GenGateImages
import XCTest

/// The processor against images Pillow makes (Tests/Images/make_images.py), its results read back
/// by Pillow: an independent encoder and decoder on both sides.
final class ImageProcessorTests: XCTestCase {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Images/make_images.py")
    nonisolated(unsafe) static var directory: URL?

    var images: URL {
        get throws {
            if let directory = Self.directory { return directory }
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "gengate-images-\(UUID().uuidString)")
            try Self.python(["make", directory.path])
            Self.directory = directory
            return directory
        }
    }

    @discardableResult
    static func python(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path] + arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw NSError(domain: "make_images", code: Int(process.terminationStatus))
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// What Pillow reads in `data`.
    struct Seen: Decodable {
        var format: String
        var width: Int
        var height: Int
        var mode: String
        var bytes: Int
        var exif: Int
        var corner: [Int]
    }

    func pillow(_ data: Data) throws -> Seen {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("gengate-out-\(UUID().uuidString)")
        try data.write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        return try JSONDecoder().decode(Seen.self, from: Data(try Self.python(["check", file.path]).utf8))
    }

    let processor = ImageProcessor(concurrency: 2, maxPixels: 50_000_000)

    func inspect(_ name: String) async throws -> ImageInfo {
        let file = try images.appendingPathComponent(name)
        let data = try Data(contentsOf: file)
        return try await processor.inspect(file: file, bytes: data.count, sha256: Digest.sha256Hex(data))
    }

    func testEveryFormatIsToldByItsBytesAndMeasured() async throws {
        let expected: [(String, ImageFormat, Int, Int, Int)] = [
            ("photo.jpg", .jpeg, 640, 480, 1), ("alpha.png", .png, 300, 200, 1), ("square.webp", .webp, 500, 500, 1),
            ("anim.gif", .gif, 100, 80, 2), ("png-named.jpg", .png, 120, 90, 1),
            // Stored 400×200 with orientation 6: shown (and measured) 200×400.
            ("rotated.jpg", .jpeg, 200, 400, 1),
        ]
        for (name, format, width, height, frames) in expected {
            let info = try await inspect(name)
            XCTAssertEqual(info.format, format, name)
            XCTAssertEqual([info.width, info.height, info.frames], [width, height, frames], name)
        }
    }

    func testWhatIsNotAWholeImageIsRefusedSayingWhy() async throws {
        for (name, words) in [
            ("not-an-image.jpg", "not a PNG, JPEG, WebP or GIF"), ("truncated.jpg", "truncated or corrupt"),
            ("bomb.png", "pixels over the limit of 50000000"),
        ] {
            do {
                _ = try await inspect(name)
                XCTFail("\(name) passed")
            } catch let error as GenGateError {
                XCTAssertEqual(error.code, .invalidImage, name)
                XCTAssertTrue(error.message.contains(words), "\(name): \(error.message)")
            }
        }
    }

    func testEachPresetMakesWhatItSays() async throws {
        let large = try images.appendingPathComponent("large.jpg")
        var made = try await processor.process(file: large, input: .jpeg, pipeline: ImagePipeline.presets["standard"]!)
        var seen = try pillow(made.data)
        XCTAssertEqual([seen.format, "\(seen.width)x\(seen.height)"], ["JPEG", "1024x768"])
        XCTAssertEqual([made.info.width, made.info.height, made.info.bytes], [1024, 768, made.data.count])

        made = try await processor.process(file: large, input: .jpeg, pipeline: ImagePipeline.presets["fast"]!)
        seen = try pillow(made.data)
        XCTAssertEqual([seen.format, "\(seen.width)x\(seen.height)"], ["JPEG", "512x384"])

        made = try await processor.process(file: large, input: .jpeg, pipeline: ImagePipeline.presets["high"]!)
        seen = try pillow(made.data)
        XCTAssertEqual([seen.format, "\(seen.width)x\(seen.height)"], ["PNG", "2048x1536"])

        // Covered and cropped to exactly 1920×1080, a JPEG under 5000 KB.
        made = try await processor.process(
            file: large, input: .jpeg, pipeline: ImagePipeline.presets["pollo-optimized"]!)
        seen = try pillow(made.data)
        XCTAssertEqual([seen.format, "\(seen.width)x\(seen.height)"], ["JPEG", "1920x1080"])
        XCTAssertLessThanOrEqual(seen.bytes, 5000 * 1024)
    }

    func testOrientationIsAppliedAndMetadataStripped() async throws {
        let file = try images.appendingPathComponent("rotated.jpg")
        let made = try await processor.process(file: file, input: .jpeg, pipeline: ImagePipeline([]))
        let seen = try pillow(made.data)
        XCTAssertEqual([seen.width, seen.height], [200, 400])
        XCTAssertEqual(seen.exif, 0, "EXIF stripped")
        // The red mark (255, 0, 0), top-left as stored, is top-right once turned clockwise; the
        // top-left is now the stored bottom-left, the gradient's end (190, 65, 120).
        XCTAssertGreaterThan(seen.corner[1], 40, "top-left is no longer the red mark: \(seen.corner)")
        XCTAssertGreaterThan(seen.corner[0], 150, "top-left is the stored bottom-left: \(seen.corner)")
    }

    func testResizeModes() async throws {
        let wide = try images.appendingPathComponent("wide.png")  // 1000×300
        let cases: [(ResizeMode, Int?, Int?, String)] = [
            (.fit, 500, 500, "500x150"), (.fit, 2000, 2000, "1000x300"),  // never enlarged
            (.fill, 400, 400, "400x400"), (.cover, 400, 400, "400x400"), (.contain, 400, 400, "400x400"),
            (.fit, nil, 150, "500x150"),
        ]
        for (mode, width, height, size) in cases {
            let made = try await processor.process(
                file: wide, input: .png, pipeline: ImagePipeline([.resize(mode, width: width, height: height)]))
            let seen = try pillow(made.data)
            XCTAssertEqual("\(seen.width)x\(seen.height)", size, "\(mode) \(String(describing: width))")
            XCTAssertEqual(seen.format, "PNG")
        }
    }

    func testFormatsQualitySharpenContrastAndAlpha() async throws {
        let alpha = try images.appendingPathComponent("alpha.png")
        var made = try await processor.process(file: alpha, input: .png, pipeline: ImagePipeline([.format(.jpeg)]))
        var seen = try pillow(made.data)
        XCTAssertEqual([seen.format, seen.mode], ["JPEG", "RGB"], "alpha flattened for JPEG")
        made = try await processor.process(file: alpha, input: .png, pipeline: ImagePipeline([.format(.webp)]))
        seen = try pillow(made.data)
        XCTAssertEqual([seen.format, seen.mode], ["WEBP", "RGBA"], "alpha kept for WebP")
        let gif = try images.appendingPathComponent("anim.gif")
        made = try await processor.process(file: gif, input: .gif, pipeline: ImagePipeline([.format(nil)]))
        XCTAssertEqual(try pillow(made.data).format, "PNG", "a GIF kept as is becomes its first frame, a PNG")

        let photo = try images.appendingPathComponent("photo.jpg")
        let low = try await processor.process(file: photo, input: .jpeg, pipeline: ImagePipeline([.quality(20)]))
        let top = try await processor.process(file: photo, input: .jpeg, pipeline: ImagePipeline([.quality(98)]))
        XCTAssertLessThan(low.data.count, top.data.count)
        let sharp = try await processor.process(
            file: photo, input: .jpeg, pipeline: ImagePipeline([.sharpen, .autoContrast]))
        XCTAssertEqual([sharp.info.width, sharp.info.height], [640, 480])
        XCTAssertNotEqual(sharp.info.sha256, top.info.sha256)
    }

    func testASizeLimitIsMetByQualityThenByScale() async throws {
        let large = try images.appendingPathComponent("large.jpg")  // 11 MB of noise
        let made = try await processor.process(
            file: large, input: .jpeg, pipeline: ImagePipeline([.maxKilobytes(300), .quality(95)]))
        let seen = try pillow(made.data)
        XCTAssertLessThanOrEqual(seen.bytes, 300 * 1024)
        XCTAssertEqual(seen.format, "JPEG")
        XCTAssertLessThan(seen.width, 4000, "noise does not fit 300 KB at 4000 px")
        let png = try await processor.process(
            file: large, input: .jpeg, pipeline: ImagePipeline([.format(.png), .maxKilobytes(200)]))
        XCTAssertLessThanOrEqual(png.data.count, 200 * 1024)
    }

    func testLimitsSayWhichAndByHowMuch() {
        let limits = ImageLimits(maxBytes: 1000, minSide: 300, maxSide: 4000, minAspect: 0.4, maxAspect: 2.5)
        let problems = limits.problems(ImageInfo(format: .png, width: 1000, height: 200, bytes: 1500, sha256: ""))
        XCTAssertEqual(
            problems,
            [
                "is 1500 bytes, 500 over the limit of 1000",
                "is 1000×200 px: its shorter side is 100 px under the minimum of 300",
                "has an aspect ratio (width/height) of 5, over the maximum of 2.5",
            ])
        XCTAssertEqual(limits.problems(ImageInfo(format: .png, width: 500, height: 400, bytes: 10, sha256: "")), [])
    }

    func testPipelinesParseFromRequestsWithClearProblems() throws {
        let (standard, none) = ImagePipeline.parse(.string("standard"), path: "preprocess")
        XCTAssertEqual(standard, ImagePipeline.presets["standard"])
        XCTAssertTrue(none.isEmpty)
        let body = try JSONCoding.decode(
            JSONValue.self,
            from: Data(
                #"[{"resize": {"mode": "cover", "width": 512, "height": 512}}, {"format": "webp"}, {"quality": 80}, {"sharpen": true}]"#
                    .utf8))
        let (pipeline, problems) = ImagePipeline.parse(body, path: "preprocess")
        XCTAssertTrue(problems.isEmpty)
        XCTAssertEqual(
            pipeline?.steps, [.resize(.cover, width: 512, height: 512), .format(.webp), .quality(80), .sharpen])
        XCTAssertEqual(pipeline.flatMap { ImagePipeline.parse($0.json, path: "p").0 }, pipeline, "round trip")
        let bad = try JSONCoding.decode(
            JSONValue.self,
            from: Data(#"[{"resize": {"mode": "cover", "width": 512}}, {"quality": 0}, {"blur": 3}, 7]"#.utf8))
        let (nothing, found) = ImagePipeline.parse(bad, path: "preprocess")
        XCTAssertNil(nothing)
        XCTAssertEqual(
            found.map(\.0), ["preprocess[0].resize", "preprocess[1].quality", "preprocess[2].blur", "preprocess[3]"])
        XCTAssertEqual(ImagePipeline.parse(.string("best"), path: "p").1.first?.1.hasPrefix("unknown preset"), true)
    }
}
