import Foundation

extension Scenarios {
    /// Memory over time: `rate` jobs a second (sim images, zero latency) offered steadily for
    /// `minutes`, and every service's RSS sampled each minute.
    /// The target: no service's RSS grows more than 10% after the first 10 minutes.
    func soak(minutes: Int, rate: Double) async throws -> [Row] {
        let config =
            #"{"jobs": {"model_check_schedules": {"sim/image": {"first_seconds": 0.05, "factor": 1.5, "max_seconds": 1, "jitter": 0.2}}}}"#
        let system = try await SystemUnderTest.start(
            binaries: binaries, environment: ["GENGATE_SIM_LATENCY_MS": "0"], config: config)
        defer { system.stop() }
        let services = ["api-ingress", "dispatcher", "poller", "uploader", "monitor"]
        let total = Duration.seconds(Int64(minutes) * 60)
        let started = ContinuousClock.now
        let sampler = Task { () -> [(minute: Double, rss: [String: Double])] in
            var samples: [(Double, [String: Double])] = []
            while !Task.isCancelled {
                let minute = HTTPLoad.seconds(ContinuousClock.now - started) / 60
                samples.append(
                    (
                        minute,
                        Dictionary(
                            uniqueKeysWithValues: services.compactMap { name in system.rss(of: name).map { (name, $0) }
                            })
                    ))
                log(
                    "soak: minute \(Int(minute.rounded())), RSS "
                        + services.map { "\($0) \(String(format: "%.1f", samples.last!.1[$0] ?? .nan))" }.joined(
                            separator: ", "))
                try? await Task.sleep(for: .seconds(60))
            }
            return samples
        }
        let body: @Sendable (Int) -> String = {
            #"{"model": "sim/image", "prompt": "soak \#($0)", "width": 16, "height": 16}"#
        }
        let load = await HTTPLoad.openLoop(system, rate: rate, duration: total, body: body)
        // The last sample is the sampler's last, taken under load.
        sampler.cancel()
        let samples = await sampler.value
        let done = try await waitForCompletion(system, ids: load.ids)
        log("soak: \(load.ids.count) submitted, \(load.failures) failed, \(done.latencies.count) completed")

        figures.add(
            Figure(
                name: "soak-memory", title: "RSS of each service, \(Int(rate)) jobs/s for \(minutes) min",
                xLabel: "minutes", yLabel: "RSS (MiB)",
                series: services.map { service in
                    Figure.Series(label: service, x: samples.map(\.minute), y: samples.map { $0.rss[service] })
                }))
        // Growth is counted from minute 10 (a third of the way in, for a run under half an hour).
        let settleAt = minutes >= 30 ? 10.0 : Double(minutes) / 3
        let settled = samples.first { $0.minute >= settleAt } ?? samples.first!
        let last = samples.last!
        return services.map { service in
            let from = settled.rss[service] ?? .nan
            let to = last.rss[service] ?? .nan
            let peak = samples.filter { $0.minute >= settled.minute }.map { $0.rss[service] ?? 0 }.max() ?? .nan
            let growth = (to - from) / from
            return Row(
                scenario: "soak, \(Int(rate)) jobs/s for \(minutes) min: \(service) RSS",
                target: "≤ 10% growth after minute \(Int(settleAt))",
                measured: String(format: "%+.1f%%", growth * 100), met: growth <= 0.10,
                notes: String(
                    format:
                        "%.1f MiB at minute %.0f, %.1f MiB at minute %.0f (the last sample under load), peak %.1f MiB after minute %.0f",
                    from, settled.minute, to, last.minute, peak, settleAt)
                    + (service == "api-ingress"
                        ? "; \(load.ids.count) jobs offered, \(load.failures) refused, \(done.latencies.count) completed"
                        : ""))
        }
    }
}
