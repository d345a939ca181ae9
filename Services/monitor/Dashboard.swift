import Foundation
import GenGateCore
import GenGateMonitoring
import GenGateStore

/// The monitor's dashboard: one server-rendered HTML page (no scripts; it reloads itself every
/// 15 s) with the services and their heartbeats, the providers with their failure rates and
/// latency and a chart of their last hour, the queues, what was spent today and this month (by
/// model, and the keys that spent most), running experiments and how their variants fare, open alerts with a button to acknowledge each, and
/// recent errors.
struct Dashboard: Sendable {
    /// Open alerts listed at most; the rest are counted.
    static let alertsShown = 50

    let health: DetailedHealth
    let state: MonitorState
    let store: any GenerationStore
    /// The price table's currency, which spend is in.
    let currency: String

    func page(now: Date = Date()) async -> String {
        let report = await health.report()
        let figures = await state.figures(now: now, window: DetailedHealth.providerWindow)
        let providers = DetailedHealth.providerSummaries(figures)
        var timelines: [String: [WindowFigures]] = [:]
        for provider in providers { timelines[provider.name] = await state.timeline(provider: provider.name, now: now) }
        let store = self.store
        // Each read bounded: a store that does not answer leaves its section empty, not the page hanging.
        let alerts =
            (try? await withDeadline(.seconds(3)) {
                try await store.alerts(AlertFilter(states: [.open, .acknowledged], limit: Self.alertsShown))
            }.get()) ?? []
        let errors =
            (try? await withDeadline(.seconds(3)) {
                try await store.errors(ErrorFilter(minimumLevel: .error, limit: 20))
            }.get()) ?? []
        let month = SpendPeriod.starts(of: now).month
        let spend = try? await withDeadline(.seconds(3)) {
            try await store.usage(from: month, to: now.addingTimeInterval(86_400), keyID: nil)
        }.get()
        let experiments: [ExperimentResults] =
            (try? await withDeadline(.seconds(3)) { () async throws -> [ExperimentResults] in
                var running: [ExperimentResults] = []
                for experiment in try await store.experiments(after: nil, limit: 100)
                where experiment.status == .running && running.count < Self.experimentsShown {
                    running.append(
                        ExperimentResults(experiment, samples: try await store.experimentSamples(id: experiment.id)))
                }
                return running
            }.get()) ?? []
        return Self.render(
            report: report, providers: providers, timelines: timelines, alerts: alerts, errors: errors,
            spend: spend.map { Spend(rows: $0, currency: currency, now: now) }, experiments: experiments, now: now)
    }

    /// Running experiments shown at most.
    static let experimentsShown = 5

    /// This month's spend as the page shows it: by model (today and the month), and the keys
    /// that spent most this month.
    struct Spend {
        struct Line {
            var name: String
            var today = 0.0
            var month = 0.0
            var wasted = 0.0
            var charged = 0
        }

        var models: [Line] = []
        var keys: [Line] = []
        var currency: String

        init(rows: [UsageRow], currency: String, now: Date) {
            self.currency = currency
            let today = SpendPeriod.day(of: now)
            var byModel: [String: Line] = [:]
            var byKey: [String: Line] = [:]
            func add(_ row: UsageRow, to line: inout Line) {
                line.month += row.amount
                line.wasted += row.wasted
                line.charged += row.chargedAttempts
                if row.day == today { line.today += row.amount }
            }
            for row in rows {
                let model = "\(row.model) (\(row.provider))"
                add(row, to: &byModel[model, default: Line(name: model)])
                add(row, to: &byKey[row.keyID, default: Line(name: row.keyID)])
            }
            let order = { (a: Line, b: Line) in a.month != b.month ? a.month > b.month : a.name < b.name }
            models = byModel.values.sorted(by: order)
            keys = Array(byKey.values.sorted(by: order).prefix(10))
        }
    }

    static func render(
        report: DetailedHealth.Report, providers: [DetailedHealth.ProviderSummary],
        timelines: [String: [WindowFigures]],
        alerts: [Alert], errors: [ErrorEntry], spend: Spend? = nil, experiments: [ExperimentResults] = [],
        now: Date
    ) -> String {
        var html = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">
            <meta http-equiv="refresh" content="15">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>GenGate: \(escape(report.status))</title>
            <style>
            body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2733;background:#f6f7f9}
            h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.4em 0 .4em}
            table{border-collapse:collapse;background:#fff;width:100%}
            th,td{border-bottom:1px solid #e3e6ea;padding:.35em .6em;text-align:left;vertical-align:middle}
            th{background:#eef0f3;font-weight:600} td.n{text-align:right;font-variant-numeric:tabular-nums}
            .badge{display:inline-block;padding:.1em .6em;border-radius:1em;color:#fff;font-weight:600}
            .healthy,.up,.ok{background:#2e8540} .degraded,.stale,.medium,.high{background:#c77700}
            .unhealthy,.down,.missing,.critical{background:#c0392b} .low,.acknowledged{background:#5b6b7d}
            .muted{color:#5b6b7d} form{margin:0} button{cursor:pointer}
            </style></head><body>
            <h1>GenGate <span class="badge \(escape(report.status))" id="status">\(escape(report.status))</span></h1>
            <p class="muted">\(escape(Timestamp.format(now))) · monitor up \(Int(report.json["uptime_seconds"]?.doubleValue ?? 0)) s · reloads every 15 s</p>

            """
        html += section("Open alerts", id: "alerts")
        if alerts.isEmpty {
            html += "<p class=\"muted\">None.</p>\n"
        } else {
            html +=
                "<table><tr><th>severity</th><th>rule</th><th>message</th><th>since</th><th>seen</th><th></th></tr>\n"
            for alert in alerts {
                let action =
                    alert.acknowledgedAt == nil
                    ? "<form method=\"post\" action=\"/dashboard/alerts/\(escape(alert.id))/ack\"><button type=\"submit\">Acknowledge</button></form>"
                    : "<span class=\"badge acknowledged\">acknowledged</span>"
                html += """
                    <tr id="\(escape(alert.id))"><td><span class="badge \(escape(alert.severity.rawValue))">\(escape(alert.severity.rawValue))</span></td>\
                    <td>\(escape(alert.type))</td><td>\(escape(alert.message))</td>\
                    <td>\(escape(Timestamp.format(alert.createdAt)))</td><td class="n">\(alert.occurrences)</td><td>\(action)</td></tr>

                    """
            }
            html += "</table>\n"
            let open =
                (report.json["open_alerts"].flatMap { value -> [JSONValue]? in
                    guard case .object(let counts) = value else { return nil }
                    return Array(counts.values)
                } ?? []).compactMap(\.doubleValue).reduce(0, +)
            if Int(open) > alerts.count {
                html +=
                    "<p class=\"muted\">And \(Int(open) - alerts.count) more: GET /v1/admin/alerts lists them all.</p>\n"
            }
        }

        html += section("Services", id: "services")
        html += "<table><tr><th>service</th><th>status</th><th>instances</th><th>last heartbeat</th></tr>\n"
        if case .object(let services)? = report.json["components"]?["services"] {
            for (name, entry) in services.sorted(by: { $0.key < $1.key }) {
                let status = entry["status"]?.stringValue ?? "missing"
                let instances = entry["instances"]?.arrayValue ?? []
                let ages = instances.compactMap { $0["heartbeat_age_seconds"]?.doubleValue }
                html += """
                    <tr><td>\(escape(name))</td><td><span class="badge \(escape(status))">\(escape(status))</span></td>\
                    <td class="n">\(instances.count)</td><td>\(ages.min().map { String(format: "%.1f s ago", $0) } ?? "never")</td></tr>

                    """
            }
        }
        html += "</table>\n"

        html += section("Providers (last 15 minutes; charts: the last hour, a bar a minute)", id: "providers")
        if providers.isEmpty {
            html += "<p class=\"muted\">No provider calls yet.</p>\n"
        } else {
            html += """
                <table><tr><th>provider</th><th>status</th><th>calls</th><th>failure rate</th><th>p50</th><th>p95</th>\
                <th>timeouts</th><th>retries</th><th>most common error</th><th>calls and failures</th><th>p95 latency</th></tr>

                """
            for provider in providers {
                let figures = provider.figures
                let timeline = timelines[provider.name] ?? []
                html += """
                    <tr id="provider-\(escape(provider.name))"><td>\(escape(provider.name))</td>\
                    <td><span class="badge \(provider.status)">\(provider.status)</span></td>\
                    <td class="n">\(figures.calls)</td>\
                    <td class="n">\(figures.providerFailureRate.map { String(format: "%.1f%%", $0 * 100) } ?? "–")</td>\
                    <td class="n">\(milliseconds(figures.latency.percentile(0.5)))</td>\
                    <td class="n">\(milliseconds(figures.latency.percentile(0.95)))</td>\
                    <td class="n">\(figures.timeouts)</td><td class="n">\(figures.retries)</td>\
                    <td>\(escape(figures.mostCommonError ?? "–"))</td>\
                    <td>\(callChart(timeline, provider: provider.name))</td><td>\(latencyChart(timeline, provider: provider.name))</td></tr>

                    """
            }
            html += "</table>\n"
        }

        html += section("Queues", id: "queues")
        if let active = report.active {
            html += "<table><tr>"
            for status in GenerationStatus.allCases where !status.isTerminal { html += "<th>\(status.rawValue)</th>" }
            html += "</tr><tr>"
            for status in GenerationStatus.allCases where !status.isTerminal {
                html += "<td class=\"n\" id=\"queue-\(status.rawValue)\">\(active[status] ?? 0)</td>"
            }
            html += "</tr></table>\n"
        } else {
            html += "<p class=\"badge down\">The store cannot be read.</p>\n"
        }
        if case .object(let missed)? = report.json["events_missed_last_hour"], !missed.isEmpty {
            let total = missed.values.compactMap(\.doubleValue).reduce(0, +)
            html +=
                "<p class=\"muted\">Events missed in the last hour: \(Int(total)) (figures above may be short by that much).</p>\n"
        }

        html += section("Spend (UTC; this month by model, and the keys that spent most)", id: "spend")
        if let spend {
            if spend.models.isEmpty {
                html += "<p class=\"muted\">Nothing spent this month.</p>\n"
            } else {
                let currency = escape(spend.currency)
                html += """
                    <table><tr><th>model</th><th>today (\(currency))</th><th>this month (\(currency))</th>\
                    <th>of it wasted</th><th>charged attempts</th></tr>

                    """
                for line in spend.models {
                    html += """
                        <tr id="spend-\(escape(line.name))"><td>\(escape(line.name))</td>\
                        <td class="n">\(money(line.today))</td><td class="n">\(money(line.month))</td>\
                        <td class="n">\(money(line.wasted))</td><td class="n">\(line.charged)</td></tr>

                        """
                }
                html += """
                    </table>
                    <table><tr><th>key</th><th>today (\(currency))</th><th>this month (\(currency))</th></tr>

                    """
                for line in spend.keys {
                    html += """
                        <tr><td>\(escape(line.name))</td><td class="n">\(money(line.today))</td>\
                        <td class="n">\(money(line.month))</td></tr>

                        """
                }
                html += "</table>\n"
            }
        } else {
            html += "<p class=\"badge down\">The store cannot be read.</p>\n"
        }

        html += section("Running experiments", id: "experiments")
        if experiments.isEmpty {
            html += "<p class=\"muted\">None.</p>\n"
        }
        for results in experiments {
            let experiment = results.experiment
            guard case .object(let json) = results.json(currency: spend?.currency ?? "", now: now) else { continue }
            html += """
                <p id="experiment-\(escape(experiment.name))"><b>\(escape(experiment.name))</b> \
                <span class="muted">(primary: \(escape(experiment.primaryMetric.kind.rawValue))) · \
                \(escape(json["verdict"]?.stringValue ?? ""))\
                \(json["recommendation"]?.stringValue.map { " · " + escape($0) } ?? "")</span></p>
                <table><tr><th>variant</th><th>model</th><th>traffic</th><th>requests</th><th>success rate</th>\
                <th>mean duration</th><th>cost per output</th><th>rating</th></tr>

                """
            for variant in json["variants"]?.arrayValue ?? [] {
                func figure(_ value: JSONValue?, _ format: (Double) -> String) -> String {
                    value?.doubleValue.map(format) ?? "–"
                }
                html += """
                    <tr><td>\(escape(variant["name"]?.stringValue ?? ""))</td>\
                    <td>\(escape(variant["model"]?.stringValue ?? ""))</td>\
                    <td class="n">\(figure(variant["traffic"]) { String(format: "%g%%", $0) })</td>\
                    <td class="n">\(figure(variant["requests"]) { String(Int($0)) })</td>\
                    <td class="n">\(figure(variant["success_rate"]?["value"]) { String(format: "%.1f%%", $0 * 100) })</td>\
                    <td class="n">\(figure(variant["duration_seconds"]?["mean"]) { String(format: "%.1f s", $0) })</td>\
                    <td class="n">\(figure(variant["cost_per_successful_output"]?["value"]) { money($0) })</td>\
                    <td class="n">\(figure(variant["rating"]?["mean"]) { String(format: "%.2f", $0) })</td></tr>

                    """
            }
            html += "</table>\n"
        }

        html += section("Recent errors", id: "errors")
        if errors.isEmpty {
            html += "<p class=\"muted\">None.</p>\n"
        } else {
            html +=
                "<table><tr><th>at</th><th>level</th><th>source</th><th>code</th><th>message</th><th>generation</th></tr>\n"
            for entry in errors {
                html += """
                    <tr><td>\(escape(Timestamp.format(entry.at)))</td><td>\(escape(entry.level.rawValue))</td>\
                    <td>\(escape(entry.source))</td><td>\(escape(entry.code ?? ""))</td><td>\(escape(entry.message))</td>\
                    <td>\(escape(entry.generationID ?? ""))</td></tr>

                    """
            }
            html += "</table>\n"
        }
        html += "</body></html>\n"
        return html
    }

    static func money(_ amount: Double) -> String { String(format: "%.4f", Money.rounded(amount)) }

    static func section(_ title: String, id: String) -> String { "<h2 id=\"\(id)-title\">\(escape(title))</h2>\n" }

    static func milliseconds(_ value: Double?) -> String {
        guard let value else { return "–" }
        return value >= 10_000 ? String(format: "%.1f s", value / 1_000) : "\(Int(value.rounded())) ms"
    }

    /// Calls a minute as grey bars with the failed part in red, over the last hour.
    static func callChart(_ timeline: [WindowFigures], provider: String) -> String {
        let width = 240.0
        let height = 40.0
        let peak = Double(max(1, timeline.map(\.calls).max() ?? 1))
        let step = width / Double(max(1, timeline.count))
        var bars = ""
        for (index, minute) in timeline.enumerated() where minute.calls > 0 {
            let x = Double(index) * step
            let total = Double(minute.calls) / peak * height
            let failed = Double(minute.callErrors) / peak * height
            bars += String(
                format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#8c9bab\"/>", x,
                height - total,
                max(1, step - 1), total)
            if failed > 0 {
                bars += String(
                    format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#e4572e\"/>", x,
                    height - failed, max(1, step - 1), failed)
            }
        }
        let calls = timeline.map(\.calls).reduce(0, +)
        let failed = timeline.map(\.callErrors).reduce(0, +)
        return """
            <svg class="chart" id="calls-\(escape(provider))" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" role="img" aria-label="\(calls) calls, \(failed) failed in the last hour"><title>\(calls) calls, \(failed) failed in the last hour (peak \(Int(peak)) a minute)</title><rect width="100%" height="100%" fill="#f0f2f5"/>\(bars)</svg>
            """
    }

    /// The p95 latency of each minute as blue bars, over the last hour.
    static func latencyChart(_ timeline: [WindowFigures], provider: String) -> String {
        let width = 240.0
        let height = 40.0
        let values = timeline.map { $0.latency.percentile(0.95) }
        let peak = max(1, values.compactMap { $0 }.max() ?? 1)
        let step = width / Double(max(1, values.count))
        var bars = ""
        for (index, value) in values.enumerated() {
            guard let value else { continue }
            let bar = max(1, value / peak * height)
            bars += String(
                format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#1f6feb\"/>",
                Double(index) * step, height - bar, max(1, step - 1), bar)
        }
        return """
            <svg class="chart" id="latency-\(escape(provider))" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" role="img" aria-label="p95 latency, peak \(milliseconds(peak))"><title>p95 latency a minute, peak \(milliseconds(peak))</title><rect width="100%" height="100%" fill="#f0f2f5"/>\(bars)</svg>
            """
    }

    /// Text made safe inside HTML elements and quoted attributes.
    static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
