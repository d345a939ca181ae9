import Foundation
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
