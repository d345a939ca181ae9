import Foundation
import GenGateCore
import GenGateObjects

extension Scenarios {
    /// A 500 MB output into S3: a local S3-compatible server (moto's, started from
    /// Tests/S3/s3server.py, which needs the test requirements), the S3 store with its default
    /// 16 MiB parts, and this process's memory sampled every 20 ms while the upload runs.
    func objectStorage(megabytes: Int = 500) async throws -> [Row] {
        let root = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-u", root.appendingPathComponent("Tests/S3/s3server.py").path]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            try? input.fileHandleForWriting.close()
            process.waitUntilExit()
        }
        var line = Data()
        while line.last != UInt8(ascii: "\n") {
            let byte = output.fileHandleForReading.readData(ofLength: 1)
            guard !byte.isEmpty else {
                throw BenchError("the S3 server did not start (pip install -r Tests/SDK/requirements.txt)")
            }
            line.append(byte)
        }
        let info = try JSONCoding.decode(JSONValue.self, from: line)
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("bench-s3-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let store = try S3ObjectStore(
            settings: S3Settings(
                endpoint: info["endpoint"]?.stringValue ?? "", bucket: info["bucket"]?.stringValue ?? "",
                region: "us-east-1", pathStyle: true,
                credentials: .init(
                    accessKeyID: info["access_key_id"]?.stringValue ?? "",
                    secretAccessKey: info["secret_access_key"]?.stringValue ?? "")),
            scratch: scratch)

        // A file of distinct bytes (not sparse), as a downloaded video would be.
        let file = try store.scratchFile()
        FileManager.default.createFile(atPath: file.path, contents: nil)
        let handle = try FileHandle(forWritingTo: file)
        var block = Data(count: 1 << 20)
        for index in 0..<megabytes {
            block[0] = UInt8(truncatingIfNeeded: index)
            block[1] = UInt8(truncatingIfNeeded: index >> 8)
            try handle.write(contentsOf: block)
        }
        try handle.close()
        let size = megabytes << 20

        let before = Self.residentMiB()
        let peak = Peak(before)
        let sampler = Task {
            while !Task.isCancelled {
                peak.see(Self.residentMiB())
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        let started = ContinuousClock.now
        let stored = try await store.put(key: "bench/\(UUID().uuidString).mp4", file: file, contentType: "video/mp4")
        let elapsed = ContinuousClock.now - started
        sampler.cancel()
        peak.see(Self.residentMiB())
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        log("s3: \(stored.bytes) bytes in \(elapsed); memory \(before) → peak \(peak.value) MiB")
        let growth = peak.value - before
        return [
            Row(
                scenario: "\(megabytes) MB output into S3 (multipart, 16 MiB parts): throughput",
                target: "—", measured: String(format: "%.0f MB/s", Double(size) / 1e6 / seconds), met: nil,
                notes: String(
                    format:
                        "%d parts, each signed with its SHA-256, to moto's S3 server (Python) sharing the same 2 cores (%.1f s)",
                    (size + (16 << 20) - 1) / (16 << 20), seconds)),
            Row(
                scenario: "… memory of the uploading process", target: "flat, not growing with the object",
                measured: String(format: "+%.0f MiB peak", growth), met: growth < 64,
                notes: String(
                    format:
                        "RSS %.0f MiB before, peak %.0f MiB during (sampled every 20 ms); parts are read from the file one at a time",
                    before, peak.value)),
        ]
    }

    static func residentMiB() -> Double {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1_024
    }
}

/// The highest value seen, from any task.
final class Peak: @unchecked Sendable {
    private let lock = NSLock()
    private var highest: Double

    init(_ start: Double) { highest = start }

    func see(_ value: Double) { lock.withLock { highest = max(highest, value) } }
    var value: Double { lock.withLock { highest } }
}
