import ArgumentParser
import Foundation
import GenGateLocalPorts

/// `gengate-bench`: starts the real multi-process GenGate (release binaries) for each scenario,
/// drives it with its own load generator, and writes a Markdown table with the machine's
/// description to BENCHMARKS.md. Benchmarks measure; they are not tests and assert nothing.
@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gengate-bench", abstract: "GenGate benchmarks")

    /// Every scenario, in the order the whole suite runs them (`soak` is not among the defaults:
    /// it lasts an hour).
    static let suite = [
        "idle", "submit", "e2e", "inflight", "overhead", "events", "scale", "everything", "costs", "s3", "alerts",
        "images",
    ]
    static let known = suite + ["soak"]

    @Option(
        parsing: .upToNextOption,
        help: "Scenarios to run (default: all but soak): \(known.joined(separator: ", ")).")
    var scenarios: [String] = suite

    @Option(help: "Seconds each load phase lasts.")
    var seconds: Int = 8

    @Option(help: "Provider tasks in flight for the inflight scenario; jobs ended in the hour for alerts.")
    var tasks: Int = 100_000

    @Option(help: "Size of the object the s3 scenario uploads, in MB.")
    var s3Megabytes: Int = 500

    @Option(help: "How long the soak lasts, in minutes.")
    var soakMinutes: Int = 60

    @Option(help: "Jobs a second the soak offers.")
    var soakRate: Double = 20

    @Option(
        help:
            "The store: sqlite (default) or postgres (a private PostgreSQL server; submit, e2e, inflight, scale, everything)."
    )
    var store: String = "sqlite"

    @Option(help: "The Markdown file whose tables this run updates (each scenario's block is replaced in place).")
    var output: String = "BENCHMARKS.md"

    @Option(help: "Where the figures (their data as JSON, and the pictures) go.")
    var figures: String = "Benchmarks/figures"

    @Option(help: "The Python that draws the figures (with matplotlib); the s3 and images scenarios use python3.")
    var python: String = ".build/bench-venv/bin/python"

    @Option(help: "LiteLLM's proxy command, for the overhead scenario's comparison.")
    var litellm: String = ".build/bench-venv/bin/litellm"

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
        if let unknown = scenarios.first(where: { !Self.known.contains($0) }) {
            throw ValidationError("unknown scenario \(unknown); known: \(Self.known.joined(separator: ", "))")
        }
        let onPostgres = ["submit", "e2e", "inflight", "scale", "everything"]
        if store == "postgres", let other = scenarios.first(where: { !onPostgres.contains($0) }) {
            throw ValidationError(
                "\(other) runs on SQLite only; with --store postgres run \(onPostgres.joined(separator: ", "))")
        }
        var runner = Scenarios(
            binaries: directory, duration: .seconds(Int64(seconds)), tasks: tasks, figures: Figures(),
            litellm: litellm
        ) { line in
            FileHandle.standardError.write(Data("\(line)\n".utf8))
        }
        if store == "postgres" { runner.postgres = try LocalPostgres() }
        var sections: [Report.Section] = []
        for scenario in scenarios {
            let made = runner.figures.all.count
            let started = Date()
            let machine = Report.machine()  // the code it runs, as it starts
            let rows: [Row]
            switch scenario {
            case "submit": rows = try await runner.submit()
            case "e2e": rows = try await runner.endToEnd()
            case "inflight": rows = try await runner.inFlight()
            case "idle": rows = try await runner.idle()
            case "s3": rows = try await runner.objectStorage(megabytes: s3Megabytes)
            case "scale": rows = try await runner.scale()
            case "alerts": rows = try await runner.alerts()
            case "images": rows = try await runner.images()
            case "events": rows = try await runner.eventStream()
            case "overhead": rows = try await runner.overhead()
            case "everything": rows = try await runner.everythingOn()
            case "costs": rows = try await runner.costs()
            default: rows = try await runner.soak(minutes: soakMinutes, rate: soakRate)
            }
            let name = store == "sqlite" ? scenario : "\(scenario)-\(store)"
            // Its pictures: the block links only those drawn now (never an older picture).
            let drawn = Array(runner.figures.all[made...])
            let drawing = Figures.draw(
                drawn, into: URL(fileURLWithPath: figures), python: python,
                script: URL(fileURLWithPath: "Benchmarks/plot.py"))
            if let problem = drawing.problem { FileHandle.standardError.write(Data("\(problem)\n".utf8)) }
            sections.append(
                Report.Section(
                    name: name, command: commandLine(for: scenario), rows: rows,
                    figures: drawn.filter { drawing.drawn.contains($0.name) },
                    seconds: Date().timeIntervalSince(started), machine: machine))
            // Each scenario's block lands as soon as it is measured: a later failure keeps it.
            try write(sections)
        }
    }

    /// The command that measures `scenario` alone with this run's settings.
    func commandLine(for scenario: String) -> String {
        var words = [".build/release/gengate-bench", "--scenarios", scenario]
        if ["submit", "e2e", "scale", "overhead", "events", "everything"].contains(scenario) {
            words += ["--seconds", "\(seconds)"]
        }
        if ["inflight", "alerts"].contains(scenario) { words += ["--tasks", "\(tasks)"] }
        if scenario == "s3" { words += ["--s3-megabytes", "\(s3Megabytes)"] }
        if scenario == "soak" { words += ["--soak-minutes", "\(soakMinutes)", "--soak-rate", "\(soakRate)"] }
        if store != "sqlite" { words += ["--store", store] }
        return words.joined(separator: " ")
    }

    func write(_ sections: [Report.Section]) throws {
        let outputURL = URL(fileURLWithPath: output)
        let figuresURL = URL(fileURLWithPath: figures)
        var document = (try? String(contentsOf: outputURL, encoding: .utf8)) ?? Report.header
        for section in sections {
            document = Report.replacing(section, in: document, figures: figuresURL, relativeTo: outputURL)
        }
        print(Report.block(section: sections.last!, figures: figuresURL, relativeTo: outputURL))
        try document.write(to: outputURL, atomically: true, encoding: .utf8)
    }
}

enum Report {
    /// One scenario's results: its block of the document.
    struct Section {
        var name: String
        var command: String
        var rows: [Row]
        var figures: [Figure]
        var seconds: Double
        /// The machine and the code it ran on, when it ran.
        var machine: String
    }

    static let header = """
        # GenGate benchmarks

        Each block below is written by `./scripts/bench` (`gengate-bench`), which replaces it in place
        when its scenario runs again. Unless a row says otherwise: the default configuration (SQLite
        store, `durability full`), the whole multi-process system (`gengate up`, release build)
        started for each scenario on free ports with a fresh data directory, and the load generator
        on the same machine, sharing its cores.

        """

    static func begin(_ name: String) -> String { "<!-- bench:\(name) -->" }
    static func end(_ name: String) -> String { "<!-- /bench:\(name) -->" }

    /// `section`'s block: how it was run and on what, its table, and its pictures.
    static func block(section: Section, figures: URL, relativeTo output: URL) -> String {
        var text = """
            \(begin(section.name))
            `\(section.command)` (\(Int(section.seconds.rounded())) s). \(section.machine)

            | scenario | target | measured | met | notes |
            | --- | --- | --- | --- | --- |

            """
        for row in section.rows {
            let met = row.met.map { $0 ? "yes" : "**no**" } ?? "—"
            text += "| \(row.scenario) | \(row.target) | \(row.measured) | \(met) | \(row.notes) |\n"
        }
        let base = output.deletingLastPathComponent().standardizedFileURL.path + "/"
        for figure in section.figures {
            let picture = figures.appendingPathComponent("\(figure.name).png").standardizedFileURL.path
            let link = picture.hasPrefix(base) ? String(picture.dropFirst(base.count)) : picture
            text += "\n![\(figure.title)](\(link))\n"
        }
        return text + end(section.name)
    }

    /// `document` with `section`'s block replaced, or added at its end under a heading.
    static func replacing(_ section: Section, in document: String, figures: URL, relativeTo output: URL) -> String {
        let block = block(section: section, figures: figures, relativeTo: output)
        if let start = document.range(of: begin(section.name)),
            let stop = document.range(of: end(section.name), range: start.upperBound..<document.endIndex)
        {
            return document.replacingCharacters(in: start.lowerBound..<stop.upperBound, with: block)
        }
        return document + "\n## \(section.name)\n\n" + block + "\n"
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
        let changed =
            run(
                "/usr/bin/env",
                [
                    "git", "status", "--porcelain", "--untracked-files=no", "--", "Package.swift", "Shared", "Services",
                    "Benchmarks/gengate-bench", "scripts",
                ]
            ).isEmpty
            ? "" : " with uncommitted changes"
        return """
            \(ProcessInfo.processInfo.activeProcessorCount) cores (\(cpu)), \(memory) memory, \
            \(run("/bin/uname", ["-sr"])); \(run("/usr/bin/env", ["swift", "--version"]).split(separator: "\n").first ?? "swift ?"); \
            commit \(run("/usr/bin/env", ["git", "rev-parse", "--short", "HEAD"]))\(changed); \(date).
            """
    }
}
