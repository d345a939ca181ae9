import Foundation
import GenGateCore
import XCTest

final class ExperimentTests: XCTestCase {
    func experiment(_ traffic: [Double], metrics: [Experiment.Metric] = Experiment.defaultMetrics) -> Experiment {
        Experiment(
            id: "exp_01test", name: "pro-vs-dev",
            variants: traffic.enumerated().map {
                Experiment.Variant(name: "v\($0.offset)", model: "sim/image", traffic: $0.element)
            }, metrics: metrics, createdAt: Date())
    }

    func testAssignmentHonoursTheAllocationOverManySubjectsAndKeepsEachSubjectsVariant() {
        let split = experiment([70, 20, 10])
        var counts = [0, 0, 0]
        let total = 100_000
        for index in 0..<total { counts[split.variantIndex(subject: "user-\(index)")] += 1 }
        for (count, share) in zip(counts, [70.0, 20, 10]) {
            XCTAssertEqual(Double(count) / Double(total) * 100, share, accuracy: 0.5, "\(counts)")
        }
        // The same subject, the same variant, every time; another experiment splits anew.
        for index in 0..<1_000 {
            let subject = "user-\(index)"
            XCTAssertEqual(split.variantIndex(subject: subject), split.variantIndex(subject: subject))
        }
        var other = split
        other.id = "exp_02other"
        let moved = (0..<1_000).filter {
            split.variantIndex(subject: "user-\($0)") != other.variantIndex(subject: "user-\($0)")
        }
        XCTAssertGreaterThan(moved.count, 300, "assignments of two experiments are independent")
        // A variant with no traffic gets none.
        let none = experiment([0, 100])
        XCTAssertTrue((0..<10_000).allSatisfy { none.variantIndex(subject: "s\($0)") == 1 })
    }

    func testDefinitionsAreCheckedWithAPathForEveryProblem() {
        func problems(_ json: String) -> [String] {
            guard case .object(let fields) = try? JSONCoding.decode(JSONValue.self, from: Data(json.utf8)) else {
                return ["not an object"]
            }
            return Experiment.parseDefinition(fields) { $0.hasPrefix("sim/") ? nil : "unknown model \($0)" }
                .problems.map(\.path)
        }
        XCTAssertEqual(
            problems(
                #"{"variants": [{"name": "a", "model": "sim/image", "traffic": 50}, {"name": "b", "model": "sim/text", "traffic": 50, "params": {"x": 1}, "prompt_template": "{prompt}, watercolour"}]}"#
            ), [])
        XCTAssertEqual(problems(#"{"variants": [{"name": "a", "model": "sim/image", "traffic": 100}]}"#), ["variants"])
        XCTAssertEqual(
            problems(
                #"{"variants": [{"name": "a", "model": "x/y", "traffic": 50}, {"name": "a", "model": "sim/image", "traffic": 150, "colour": 1, "prompt_template": "no slot"}]}"#
            ),
            [
                "variants[0].model", "variants[1].colour", "variants[1].name", "variants[1].prompt_template",
                "variants[1].traffic",
            ])
        XCTAssertEqual(
            problems(
                #"{"variants": [{"name": "a", "model": "sim/image", "traffic": 50}, {"name": "b", "model": "sim/image", "traffic": 40}]}"#
            ), ["variants"], "percentages add up to 100")
        XCTAssertEqual(
            problems(
                #"{"variants": [{"name": "a", "model": "sim/image", "traffic": 50}, {"name": "b", "model": "sim/image", "traffic": 50}], "metrics": [{"name": "cost", "primary": true}, {"name": "rating", "primary": true}, {"name": "speed"}]}"#
            ), ["metrics[2].name", "metrics"])
        // The first metric leads when none is marked primary; goals default to the natural one.
        let (_, metrics, _) = Experiment.parseDefinition(
            [
                "variants": .array([]), "metrics": .array([.object(["name": .string("cost")])]),
            ], knownModel: { _ in nil })
        XCTAssertEqual(metrics, [Experiment.Metric(kind: .cost, goal: .minimize, primary: true)])
        XCTAssertNil(Experiment.nameProblem("flux-pro-vs-dev"))
        XCTAssertNotNil(Experiment.nameProblem("Flux Pro"))
        XCTAssertNotNil(Experiment.nameProblem("exp_01abc"))
        // A definition reads back as it was written.
        let written = experiment([30, 70], metrics: [Experiment.Metric(kind: .duration, primary: true)])
        let read = Experiment.decodeDefinition(written.definitionJSON)
        XCTAssertEqual(read.variants, written.variants)
        XCTAssertEqual(read.metrics, written.metrics)
        XCTAssertEqual(
            Experiment.Variant(name: "a", model: "m", promptTemplate: "{prompt}, oil on canvas", traffic: 1)
                .prompt(for: "a fox"), "a fox, oil on canvas")
    }

    /// Deterministic samples: SplitMix64.
    struct Numbers {
        var state: UInt64
        mutating func next() -> Double {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            return Double(z >> 11) / Double(1 << 53)
        }
    }

    /// `count` jobs of a variant: succeeding at `success`, taking about `seconds`, costing `price`
    /// an output (failed ones half of it, some of them), rated about `rating`.
    func samples(
        _ variant: String, count: Int, success: Double, seconds: Double, price: Double, rating: Double,
        numbers: inout Numbers
    ) -> [ExperimentSample] {
        (0..<count).map { _ in
            let ok = numbers.next() < success
            let duration = seconds * (0.5 + numbers.next()) + numbers.next() * numbers.next() * seconds
            let rated = numbers.next() < 0.6 ? max(1, min(5, Int((rating + numbers.next() * 2 - 1).rounded()))) : nil
            return ExperimentSample(
                variant: variant, status: ok ? .completed : .failed, durationSeconds: ok ? duration : nil,
                cost: ok ? price : (numbers.next() < 0.3 ? price / 2 : 0), outputs: ok ? 1 : 0,
                rating: ok ? rated : nil)
        }
    }

    func testAClearWinnerIsNamedAndEveryFigureMatchesSciPy() throws {
        var numbers = Numbers(state: 42)
        let split = experiment([50, 50])
        let all =
            samples("v0", count: 600, success: 0.90, seconds: 30, price: 0.05, rating: 3.6, numbers: &numbers)
            + samples("v1", count: 600, success: 0.97, seconds: 24, price: 0.028, rating: 4.1, numbers: &numbers)
            + [
                ExperimentSample(
                    variant: "v1", status: .running, durationSeconds: nil, cost: 0, outputs: 0, rating: nil)
            ]
        let results = ExperimentResults(split, samples: all)
        XCTAssertEqual(results.leader, 1)
        XCTAssertEqual(results.winner, 1)
        let json = results.json(currency: "USD", now: Date())
        XCTAssertEqual(json["winner"]?["variant"]?.stringValue, "v1")
        XCTAssertEqual(json["variants"]?.arrayValue?[1]["running"]?.doubleValue, 1)
        XCTAssertEqual(json["comparisons"]?.arrayValue?.count, 4, "the leader against the other on four metrics")
        let recommendation = try XCTUnwrap(json["recommendation"]?.stringValue)
        XCTAssertTrue(recommendation.hasPrefix("v1 has a success rate "), recommendation)
        XCTAssertTrue(recommendation.contains("% lower cost"), recommendation)
        try checkAgainstSciPy(all, json)
    }

    func testNoWinnerWithoutASignificantDifferenceAndTheSampleStillNeededIsSaid() throws {
        var numbers = Numbers(state: 7)
        let split = experiment(
            [50, 50], metrics: [Experiment.Metric(kind: .cost, primary: true), Experiment.Metric(kind: .duration)])
        let all =
            samples("v0", count: 40, success: 0.9, seconds: 30, price: 0.050, rating: 4, numbers: &numbers)
            + samples("v1", count: 40, success: 0.9, seconds: 30, price: 0.049, rating: 4, numbers: &numbers)
        let results = ExperimentResults(split, samples: all)
        XCTAssertNil(results.winner)
        let json = results.json(currency: "USD", now: Date())
        XCTAssertEqual(json["winner"], .null)
        XCTAssertTrue(json["verdict"]?.stringValue?.hasPrefix("no winner yet") ?? false, "\(json)")
        XCTAssertGreaterThan(json["sample_needed"]?["more"]?.doubleValue ?? 0, 0)
        XCTAssertEqual(json["primary_metric"]?.stringValue, "cost")
        try checkAgainstSciPy(all, json)
        // With nothing ended there is nothing to compare.
        let empty = ExperimentResults(split, samples: []).json(currency: "USD", now: Date())
        XCTAssertEqual(empty["leader"], .null)
        XCTAssertEqual(empty["verdict"]?.stringValue, "no winner yet: not enough ended jobs to compare")
    }

    func testStatisticsAgreeWithKnownValues() {
        // Values from SciPy 1.17: norm.ppf, t.cdf, t.ppf.
        XCTAssertEqual(Statistics.normalQuantile(0.975), 1.959963984540054, accuracy: 1e-12)
        XCTAssertEqual(Statistics.normalQuantile(0.001), -3.090232306167813, accuracy: 1e-10)
        XCTAssertEqual(Statistics.studentTCDF(2.0, df: 5), 0.9490302605850709, accuracy: 1e-12)
        XCTAssertEqual(Statistics.studentTCDF(-1.3, df: 17.5), 0.10523188448851287, accuracy: 1e-12)
        XCTAssertEqual(Statistics.studentTQuantile(0.975, df: 10), 2.228138851986274, accuracy: 1e-9)
        XCTAssertEqual(Statistics.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
        XCTAssertEqual(Statistics.quantile([1, 2, 3, 4], 0.5), 2.5)
        XCTAssertNil(Statistics.sampleSize(proportions: 0.5, 0.5, alpha: 0.05))
        // A difference of a rounding error needs no count that could overflow.
        XCTAssertNil(Statistics.sampleSize(difference: 6.9e-18, sd: 0.02, alpha: 0.05))
        XCTAssertNil(Statistics.sampleSize(difference: 0.1, sd: .infinity, alpha: 0.05))
        XCTAssertEqual(Statistics.sampleSize(proportions: 0.9, 0.95, alpha: 0.05), 435)
    }

    /// Writes the samples and results for `Tests/Experiments/check_results.py` and runs it.
    func checkAgainstSciPy(_ samples: [ExperimentSample], _ results: JSONValue) throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("gg-exp-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: file) }
        let recorded: [JSONValue] = samples.map {
            .object([
                "variant": .string($0.variant), "status": .string($0.status.rawValue),
                "duration": $0.durationSeconds.map(JSONValue.number) ?? .null, "cost": .number($0.cost),
                "outputs": .number(Double($0.outputs)), "rating": $0.rating.map { .number(Double($0)) } ?? .null,
            ])
        }
        try JSONCoding.encode(JSONValue.object(["samples": .array(recorded), "results": results])).write(to: file)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Experiments/check_results.py")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path, file.path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, text)
    }
}
