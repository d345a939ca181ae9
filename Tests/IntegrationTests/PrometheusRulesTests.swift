import Foundation
import GenGateCore
import XCTest

/// The alerting rules in `deploy/prometheus` load in Prometheus and fire when they should: checked
/// with Prometheus's own `promtool` (Debian's `prometheus` package).
final class PrometheusRulesTests: XCTestCase {
    func testTheAlertingRulesAreValidAndFireWhenTheyShould() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("deploy/prometheus")
        let checked = try Command.run(["promtool", "check", "rules", "gengate-alerts.yml"], in: directory)
        XCTAssertEqual(checked.status, 0, checked.output)
        XCTAssertTrue(checked.output.contains("SUCCESS: 4 rules found"), checked.output)
        let tested = try Command.run(["promtool", "test", "rules", "gengate-alerts.test.yml"], in: directory)
        XCTAssertEqual(tested.status, 0, tested.output)
    }
}

/// The Grafana dashboard in `deploy/grafana`: every query is valid PromQL (promtool checks it as
/// a recording rule) and names only metrics the monitor serves.
final class GrafanaDashboardTests: XCTestCase {
    func testEveryPanelsQueryIsValidAndAsksForMetricsTheMonitorServes() throws {
        let root = EventSchemaTests.root
        let dashboard = try JSONCoding.decode(
            JSONValue.self, from: Data(contentsOf: root.appendingPathComponent("deploy/grafana/gengate-dashboard.json"))
        )
        let panels = try XCTUnwrap(dashboard["panels"]?.arrayValue)
        XCTAssertGreaterThan(panels.count, 10)
        let expressions = panels.flatMap { $0["targets"]?.arrayValue ?? [] }.compactMap { $0["expr"]?.stringValue }
        XCTAssertEqual(expressions.count, panels.flatMap { $0["targets"]?.arrayValue ?? [] }.count)

        // Each query as a recording rule, for promtool to parse.
        var rules = "groups:\n  - name: dashboard\n    rules:\n"
        for (index, expression) in expressions.enumerated() {
            let quoted = expression.replacingOccurrences(of: "'", with: "''")
            rules += "      - record: dashboard:query\(index)\n        expr: '\(quoted)'\n"
        }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent(
            "gg-dashboard-\(UUID().uuidString).yml")
        try rules.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let checked = try Command.run(["promtool", "check", "rules", file.path])
        XCTAssertEqual(checked.status, 0, checked.output)

        // The metric names it asks for, against the monitor's catalogue (histograms by their base).
        let catalogue = try String(
            contentsOf: root.appendingPathComponent("Services/monitor/MetricCatalogue.swift"), encoding: .utf8)
        let pattern = try NSRegularExpression(pattern: #"gengate_[a-z_]+"#)
        for expression in expressions {
            for match in pattern.matches(in: expression, range: NSRange(expression.startIndex..., in: expression)) {
                var name = String(expression[Range(match.range, in: expression)!])
                for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
                    name = String(name.dropLast(suffix.count))
                }
                XCTAssertTrue(
                    catalogue.contains("\"\(name)\""), "\(name) in \(expression) is not a metric the monitor serves")
            }
        }
    }
}
