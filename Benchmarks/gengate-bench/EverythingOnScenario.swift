import AsyncHTTPClient
import Foundation
import GenGateCore
import GenGateLocalPorts
import Hummingbird
import NIOCore
import Synchronization

extension Scenarios {
    /// The end-to-end run (64 clients, zero-latency sim images) bare, then with everything a
    /// production gateway has switched on at once: every job with a webhook (its `output` and
    /// `completed` events POSTed, signed, to a receiver in this process), four SSE readers of
    /// `GET /v1/events`, a key with daily and monthly budgets (each job's cost reserved and
    /// settled), and half of the jobs sent to a running A/B experiment of two variants. The
    /// monitor's alert rules run in both, as they do by default.
    func everythingOn() async throws -> [Row] {
        let config =
            #"{"jobs": {"model_check_schedules": {"sim/image": {"first_seconds": 0.01, "factor": 1.5, "max_seconds": 1, "jitter": 0.2}}}}"#
        let bare = try await endToEndRun(config: config, environment: [:], everything: false)
        try await Task.sleep(for: .seconds(2))
        let all = try await endToEndRun(
            config: config,
            environment: ["GENGATE_WEBHOOK_ALLOW_PRIVATE": "true"],
            everything: true)
        let share = all.completion.rate / bare.completion.rate
        return [
            Row(
                scenario: "end to end, 64 clients, bare\(onStore)", target: "—",
                measured: "\(Int(bare.completion.rate)) jobs/s", met: nil,
                notes:
                    "\(bare.completion.latencies.count) of \(bare.submitted) completed; p50 \(ms(bare.completion.latencies.quantile(0.5))), p99 \(ms(bare.completion.latencies.quantile(0.99)))"
            ),
            Row(
                scenario: "end to end, 64 clients, everything on\(onStore)", target: "≥ 80% of the bare run",
                measured: String(format: "%.0f jobs/s (%.0f%%)", all.completion.rate, share * 100), met: share >= 0.8,
                notes:
                    "\(all.completion.latencies.count) of \(all.submitted) completed; p50 \(ms(all.completion.latencies.quantile(0.5))), p99 \(ms(all.completion.latencies.quantile(0.99))); \(all.webhooksByEnd) webhook deliveries received by the last job's end, all \(all.webhooks) of \(2 * all.submitted) \(String(format: "%.1f", all.webhookLag)) s later; \(all.streamed) SSE events read by 4 readers, half the jobs through the experiment, a budgeted key"
            ),
        ]
    }

    struct EndToEndRun {
        var submitted: Int
        var completion: Completion
        var webhooks = 0
        /// Deliveries received by the time the last job completed, and how long after it the rest took.
        var webhooksByEnd = 0
        var webhookLag = 0.0
        var streamed = 0
    }

    func endToEndRun(config: String, environment: [String: String], everything: Bool) async throws -> EndToEndRun {
        var environment = environment
        environment["GENGATE_SIM_LATENCY_MS"] = "0"
        let system = try await SystemUnderTest.start(
            binaries: binaries, environment: environment, config: config, postgres: postgres)
        defer { system.stop() }
        guard everything else {
            let load = await HTTPLoad.closedLoop(system, clients: 64, duration: duration) {
                #"{"model": "sim/image", "prompt": "bare \#($0)", "width": 16, "height": 16}"#
            }
            let done = try await waitForCompletion(system, ids: load.ids)
            log("everything: bare, \(load.ids.count) submitted, \(Int(done.rate))/s completed")
            return EndToEndRun(submitted: load.ids.count, completion: done)
        }
        // The webhook receiver: answers 204 to every delivery, counting each delivery once (by its
        // webhook-id: a delivery sent again is the same one).
        let deliveries = Mutex(Set<String>())
        let received = Atomic<Int>(0)
        let hookPort = try FreePorts.take(1)[0]
        let router = Router()
        router.post("/hook") { request, _ -> HTTPResponse.Status in
            _ = try await request.body.collect(upTo: 1 << 22)
            let id = request.headers[values: .init("webhook-id")!].first ?? ""
            if deliveries.withLock({ $0.insert(id).inserted }) { received.add(1, ordering: .relaxed) }
            return .noContent
        }
        let receiver = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: hookPort)))
        let receiving = Task { try await receiver.runService(gracefulShutdownSignals: []) }
        defer { receiving.cancel() }

        // A key with budgets far above what the run spends: each job is still reserved and settled.
        let key =
            try await admin(
                system, "/v1/admin/keys",
                #"{"name": "everything", "budget_daily": 1000000, "budget_monthly": 10000000}"#
            )["key"]?.stringValue ?? ""
        let experiment =
            try await admin(
                system, "/v1/admin/experiments",
                #"{"name": "bench", "variants": [{"name": "a", "model": "sim/image", "traffic": 50}, {"name": "b", "model": "sim/image", "traffic": 50, "params": {"style": "b"}}]}"#
            )["id"]?.stringValue ?? ""
        _ = try await admin(system, "/v1/admin/experiments/\(experiment)/start", "{}")

        // Four readers of every event of the budgeted key's jobs (the load's).
        let streamed = Counter()
        let readers = (0..<4).map { _ in
            Task {
                var request = HTTPClientRequest(url: system.baseURL + "/v1/events")
                request.headers.add(name: "Authorization", value: "Bearer \(key)")
                guard let response = try? await HTTPLoad.client.execute(request, timeout: .hours(1)) else { return }
                do {
                    for try await chunk in response.body {
                        let events = chunk.readableBytesView.split(separator: UInt8(ascii: "\n"))
                            .count { $0.starts(with: Array("data:".utf8)) }
                        streamed.value.withLock { $0 += events }
                    }
                } catch {}
            }
        }
        defer { for reader in readers { reader.cancel() } }
        try await Task.sleep(for: .seconds(1))

        let hook = "http://127.0.0.1:\(hookPort)/hook"
        let load = await HTTPLoad.closedLoop(clients: 64, duration: duration) { number in
            let target =
                number % 2 == 0 ? #""experiment": "bench", "subject": "s\#(number)""# : #""model": "sim/image""#
            let body =
                #"{\#(target), "prompt": "everything \#(number)", "width": 16, "height": 16, "webhook": "\#(hook)"}"#
            return await HTTPLoad.submit(system, body: body, bearer: key)
        }
        let done = try await waitForCompletion(system, ids: load.ids)
        // Two deliveries a job (its output and its end): how long after the jobs they all arrive.
        let ended = ContinuousClock.now
        let receivedByEnd = received.load(ordering: .relaxed)
        while received.load(ordering: .relaxed) < 2 * load.ids.count && ContinuousClock.now - ended < .seconds(120) {
            try await Task.sleep(for: .milliseconds(100))
        }
        let lag = HTTPLoad.seconds(ContinuousClock.now - ended)
        log(
            "everything: on, \(load.ids.count) submitted, \(Int(done.rate))/s completed, \(receivedByEnd) webhooks by then, all \(received.load(ordering: .relaxed)) \(String(format: "%.1f", lag)) s later, \(streamed.value.withLock { $0 }) SSE events"
        )
        return EndToEndRun(
            submitted: load.ids.count, completion: done, webhooks: received.load(ordering: .relaxed),
            webhooksByEnd: receivedByEnd, webhookLag: lag, streamed: streamed.value.withLock { $0 })
    }

    /// An admin call (POST `body` to `path`); its JSON answer. Throws unless 2xx.
    func admin(_ system: SystemUnderTest, _ path: String, _ body: String) async throws -> JSONValue {
        var request = HTTPClientRequest(url: system.baseURL + path)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(system.adminKey)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await HTTPLoad.client.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        guard (200..<300).contains(response.status.code) else {
            throw BenchError("\(path) answered \(response.status.code): \(String(buffer: bytes))")
        }
        return try JSONCoding.decode(JSONValue.self, from: Data(bytes.readableBytesView))
    }
}
