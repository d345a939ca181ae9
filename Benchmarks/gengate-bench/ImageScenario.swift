import Foundation
import GenGateCore
import GenGateImages

extension Scenarios {
    /// The `standard` preset (within 1024 × 1024, JPEG quality 85, orientation applied, metadata
    /// dropped) on photo-like 12-megapixel JPEGs made by Pillow: images a second and peak memory
    /// of GenGate's processor (libvips, one and two images at once, in this process), beside
    /// Pillow doing the same resize and encode in one Python process, plainly and with
    /// `Image.draft` (libjpeg decoding at a reduced scale, as libvips shrinks on load). Also the
    /// check an upload gets (its bytes sniffed, every pixel decoded once).
    func images() async throws -> [Row] {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("images/pillow_bench.py")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "gengate-bench-images-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: directory) }
        let count = 24
        try python([script.path, "make", directory.path, "\(count)", "12"])
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".jpg") }
            .sorted().map { directory.appendingPathComponent($0) }
        let averageMB =
            Double(files.map { (try? Data(contentsOf: $0).count) ?? 0 }.reduce(0, +)) / Double(files.count) / 1e6
        let standard = ImagePipeline.presets["standard"]!
        var rows: [Row] = []
        for concurrency in [1, 2] {
            let processor = ImageProcessor(concurrency: concurrency)
            // Warm: libvips' first call loads its codecs.
            _ = try await processor.process(file: files[0], input: .jpeg, pipeline: standard)
            let (seconds, peak, baseline) = try await measured {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for file in files {
                        group.addTask { _ = try await processor.process(file: file, input: .jpeg, pipeline: standard) }
                    }
                    try await group.waitForAll()
                }
            }
            await processor.shutdown()
            let rate = Double(files.count) / seconds
            log(
                "images: GenGate standard, \(concurrency) at once: \(String(format: "%.1f", rate))/s, peak +\(Int(peak - baseline)) MiB"
            )
            rows.append(
                Row(
                    scenario: "image preset `standard`, 12 MP JPEG, GenGate (libvips), \(concurrency) at once",
                    target: "—", measured: String(format: "%.1f images/s", rate), met: nil,
                    notes: String(
                        format: "peak memory %.0f MiB above the process's %.0f MiB; %d images of %.1f MB on average",
                        peak - baseline, baseline, files.count, averageMB)))
        }
        let checker = ImageProcessor(concurrency: 2)
        let (checkSeconds, checkPeak, checkBaseline) = try await measured {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for file in files {
                    group.addTask { _ = try await checker.inspect(file: file, bytes: 0, sha256: "") }
                }
                try await group.waitForAll()
            }
        }
        await checker.shutdown()
        rows.append(
            Row(
                scenario: "upload check (sniff, header, every pixel decoded), 12 MP JPEG, 2 at once", target: "—",
                measured: String(format: "%.1f images/s", Double(files.count) / checkSeconds), met: nil,
                notes: String(format: "peak memory %.0f MiB above the process's", checkPeak - checkBaseline)))
        for mode in ["plain", "draft"] {
            let output = try python([script.path, "run", directory.path, mode])
            guard case .object(let result) = try JSONCoding.decode(JSONValue.self, from: Data(output.utf8)),
                let rate = result["images_per_second"]?.doubleValue, let peak = result["peak_rss_mib"]?.doubleValue,
                let baseline = result["baseline_rss_mib"]?.doubleValue
            else { throw BenchError("pillow_bench.py said: \(output)") }
            log("images: Pillow \(mode): \(String(format: "%.1f", rate))/s, peak +\(Int(peak - baseline)) MiB")
            rows.append(
                Row(
                    scenario:
                        "image preset `standard`, 12 MP JPEG, Pillow \(mode == "draft" ? "with `draft`" : "plain"), one process",
                    target: "—", measured: String(format: "%.1f images/s", rate), met: nil,
                    notes: String(
                        format: "peak memory %.0f MiB above the process's %.0f MiB (Pillow %@)", peak - baseline,
                        baseline, pillowVersion())))
        }
        return rows
    }

    /// Seconds `work` took, and this process's resident memory at its peak meanwhile and before
    /// (MiB), sampled every 5 ms.
    func measured(_ work: () async throws -> Void) async throws -> (Double, Double, Double) {
        let baseline = Self.residentMiB()
        let sampler = Task {
            var peak = baseline
            while !Task.isCancelled {
                peak = max(peak, Self.residentMiB())
                try? await Task.sleep(for: .milliseconds(5))
            }
            return peak
        }
        let started = ContinuousClock.now
        try await work()
        let seconds = HTTPLoad.seconds(ContinuousClock.now - started)
        sampler.cancel()
        return (seconds, max(await sampler.value, Self.residentMiB()), baseline)
    }

    func pillowVersion() -> String {
        (try? python(["-c", "import PIL; print(PIL.__version__)"]))?.trimmingCharacters(in: .whitespacesAndNewlines)
            ?? "?"
    }

    /// Runs python3 with `arguments`; what it printed. Throws when it fails.
    @discardableResult
    func python(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw BenchError("python3 \(arguments.prefix(2).joined(separator: " ")) failed")
        }
        return String(decoding: data, as: UTF8.self)
    }
}
