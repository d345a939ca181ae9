import Foundation

extension Scenarios {
    /// What budgets and experiment results cost: `Benchmarks/costs/bench_costs.py` (standard
    /// library Python) starts one `gengate up` from these binaries, submits with a key without a
    /// budget and one with budgets, then feeds an experiment 10,000 jobs and times its results;
    /// each line it prints (`label: figure, details`) becomes a row.
    func costs() async throws -> [Row] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-u", "Benchmarks/costs/bench_costs.py", "--bin", binaries.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.standardError
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw BenchError("bench_costs.py failed (\(process.terminationStatus)): \(output.suffix(500))")
        }
        return output.split(separator: "\n").compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            log("costs: \(line)")
            let figures = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            let parts = figures.split(separator: ",", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            return Row(
                scenario: String(line[..<colon]), target: "—", measured: parts.first ?? figures, met: nil,
                notes: parts.count > 1 ? parts[1] : "")
        }
    }
}
