import ArgumentParser
import Foundation
import GenGateClient
import GenGateCore
import GenGateRuntime

/// Options shared by the client commands: which GenGate, and which key.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "GenGate's base URL (default http://127.0.0.1:8080; GENGATE_URL).")
    var url: String?

    @Option(name: .long, help: "API key (GENGATE_API_KEY; default: the admin key in the data dir).")
    var key: String?

    @Option(name: .long, help: "Data directory whose admin.key to use when no key is given.")
    var dataDir: String?

    func client() throws -> GenGateClient {
        let environment = ProcessInfo.processInfo.environment
        let base = url ?? environment["GENGATE_URL"] ?? "http://127.0.0.1:\(environment["GENGATE_HTTP_PORT"] ?? "8080")"
        var secret = key ?? environment["GENGATE_API_KEY"]
        if secret == nil {
            var config = GenGateConfig()
            config.dataDir = dataDir ?? environment["GENGATE_DATA_DIR"] ?? config.dataDir
            secret = (try? String(contentsOf: config.adminKeyPath, encoding: .utf8))?.trimmingCharacters(
                in: .whitespacesAndNewlines)
        }
        guard let secret, !secret.isEmpty else {
            throw ValidationError(
                "no API key: pass --key, set GENGATE_API_KEY, or run where ./.gengate/admin.key exists")
        }
        return GenGateClient(baseURL: base, apiKey: secret)
    }
}

/// A failure of a client command: printed as `Error: <text>`, exit status 1, no usage text
/// (that is for mistakes in the command line itself, which stay `ValidationError`s).
struct ClientError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs a client call; the API's errors become `ClientError`s (`code: message`).
func calling<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as GenGateClientError {
        throw ClientError(error.description)
    }
}

enum Printer {
    static func json(_ value: JSONValue) {
        let data = (try? JSONCoding.encoder(pretty: true).encode(value)) ?? Data()
        print(String(decoding: data, as: UTF8.self))
    }
}

/// `gengate submit`: creates a generation and prints `{id, status}` (or, with --wait, follows it
/// live and prints the finished generation).
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
        let job = try await calling {
            try await api.submit(GenerationRequest(model: model, prompt: prompt, n: n, seed: seed))
        }
        guard wait else {
            Printer.json(job.json)
            return
        }
        try await Watcher.follow(job.id, api: api)
    }
}

/// `gengate status <id>`: prints a generation.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show a generation.")

    @OptionGroup var client: ClientOptions
    @Argument(help: "Generation id.") var id: String

    func run() async throws {
        let api = try client.client()
        Printer.json(try await calling { try await api.job(id) }.json)
    }
}

/// `gengate watch <id>`: follows a generation live until it ends (a progress bar on a terminal).
struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch", abstract: "Follow a generation live until it ends.")

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
        Printer.json(try await calling { try await api.cancel(id) }.json)
    }
}

enum Watcher {
    /// Follows the job's events, showing its state and progress on standard error (a bar
    /// redrawn in place on a terminal, one line per change otherwise) and streamed text as it
    /// comes; then prints the ended job on standard output. Fails if it did not complete.
    static func follow(_ id: String, api: GenGateClient) async throws {
        let terminal = isatty(STDERR_FILENO) == 1
        var status = "pending"
        var progress = 0
        var last = ""
        var ended = false
        func show() {
            let line: String
            if terminal {
                let filled = min(20, max(0, progress / 5))
                line =
                    "\r\(id) [\(String(repeating: "#", count: filled))\(String(repeating: "-", count: 20 - filled))] \(progress)% \(status)   "
            } else {
                line = "\(id) \(status) \(progress)%\n"
            }
            guard line != last else { return }
            last = line
            FileHandle.standardError.write(Data(line.utf8))
        }
        show()
        do {
            for try await event in api.events(of: id) {
                switch event {
                case .queue(let position):
                    status = "pending (\(position) ahead)"
                case .done(let end):
                    status = end.rawValue
                    if end == .completed { progress = 100 }
                    ended = true
                case .event(_, let event):
                    switch event.payload {
                    case .generationStarted: status = "running"
                    case .generationProgress(let update): progress = update.progress
                    case .generationOutput: status = "uploading"
                    case .generationRetrying(let retry): status = "retrying (\(retry.error.code.rawValue))"
                    case .generationFallback(let move): status = "falling back to \(move.to)"
                    case .generationStreamChunk(let chunk):
                        FileHandle.standardError.write(Data(((terminal ? "\r" : "") + chunk.text).utf8))
                        last = ""
                    default: break
                    }
                }
                show()
            }
        } catch let error as GenGateClientError {
            if case .api = error { throw ClientError(error.description) }
            // The stream broke off: the job's state is read below all the same.
        }
        if terminal { FileHandle.standardError.write(Data("\n".utf8)) }
        // Its stream said it ended: read it; else (the stream broke off) wait for it.
        let job = try await calling { ended ? try await api.job(id) : try await api.wait(for: id) }
        Printer.json(job.json)
        if job.status != .completed { throw ExitCode(1) }
    }
}
