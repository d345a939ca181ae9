import Foundation
import Synchronization

/// A curve for the pictures beside the tables: lines of (x, y) points, drawn by
/// `Benchmarks/plot.py` (matplotlib) from the JSON this writes.
struct Figure: Codable, Sendable {
    struct Series: Codable, Sendable {
        var label: String
        var x: [Double]
        /// Nil where there was no reading (drawn as a gap).
        var y: [Double?]
    }

    var name: String
    var title: String
    var xLabel: String
    var yLabel: String
    var xLog = false
    var yLog = false
    /// x is a percentile (0–100), drawn on a scale of its tail (90, 99, 99.9, 99.99 evenly spaced).
    var xPercentile = false
    var series: [Series] = []

    /// A latency distribution as a line: the latency (ms) at each percentile from 1 to 99.99,
    /// denser towards the tail (drawn with `xPercentile`).
    static func distribution(_ label: String, latencies: [Double]) -> Series {
        let sorted = latencies.sorted()
        guard !sorted.isEmpty else { return Series(label: label, x: [], y: []) }
        var quantiles = stride(from: 0.01, through: 0.9, by: 0.01).map { $0 }
        quantiles += stride(from: 0.905, through: 0.99, by: 0.005).map { $0 } + [0.995, 0.999, 0.9999]
        var x: [Double] = []
        var y: [Double] = []
        for q in quantiles where Double(sorted.count) * (1 - q) >= 1 || q <= 0.99 {
            let index = min(sorted.count - 1, max(0, Int((q * Double(sorted.count)).rounded(.up)) - 1))
            x.append(q * 100)
            y.append(sorted[index] * 1_000)
        }
        return Series(label: label, x: x, y: y)
    }
}

/// The figures a run makes, in the order made.
final class Figures: Sendable {
    private let made = Mutex<[Figure]>([])

    func add(_ figure: Figure) { made.withLock { $0.append(figure) } }
    var all: [Figure] { made.withLock { $0 } }

    /// Writes each figure's data to `directory/<name>.json`, then has `plot.py` draw
    /// `directory/<name>.png` from it with `python`. Returns the pictures drawn (by name), and
    /// why none were if the drawing failed.
    static func draw(_ figures: [Figure], into directory: URL, python: String, script: URL) -> (
        drawn: Set<String>, problem: String?
    ) {
        guard !figures.isEmpty else { return ([], nil) }
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            var files: [String] = []
            for figure in figures {
                let file = directory.appendingPathComponent("\(figure.name).json")
                try encoder.encode(figure).write(to: file)
                files.append(file.path)
            }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [python, script.path] + files
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let output = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                return ([], "plot.py failed: \(String(decoding: output, as: UTF8.self).suffix(500))")
            }
            return (Set(figures.map(\.name)), nil)
        } catch {
            return ([], "figures not written: \(error)")
        }
    }
}
