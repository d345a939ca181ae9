import ArgumentParser
import Foundation
import GenGateCore
import NIOHTTP1

/// `gengate submit`: creates a generation and prints `{id, status}` (or, with --wait, the
/// finished generation).
struct SubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "submit", abstract: "Submit a generation.")

    @OptionGroup var client: ClientOptions
    @Option(name: .long, help: "Model, e.g. sim/image or sim/text.") var model: String = "sim/image"
    @Option(name: .long, help: "The prompt.") var prompt: String
    @Option(name: .customShort("n"), help: "Number of outputs (1-10).") var n: Int = 1
    @Option(name: .long, help: "Seed for deterministic outputs.") var seed: Int?
    @Flag(name: .long, help: "Wait for the generation to end, showing its progress.") var wait = false

    func run() async throws {
        let api = try client.client()
        var body: [String: JSONValue] = ["model": .string(model), "prompt": .string(prompt), "n": .number(Double(n))]
        if let seed { body["seed"] = .number(Double(seed)) }
        let created = try api.expect(try await api.call(.POST, "/v1/generations", body: .object(body)))
        guard wait, let id = created["id"]?.stringValue else {
            Printer.json(created)
            return
        }
        try await Watcher.follow(id, api: api)
    }
}

/// `gengate status <id>`: prints a generation.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show a generation.")

    @OptionGroup var client: ClientOptions
    @Argument(help: "Generation id.") var id: String

    func run() async throws {
        let api = try client.client()
        Printer.json(try api.expect(try await api.call(.GET, "/v1/generations/\(id)")))
    }
}

/// `gengate watch <id>`: follows a generation until it ends, one line per change.
struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch", abstract: "Follow a generation until it ends.")

    @OptionGroup var client: ClientOptions
    @Argument(help: "Generation id.") var id: String

    func run() async throws {
        try await Watcher.follow(id, api: try client.client())
    }
}

/// `gengate cancel <id>`.
struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel", abstract: "Cancel a generation.")

    @OptionGroup var client: ClientOptions
    @Argument(help: "Generation id.") var id: String

    func run() async throws {
        let api = try client.client()
        Printer.json(try api.expect(try await api.call(.POST, "/v1/generations/\(id)/cancel")))
    }
}

enum Watcher {
    /// Prints each change of status or progress, then the final generation; fails if it failed.
    static func follow(_ id: String, api: APIClient) async throws {
        var last = ""
        while true {
            let generation = try api.expect(try await api.call(.GET, "/v1/generations/\(id)"))
            let status = generation["status"]?.stringValue ?? "?"
            let line = "\(id) \(status) \(generation["progress"]?.intValue ?? 0)%"
            if line != last {
                FileHandle.standardError.write(Data((line + "\n").utf8))
                last = line
            }
            if ["completed", "failed", "cancelled"].contains(status) {
                Printer.json(generation)
                if status != "completed" { throw ExitCode(1) }
                return
            }
            try await Task.sleep(for: .milliseconds(300))
        }
    }
}
