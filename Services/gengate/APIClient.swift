import ArgumentParser
import AsyncHTTPClient
import Foundation
import GenGateCore
import GenGateRuntime
import NIOCore
import NIOHTTP1

/// Options shared by the client commands: which GenGate, and which key.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "GenGate's base URL (default http://127.0.0.1:8080; GENGATE_URL).")
    var url: String?

    @Option(name: .long, help: "API key (GENGATE_API_KEY; default: the admin key in the data dir).")
    var key: String?

    @Option(name: .long, help: "Data directory whose admin.key to use when no key is given.")
    var dataDir: String?

    func client() throws -> APIClient {
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
        return APIClient(baseURL: base.hasSuffix("/") ? String(base.dropLast()) : base, key: secret)
    }
}

/// A minimal client of the GenGate HTTP API.
struct APIClient {
    let baseURL: String
    let key: String

    struct Answer {
        var status: Int
        var body: JSONValue
    }

    func call(_ method: HTTPMethod, _ path: String, body: JSONValue? = nil) async throws -> Answer {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(key)")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONCoding.encode(body)))
        }
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        } catch {
            throw ClientError("cannot reach GenGate at \(baseURL): \(error)")
        }
        let bytes = try await response.body.collect(upTo: 16 * 1_024 * 1_024)
        let value = (try? JSONCoding.decode(JSONValue.self, from: Data(bytes.readableBytesView))) ?? .null
        return Answer(status: Int(response.status.code), body: value)
    }

    /// The answer's body when it is a success; otherwise the API's error, as a failure.
    func expect(_ answer: Answer) throws -> JSONValue {
        guard (200..<300).contains(answer.status) else {
            let code = answer.body["error"]?["code"]?.stringValue ?? "http_\(answer.status)"
            let message = answer.body["error"]?["message"]?.stringValue ?? "HTTP \(answer.status)"
            throw ClientError("\(code): \(message)")
        }
        return answer.body
    }
}

/// A failure of a client command: printed as `Error: <text>`, exit status 1, no usage text
/// (that is for mistakes in the command line itself, which stay `ValidationError`s).
struct ClientError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

enum Printer {
    static func json(_ value: JSONValue) {
        let data = (try? JSONCoding.encoder(pretty: true).encode(value)) ?? Data()
        print(String(decoding: data, as: UTF8.self))
    }
}
