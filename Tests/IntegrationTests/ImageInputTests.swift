import Foundation
import GenGateCore
import XCTest

/// Input images end to end: uploads, data URLs and image URLs given to Kling and Pollo (their
/// simulators check what reaches them: raw base64 for Kling, a URL they fetch for Pollo), and
/// bad images refused before any provider is paid. Test images are made by Pillow
/// (Tests/Images/make_images.py); what GenGate made is read back by Pillow too.
final class ImageInputTests: XCTestCase {
    typealias Sim = ProviderSimulatorTests.SimulatorProcess

    static let imagesScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Images")

    /// The test images, made once per run.
    static let images: URL = {
        let directory = URL(fileURLWithPath: "/tmp/ggt-images-\(UUID().uuidString.prefix(8).lowercased())")
        _ = try? Python.run(imagesScript.appendingPathComponent("make_images.py"), arguments: ["make", directory.path])
        return directory
    }()

    func image(_ name: String) throws -> Data { try Data(contentsOf: Self.images.appendingPathComponent(name)) }

    /// What Pillow reads in `data`.
    func pillow(_ data: Data) throws -> JSONValue {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("gg-check-\(UUID().uuidString)")
        try data.write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let (status, output) = try Python.run(
            Self.imagesScript.appendingPathComponent("make_images.py"), arguments: ["check", file.path])
        XCTAssertEqual(status, 0, output)
        return try JSONCoding.decode(JSONValue.self, from: Data(output.utf8))
    }

    func upload(_ system: GenGateSystem, _ data: Data, type: String = "image/jpeg") async throws -> GenGateSystem.Answer
    {
        try await GenGateSystem.rawRequest(
            .POST, system.baseURL + "/v1/uploads", body: data, key: system.adminKey,
            headers: [("Content-Type", type)])
    }

    func waitForEnd(_ system: GenGateSystem, _ id: String, seconds: Double = 60) async throws -> JSONValue {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let answer = try await system.request(.GET, "/v1/generations/\(id)")
            if ["completed", "failed", "cancelled"].contains(answer.json["status"]?.stringValue ?? "") {
                return answer.json
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw SystemError("\(id) did not end within \(seconds) s")
    }

    /// libvips and the hundred libraries it loads are in the processes that handle images
    /// (api-ingress, the dispatcher) and in no other: an idle poller needs 37 libraries, not 125.
    func testOnlyTheProcessesThatHandleImagesLoadLibvips() async throws {
        let system = try await GenGateSystem.start()
        defer { system.stop() }
        for service in ["api-ingress", "dispatcher", "poller", "uploader", "monitor"] {
            let pidFile = system.dataDir.appendingPathComponent("run/\(service).pid")
            let pid = try XCTUnwrap(
                Int32(try String(contentsOf: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)),
                service)
            // Read to its end: a /proc file says it is empty, and reads come a page at a time.
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/\(pid)/maps"))
            let maps = String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
            try handle.close()
            XCTAssertTrue(maps.contains("/libswiftCore.so"), "\(service): its whole map was read")
            XCTAssertEqual(maps.contains("libvips"), ["api-ingress", "dispatcher"].contains(service), service)
        }
    }

    func testKlingGetsUploadsAndDataURLsAsRawBase64AndBadImagesPayNothing() async throws {
        let kling = try await Sim(
            provider: "kling", key: "ak_test:\(ProviderSimulatorTests.klingSecret)", knobs: #"{"task_seconds": 0.5}"#)
        defer { kling.stop() }
        let system = try await GenGateSystem.start(
            environment: kling.environment, config: #"{"images": {"max_upload_bytes": 4000000}}"#)
        defer { system.stop() }

        // The model says it takes images, and how.
        let models = try await system.request(.GET, "/v1/models").json["data"]?.arrayValue ?? []
        let entry = models.first { $0["id"]?.stringValue == "kling/kling-v1-6" }
        XCTAssertEqual(entry?["images"]?["max"]?.intValue, 2)
        XCTAssertEqual(entry?["images"]?["limits"]?["min_side"]?.intValue, 300)
        XCTAssertEqual(entry?["images"]?["delivery"]?.arrayValue?.first?.stringValue, "base64")

        // An upload: told by its bytes, measured, stored once per content.
        let photo = try image("photo.jpg")
        let uploaded = try await upload(system, photo)
        XCTAssertEqual(uploaded.status, 201, String(decoding: uploaded.body, as: UTF8.self))
        XCTAssertEqual(uploaded.json["format"]?.stringValue, "jpeg")
        XCTAssertEqual([uploaded.json["width"]?.intValue, uploaded.json["height"]?.intValue], [640, 480])
        XCTAssertEqual(uploaded.json["sha256"]?.stringValue, Digest.sha256Hex(photo))
        let again = try await upload(system, photo)
        XCTAssertNotEqual(again.json["id"], uploaded.json["id"])
        let stored = try FileManager.default.subpathsOfDirectory(
            atPath: system.dataDir.appendingPathComponent("objects/inputs").path
        )
        .filter { $0.hasSuffix(".jpg") }
        XCTAssertEqual(stored.count, 1, "the same bytes are one object: \(stored)")
        // A PNG declared as a JPEG is a PNG.
        let named = try await upload(system, try image("png-named.jpg"), type: "image/jpeg")
        XCTAssertEqual(named.json["format"]?.stringValue, "png")

        // Bad uploads: each refused, saying why.
        for (name, code, words) in [
            ("truncated.jpg", "invalid_image", "truncated or corrupt"),
            ("not-an-image.jpg", "invalid_image", "not a PNG, JPEG, WebP or GIF"),
            ("bomb.png", "invalid_image", "pixels over the limit"),
            ("large.jpg", "payload_too_large", "larger than 4000000 bytes"),
        ] {
            let answer = try await upload(system, try image(name))
            XCTAssertEqual(answer.json["error"]?["code"]?.stringValue, code, name)
            XCTAssertTrue(
                answer.json["error"]?["message"]?.stringValue?.contains(words) ?? false,
                "\(name): \(String(decoding: answer.body, as: UTF8.self))")
        }

        // Image-to-video from the upload.
        let id = uploaded.json["id"]?.stringValue ?? ""
        var answer = try await system.request(
            .POST, "/v1/generations",
            body: #"{"model": "kling/kling-v1-6", "prompt": "the sea moving", "images": ["\#(id)"]}"#)
        XCTAssertEqual(answer.status, 202, String(decoding: answer.body, as: UTF8.self))
        var job = try await waitForEnd(system, answer.json["id"]?.stringValue ?? "")
        XCTAssertEqual(job["status"]?.stringValue, "completed", "\(job)")
        let input = job["inputs"]?.arrayValue?.first
        XCTAssertEqual(input?["delivery"]?.stringValue, "base64")
        XCTAssertEqual(input?["original"]?["sha256"]?.stringValue, Digest.sha256Hex(photo))
        XCTAssertEqual(input?["processed"]?["format"]?.stringValue, "jpeg")
        var received = try await kling.stats()["received_images"]?.arrayValue ?? []
        XCTAssertEqual(received.count, 1)
        XCTAssertEqual(received.first?["form"]?.stringValue, "base64")
        XCTAssertEqual(received.first?["field"]?.stringValue, "image")
        XCTAssertEqual(
            received.first?["sha256"]?.stringValue, input?["processed"]?["sha256"]?.stringValue,
            "the provider got what the job says it was sent")

        // A data URL, with an explicit pipeline: the first frame and the last.
        let webp = try image("square.webp").base64EncodedString()
        answer = try await system.request(
            .POST, "/v1/generations",
            body: """
                {"model": "kling/kling-v1-6", "prompt": "turning", "images": ["data:image/webp;base64,\(webp)", {"upload": "\(id)"}],
                 "preprocess": [{"resize": {"mode": "cover", "width": 400, "height": 320}}, {"format": "png"}]}
                """)
        XCTAssertEqual(answer.status, 202, String(decoding: answer.body, as: UTF8.self))
        job = try await waitForEnd(system, answer.json["id"]?.stringValue ?? "")
        XCTAssertEqual(job["status"]?.stringValue, "completed", "\(job)")
        let inputs = job["inputs"]?.arrayValue ?? []
        XCTAssertEqual(inputs.map { $0["processed"]?["format"]?.stringValue }, ["png", "png"])
        XCTAssertEqual(inputs.map { $0["processed"]?["width"]?.intValue }, [400, 400])
        XCTAssertEqual(inputs.first?["original"]?["format"]?.stringValue, "webp")
        received = try await kling.stats()["received_images"]?.arrayValue ?? []
        XCTAssertEqual(received.suffix(2).map { $0["field"]?.stringValue }, ["image", "image_tail"])
        XCTAssertEqual(received.suffix(2).map { $0["content_type"]?.stringValue }, ["image/png", "image/png"])

        // Images that break the model's limits are refused at once, saying which and by how much.
        let before = try await kling.stats()["submissions"]?.intValue
        let small = try image("alpha.png").base64EncodedString()  // 300×200
        answer = try await system.request(
            .POST, "/v1/generations",
            body: #"{"model": "kling/kling-v1-6", "prompt": "x", "images": ["data:image/png;base64,\#(small)"]}"#)
        XCTAssertEqual(answer.status, 400)
        XCTAssertEqual(answer.json["error"]?["code"]?.stringValue, "invalid_image")
        XCTAssertEqual(answer.json["error"]?["details"]?.arrayValue?.first?["path"]?.stringValue, "images[0]")
        XCTAssertTrue(
            answer.json["error"]?["message"]?.stringValue?.contains("shorter side is 100 px under the minimum of 300")
                ?? false, "\(answer.json)")
        // A model that takes no images says which do.
        answer = try await system.request(
            .POST, "/v1/generations", body: #"{"model": "sim/image", "prompt": "x", "images": ["\#(id)"]}"#)
        XCTAssertEqual(answer.status, 400)
        XCTAssertTrue(answer.json["error"]?["message"]?.stringValue?.contains("kling/kling-v1-6") ?? false)
        // Someone else's upload is no upload.
        let other = try await system.request(.POST, "/v1/admin/keys", body: #"{"name": "other"}"#)
        let otherKey = other.json["key"]?.stringValue
        answer = try await system.request(
            .POST, "/v1/generations", body: #"{"model": "kling/kling-v1-6", "prompt": "x", "images": ["\#(id)"]}"#,
            key: otherKey)
        XCTAssertEqual(answer.status, 400, "\(answer.json)")
        XCTAssertTrue(answer.json["error"]?["message"]?.stringValue?.contains("no upload") ?? false)
        let after = try await kling.stats()["submissions"]?.intValue
        XCTAssertEqual(before, after, "no bad image reached the provider")
    }

    func testPolloFetchesImagesByASignedLinkAndAnImageURLThatFailsPaysNothing() async throws {
        let pollo = try await Sim(provider: "pollo", key: "pollo_test", knobs: #"{"task_seconds": 0.5}"#)
        defer { pollo.stop() }
        let (server, port) = try await Python.serve(
            Self.imagesScript.appendingPathComponent("serve_images.py"), arguments: [Self.images.path])
        defer { server.stop() }
        let system = try await GenGateSystem.start(
            environment: pollo.environment.merging(["GENGATE_IMAGES_ALLOW_PRIVATE_URLS": "true"]) { $1 },
            publicURL: true)
        defer { system.stop() }

        // An image URL, fetched by GenGate, prepared with the Pollo preset, handed to Pollo as a
        // signed GenGate link that Pollo fetches.
        var answer = try await system.request(
            .POST, "/v1/generations",
            body: """
                {"model": "pollo/pollo-v2-5", "prompt": "waves", "preprocess": "pollo-optimized",
                 "images": [{"url": "http://127.0.0.1:\(port)/large.jpg"}]}
                """)
        XCTAssertEqual(answer.status, 202, String(decoding: answer.body, as: UTF8.self))
        let job = try await waitForEnd(system, answer.json["id"]?.stringValue ?? "")
        XCTAssertEqual(job["status"]?.stringValue, "completed", "\(job)")
        let input = job["inputs"]?.arrayValue?.first
        XCTAssertEqual(input?["delivery"]?.stringValue, "url")
        XCTAssertEqual(
            [input?["processed"]?["width"]?.intValue, input?["processed"]?["height"]?.intValue], [1920, 1080])
        XCTAssertLessThanOrEqual(input?["processed"]?["bytes"]?.intValue ?? .max, 5_000 * 1024)
        let received = try await pollo.stats()["received_images"]?.arrayValue ?? []
        XCTAssertEqual(received.first?["form"]?.stringValue, "url")
        XCTAssertEqual(received.first?["sha256"]?.stringValue, input?["processed"]?["sha256"]?.stringValue)
        // What Pollo fetched, read by Pillow: a 1920×1080 JPEG without metadata.
        let key =
            "inputs/"
            + (try FileManager.default.subpathsOfDirectory(
                atPath: system.dataDir.appendingPathComponent("objects/inputs").path
            ).first { $0.contains(input?["processed"]?["sha256"]?.stringValue ?? "-") } ?? "")
        let seen = try pillow(try Data(contentsOf: system.dataDir.appendingPathComponent("objects/\(key)")))
        XCTAssertEqual(seen["format"]?.stringValue, "JPEG")
        XCTAssertEqual([seen["width"]?.intValue, seen["height"]?.intValue], [1920, 1080])
        XCTAssertEqual(seen["exif"]?.intValue, 0)

        // An image URL that is not there: the job fails before Pollo hears of it.
        let before = try await pollo.stats()["submissions"]?.intValue
        answer = try await system.request(
            .POST, "/v1/generations",
            body: #"{"model": "pollo/pollo-v2-5", "prompt": "x", "images": ["http://127.0.0.1:\#(port)/missing.jpg"]}"#)
        let failed = try await waitForEnd(system, answer.json["id"]?.stringValue ?? "")
        XCTAssertEqual(failed["status"]?.stringValue, "failed")
        XCTAssertEqual(failed["error"]?["code"]?.stringValue, "invalid_image")
        XCTAssertTrue(failed["error"]?["message"]?.stringValue?.contains("HTTP 404") ?? false, "\(failed)")
        let after = try await pollo.stats()["submissions"]?.intValue
        XCTAssertEqual(before, after)
        // The link Pollo was given is signed: without its signature, nothing.
        let bare = try await GenGateSystem.rawRequest(.GET, system.baseURL + "/\(key)", body: nil, key: nil)
        XCTAssertEqual(bare.status, 403)
    }

    /// A process's resident memory now and at its peak, in MiB (from /proc).
    static func memory(_ pid: Int32) -> (now: Double, peak: Double) {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func value(_ name: String) -> Double {
            let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
            return (Double(line.split(separator: " ").dropFirst().first ?? "") ?? 0) / 1024
        }
        return (value("VmRSS"), value("VmHWM"))
    }

    func testAFiftyMegabyteImageGoesThroughInFlatMemory() async throws {
        let kling = try await Sim(
            provider: "kling", key: "ak_test:\(ProviderSimulatorTests.klingSecret)", knobs: #"{"task_seconds": 0.5}"#)
        defer { kling.stop() }
        let system = try await GenGateSystem.start(
            environment: kling.environment, config: #"{"images": {"max_upload_bytes": 80000000}}"#)
        defer { system.stop() }
        // A 40-megapixel JPEG of about 50 MB (noise compresses badly).
        let directory = URL(fileURLWithPath: "/tmp/ggt-big-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let (status, output) = try Python.run(
            Self.imagesScript.appendingPathComponent("make_images.py"), arguments: ["big", directory.path, "40"])
        XCTAssertEqual(status, 0, output)
        let big = try Data(contentsOf: directory.appendingPathComponent("big.jpg"))
        XCTAssertGreaterThan(big.count, 45_000_000, "the test image is big enough")

        let ingress = try XCTUnwrap(system.pid(of: "api-ingress"))
        let dispatcher = try XCTUnwrap(system.pid(of: "dispatcher"))
        let before = (Self.memory(ingress), Self.memory(dispatcher))
        let uploaded = try await upload(system, big)
        XCTAssertEqual(uploaded.status, 201, String(decoding: uploaded.body, as: UTF8.self))
        let id = uploaded.json["id"]?.stringValue ?? ""
        let answer = try await system.request(
            .POST, "/v1/generations",
            body: #"{"model": "kling/kling-v1-6", "prompt": "big", "images": ["\#(id)"], "preprocess": "standard"}"#)
        let job = try await waitForEnd(system, answer.json["id"]?.stringValue ?? "", seconds: 120)
        XCTAssertEqual(job["status"]?.stringValue, "completed", "\(job)")
        XCTAssertEqual(job["inputs"]?.arrayValue?.first?["processed"]?["width"]?.intValue, 1024)
        let after = (Self.memory(ingress), Self.memory(dispatcher))
        // The upload's bytes never sit whole in memory, nor do its pixels (40 MP are 120 MB
        // decoded): each process grows by far less than the file.
        let ingressGrowth = after.0.peak - before.0.now
        let dispatcherGrowth = after.1.peak - before.1.now
        print(
            "memory (MiB): api-ingress \(before.0.now) → peak \(after.0.peak); dispatcher \(before.1.now) → peak \(after.1.peak); file \(big.count / 1_048_576) MiB"
        )
        XCTAssertLessThan(
            ingressGrowth, 30, "api-ingress grew \(ingressGrowth) MiB for a \(big.count / 1_048_576) MiB image")
        XCTAssertLessThan(
            dispatcherGrowth, 30, "the dispatcher grew \(dispatcherGrowth) MiB for a \(big.count / 1_048_576) MiB image"
        )
    }
}
