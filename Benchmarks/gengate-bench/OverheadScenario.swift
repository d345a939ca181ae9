import Foundation
import GenGateLocalPorts

extension Scenarios {
    /// What GenGate adds to a call: a zero-latency OpenAI-compatible chat model (the provider
    /// simulator answering at once) called directly (streamed, as GenGate calls it), through GenGate's
    /// `POST /v1/chat/completions` (a durable job: recorded, dispatched, its answer stored as an
    /// output and the job completed before the reply), and through LiteLLM's proxy (2 workers, its
    /// defaults, no database) in front of the same simulator, at 1 and at 16 clients.
    func overhead() async throws -> [Row] {
        let port = try FreePorts.take(1)[0]
        let sim = ServerProcess(
            binaries.appendingPathComponent("provider-sim").path,
            ["--provider", "openai", "--key", "sk-bench", "--port", "\(port)", "--knobs", #"{"task_seconds": 0}"#],
            name: "sim")
        try await sim.start(ready: "http://127.0.0.1:\(port)/_sim/stats")
        defer { sim.stop() }
        let upstream = "http://127.0.0.1:\(port)/v1"
        let system = try await SystemUnderTest.start(
            binaries: binaries, environment: ["OPENAI_API_KEY": "sk-bench", "GENGATE_OPENAI_BASE_URL": upstream])
        defer { system.stop() }
        let proxy = try await startLiteLLM(upstream: upstream)
        defer { proxy?.server.stop() }

        struct Target {
            var name: String
            var url: String
            var bearer: String?
            var model: String
            /// Extra fields of the request.
            var extra = ""
        }
        // The simulator alone is asked as GenGate asks it (streamed, with the usage chunk), so that
        // the difference is GenGate's own; clients of GenGate and LiteLLM ask without streaming.
        var targets = [
            Target(
                name: "simulator alone", url: upstream + "/chat/completions", bearer: "sk-bench", model: "gpt-4o-mini",
                extra: #", "stream": true, "stream_options": {"include_usage": true}"#),
            Target(
                name: "through GenGate", url: system.baseURL + "/v1/chat/completions", bearer: system.adminKey,
                model: "openai/gpt-4o-mini"),
        ]
        if let proxy {
            targets.append(
                Target(name: "through LiteLLM", url: proxy.url + "/chat/completions", bearer: nil, model: "gpt-4o-mini")
            )
        }
        var results: [Int: [String: HTTPLoad.Result]] = [:]
        var figure = Figure(
            name: "overhead-latency", title: "Chat completion latency, zero-latency model",
            xLabel: "percentile", yLabel: "latency (ms)", yLog: true, xPercentile: true)
        for clients in [1, 16] {
            for target in targets {
                let send: @Sendable (Int) async -> (ok: Bool, id: String?) = { number in
                    let body =
                        #"{"model": "\#(target.model)", "messages": [{"role": "user", "content": "overhead \#(number)"}]\#(target.extra)}"#
                    return (await HTTPLoad.post(target.url, bearer: target.bearer, body: body), nil)
                }
                _ = await HTTPLoad.closedLoop(clients: clients, duration: .seconds(1), send: send)  // warm up
                let result = await HTTPLoad.closedLoop(clients: clients, duration: duration, send: send)
                results[clients, default: [:]][target.name] = result
                log(
                    "overhead, \(clients) client(s), \(target.name): \(Int(result.rate))/s, p50 \(ms(result.latencies.quantile(0.5))), p99 \(ms(result.latencies.quantile(0.99))), \(result.failures) failed"
                )
                figure.series.append(
                    Figure.distribution(
                        "\(target.name), \(clients) client\(clients == 1 ? "" : "s")",
                        latencies: result.latencies))
            }
        }
        figures.add(figure)

        func summary(_ result: HTTPLoad.Result?) -> String {
            guard let result else { return "not run" }
            return
                "\(Int(result.rate))/s, p50 \(ms(result.latencies.quantile(0.5))), p99 \(ms(result.latencies.quantile(0.99)))\(result.failures > 0 ? ", \(result.failures) failed" : "")"
        }
        let alone1 = results[1]?["simulator alone"]
        let gate1 = results[1]?["through GenGate"]
        let lite1 = results[1]?["through LiteLLM"]
        let addedP50 = (gate1?.latencies.quantile(0.5) ?? .nan) - (alone1?.latencies.quantile(0.5) ?? .nan)
        let addedP99 = (gate1?.latencies.quantile(0.99) ?? .nan) - (alone1?.latencies.quantile(0.99) ?? .nan)
        let gate16 = results[16]?["through GenGate"]
        let lite16 = results[16]?["through LiteLLM"]
        // A LiteLLM that answered nothing (or failed) makes no ratio.
        let liteServed = lite16.map { !$0.latencies.isEmpty && $0.failures == 0 } ?? false
        let ratio = liteServed ? (gate16?.rate ?? 0) / (lite16?.rate ?? .nan) : .nan
        var rows = [
            Row(
                scenario:
                    "overhead, 1 client: latency GenGate adds to a chat completion (its percentile less the simulator's)",
                target: "p50 ≤ 1 ms, p99 ≤ 5 ms",
                measured: "p50 +\(ms(addedP50)), p99 +\(ms(addedP99))",
                met: addedP50 <= 0.001 && addedP99 <= 0.005,
                notes:
                    "simulator alone \(summary(alone1)); through GenGate \(summary(gate1)); through LiteLLM \(summary(lite1))"
            ),
            Row(
                scenario: "overhead, 16 clients: chat completions through GenGate",
                target: "≥ 6,000/s and ≥ 50× LiteLLM's",
                measured: "\(Int(gate16?.rate ?? 0))/s, "
                    + (liteServed ? String(format: "%.1f× LiteLLM's", ratio) : "no LiteLLM figure"),
                met: (gate16?.rate ?? 0) >= 6_000 && liteServed && ratio >= 50,
                notes:
                    "simulator alone \(summary(results[16]?["simulator alone"])); through GenGate \(summary(gate16)); through LiteLLM \(summary(lite16))"
            ),
        ]
        if proxy == nil {
            rows.append(
                Row(
                    scenario: "overhead: LiteLLM", target: "—", measured: "not run", met: nil,
                    notes:
                        "\(litellm) not found or did not start: ./scripts/bench installs it (Benchmarks/requirements.txt)"
                ))
        }
        return rows
    }

    /// LiteLLM's proxy, as most users run it (`litellm --config … --num_workers 2`, no database),
    /// serving `gpt-4o-mini` from `upstream`. Nil when it is not installed or does not start
    /// (said in the log; the scenario goes on without it).
    func startLiteLLM(upstream: String) async throws -> (server: ServerProcess, url: String)? {
        guard FileManager.default.isExecutableFile(atPath: litellm) else {
            log("overhead: \(litellm) not found; LiteLLM is left out")
            return nil
        }
        let port = try FreePorts.take(1)[0]
        let config = URL(fileURLWithPath: "/tmp/ggbench-litellm-\(port).yaml")
        defer { try? FileManager.default.removeItem(at: config) }  // read at start
        try """
        model_list:
          - model_name: gpt-4o-mini
            litellm_params:
              model: openai/gpt-4o-mini
              api_base: \(upstream)
              api_key: sk-bench
        """.write(to: config, atomically: true, encoding: .utf8)
        let server = ServerProcess(
            litellm, ["--config", config.path, "--host", "127.0.0.1", "--port", "\(port)", "--num_workers", "2"],
            environment: ["LITELLM_LOG": "ERROR"], name: "litellm")
        do {
            try await server.start(ready: "http://127.0.0.1:\(port)/health/liveliness", within: .seconds(180))
        } catch {
            log("overhead: LiteLLM did not start (\(error)); it is left out")
            return nil
        }
        return (server, "http://127.0.0.1:\(port)/v1")
    }
}
