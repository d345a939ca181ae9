import ArgumentParser
import Foundation
import GenGateLocalPorts

/// `gengate-bench`: starts the real multi-process GenGate (release binaries) for each scenario,
/// drives it with its own load generator, and writes a Markdown table with the machine's
/// description to BENCHMARKS.md. Benchmarks measure; they are not tests and assert nothing.
@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gengate-bench", abstract: "GenGate benchmarks")

    @Option(
        parsing: .upToNextOption,
        help: "Scenarios to run: idle, submit, e2e, inflight, s3, scale, alerts, images, events.")
    var scenarios: [String] = ["idle", "submit", "e2e", "inflight"]

    @Option(help: "Seconds each load phase lasts.")
    var seconds: Int = 8

    @Option(help: "Provider tasks in flight for the inflight scenario; jobs ended in the hour for alerts.")
    var tasks: Int = 100_000

    @Option(help: "Size of the object the s3 scenario uploads, in MB.")
    var s3Megabytes: Int = 500

    @Option(
        help: "The store: sqlite (default) or postgres (a private PostgreSQL server; submit, e2e, inflight, scale).")
    var store: String = "sqlite"

    @Option(help: "Where to write the results (Markdown).")
    var output: String = "BENCHMARKS.md"

    @Option(help: "Directory of the gengate binaries (default: next to this one).")
    var binaries: String?

    func run() async throws {
        let directory =
            binaries.map { URL(fileURLWithPath: $0) }
            ?? URL(
                fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                    ?? CommandLine.arguments[0]
            )
            .deletingLastPathComponent()
        guard ["sqlite", "postgres"].contains(store) else { throw ValidationError("--store is sqlite or postgres") }
        if store == "postgres",
            let other = scenarios.first(where: { !["submit", "e2e", "inflight", "scale"].contains($0) })
        {
            throw ValidationError(
                "\(other) runs on SQLite only; with --store postgres run submit, e2e, inflight, scale")
        }
        var runner = Scenarios(binaries: directory, duration: .seconds(Int64(seconds)), tasks: tasks) { line in
            FileHandle.standardError.write(Data("\(line)\n".utf8))
        }
        if store == "postgres" { runner.postgres = try LocalPostgres() }
        var rows: [Row] = []
        for scenario in scenarios {
            switch scenario {
            case "submit": rows += try await runner.submit()
            case "e2e": rows += try await runner.endToEnd()
            case "inflight": rows += try await runner.inFlight()
            case "idle": rows += try await runner.idle()
            case "s3": rows += try await runner.objectStorage(megabytes: s3Megabytes)
            case "scale": rows += try await runner.scale()
            case "alerts": rows += try await runner.alerts()
            case "images": rows += try await runner.images()
            case "events": rows += try await runner.eventStream()
            default:
                throw ValidationError(
                    "unknown scenario \(scenario); known: submit, e2e, inflight, idle, s3, scale, alerts, images, events"
                )
            }
        }
        let report = Report.markdown(rows: rows, command: CommandLine.arguments.joined(separator: " "))
        print(report)
        try report.write(toFile: output, atomically: true, encoding: .utf8)
    }
}

enum Report {
    static func markdown(rows: [Row], command: String) -> String {
        var text = """
            # GenGate benchmarks

            Produced by `./scripts/bench` (`\(command)`), on the default configuration (SQLite store,
            `durability full`) unless a row says otherwise. Each scenario starts the whole
            multi-process system (`gengate up`, release build) on free ports with a fresh data
            directory; the load generator runs on the same machine and shares its cores.

            \(machine())

            | scenario | target | measured | met | notes |
            | --- | --- | --- | --- | --- |

            """
        for row in rows {
            let met = row.met.map { $0 ? "yes" : "**no**" } ?? "—"
            text += "| \(row.scenario) | \(row.target) | \(row.measured) | \(met) | \(row.notes) |\n"
        }
        return text
    }

    static func machine() -> String {
        func run(_ path: String, _ arguments: [String]) -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = Pipe()
            guard (try? process.run()) != nil else { return "?" }
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let cpu =
            (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }?.split(separator: ":").last?
            .trimmingCharacters(in: .whitespaces) ?? "?"
        let memory =
            (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("MemTotal") }.map { String($0.split(separator: " ")[1]) }
            .flatMap(Double.init).map { String(format: "%.0f GiB", $0 / 1_048_576) } ?? "?"
        let date = ISO8601DateFormatter().string(from: Date())
        return """
            Machine: \(ProcessInfo.processInfo.activeProcessorCount) cores (\(cpu)), \(memory) memory, \
            \(run("/bin/uname", ["-sr"])); \(run("/usr/bin/env", ["swift", "--version"]).split(separator: "\n").first ?? "swift ?"); \
            commit \(run("/usr/bin/env", ["git", "rev-parse", "--short", "HEAD"])); \(date).
            """
    }
}
