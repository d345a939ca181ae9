import Foundation

/// One job of an experiment, as its results read it.
public struct ExperimentSample: Sendable, Equatable {
    public var variant: String
    public var status: GenerationStatus
    /// From submission to completion (completed jobs).
    public var durationSeconds: Double?
    /// What its charged attempts cost.
    public var cost: Double
    /// Outputs it delivered.
    public var outputs: Int
    public var rating: Int?

    public init(
        variant: String, status: GenerationStatus, durationSeconds: Double?, cost: Double, outputs: Int,
        rating: Int?
    ) {
        self.variant = variant
        self.status = status
        self.durationSeconds = durationSeconds
        self.cost = cost
        self.outputs = outputs
        self.rating = rating
    }
}

/// An experiment's results: each variant's figures with 95% confidence intervals, the leading
/// variant compared with each other on every metric (success rate by the two-proportion z-test,
/// duration and rating by Welch's t-test, cost per successful output by a z-test of ratios with
/// delta-method variances), the p-values corrected together by Holm's method, and a winner only
/// when the leader's lead on the primary metric is significant against every other variant.
public struct ExperimentResults: Sendable {
    public static let alpha = 0.05
    public static let power = 0.8

    /// One variant's figures.
    public struct Figures: Sendable {
        public var variant: Experiment.Variant
        public var requests = 0
        public var running = 0
        public var cancelled = 0
        public var successes = 0
        public var failures = 0
        public var durations: [Double] = []
        public var costs: [Double] = []
        public var outputs: [Double] = []
        public var ratings: [Double] = []

        var ended: Int { successes + failures }
        var successRate: Double { ended > 0 ? Double(successes) / Double(ended) : .nan }
        var costRatio: (value: Double, variance: Double)? { Statistics.ratio(costs, outputs) }

        /// The point value of `metric`, nil without data.
        func value(_ metric: Experiment.MetricKind) -> Double? {
            switch metric {
            case .successRate: return ended > 0 ? successRate : nil
            case .duration: return durations.isEmpty ? nil : Statistics.mean(durations)
            case .cost: return costRatio?.value
            case .rating: return ratings.isEmpty ? nil : Statistics.mean(ratings)
            }
        }

        /// How many units `metric` is measured on.
        func units(_ metric: Experiment.MetricKind) -> Int {
            switch metric {
            case .successRate, .cost: return ended
            case .duration: return durations.count
            case .rating: return ratings.count
            }
        }
    }

    /// A comparison of the leader with another variant on one metric.
    public struct Comparison: Sendable {
        public var metric: Experiment.Metric
        public var leader: String
        public var other: String
        public var difference: Double
        public var test: String
        public var outcome: Statistics.Outcome
        public var adjustedPValue: Double = 1
        public var significant: Bool { adjustedPValue < ExperimentResults.alpha }
    }

    public var experiment: Experiment
    public var figures: [Figures]
    public var leader: Int?
    public var comparisons: [Comparison] = []
    public var winner: Int?
    /// Units each variant needs for the primary metric's differences seen so far to be found.
    public var neededPerVariant: Int?

    public init(_ experiment: Experiment, samples: [ExperimentSample]) {
        self.experiment = experiment
        var figures = experiment.variants.map { Figures(variant: $0) }
        let index = Dictionary(experiment.variants.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        for sample in samples {
            guard let at = index[sample.variant] else { continue }
            figures[at].requests += 1
            if let rating = sample.rating { figures[at].ratings.append(Double(rating)) }
            switch sample.status {
            case .completed:
                figures[at].successes += 1
                if let duration = sample.durationSeconds { figures[at].durations.append(duration) }
            case .failed:
                figures[at].failures += 1
            case .cancelled:
                figures[at].cancelled += 1
                continue
            default:
                figures[at].running += 1
                continue
            }
            figures[at].costs.append(sample.cost)
            figures[at].outputs.append(Double(sample.outputs))
        }
        self.figures = figures
        judge()
    }

    mutating func judge() {
        let primary = experiment.primaryMetric
        let ranked = figures.indices.filter { figures[$0].value(primary.kind) != nil }
        guard ranked.count >= 2 else { return }
        let better: (Double, Double) -> Bool = primary.goal == .maximize ? { $0 > $1 } : { $0 < $1 }
        let lead = ranked.min { a, b in
            let (x, y) = (figures[a].value(primary.kind)!, figures[b].value(primary.kind)!)
            return x == y ? a < b : better(x, y)
        }!
        leader = lead
        for metric in experiment.metrics {
            for other in figures.indices where other != lead {
                if let comparison = compare(metric, lead, other) { comparisons.append(comparison) }
            }
        }
        let adjusted = Statistics.holm(comparisons.map(\.outcome.pValue))
        for index in comparisons.indices { comparisons[index].adjustedPValue = adjusted[index] }
        let decisive = comparisons.filter { $0.metric.kind == primary.kind }
        if decisive.count == ranked.count - 1, decisive.allSatisfy(\.significant) {
            winner = lead
        } else {
            neededPerVariant = needed(primary, decisive: decisive)
        }
    }

    func compare(_ metric: Experiment.Metric, _ a: Int, _ b: Int) -> Comparison? {
        let (x, y) = (figures[a], figures[b])
        guard let vx = x.value(metric.kind), let vy = y.value(metric.kind) else { return nil }
        let outcome: Statistics.Outcome?
        let test: String
        switch metric.kind {
        case .successRate:
            outcome = Statistics.twoProportion(x.successes, x.ended, y.successes, y.ended)
            test = "two-proportion z-test"
        case .duration:
            outcome = Statistics.welch(x.durations, y.durations)
            test = "Welch's t-test"
        case .rating:
            outcome = Statistics.welch(x.ratings, y.ratings)
            test = "Welch's t-test"
        case .cost:
            outcome = x.costRatio.flatMap { rx in y.costRatio.map { Statistics.ratioTest(rx, $0) } }
            test = "z-test of ratios (delta method)"
        }
        guard let outcome else { return nil }
        return Comparison(
            metric: metric, leader: x.variant.name, other: y.variant.name, difference: vx - vy, test: test,
            outcome: outcome)
    }

    /// The most units per variant any of the primary metric's comparisons needs, at a level
    /// corrected (Bonferroni) for every comparison made; nil when a difference is nil.
    func needed(_ primary: Experiment.Metric, decisive: [Comparison]) -> Int? {
        guard let lead = leader, !decisive.isEmpty else { return nil }
        let level = Self.alpha / Double(max(1, comparisons.count))
        var most = 0
        for comparison in decisive {
            guard let other = figures.firstIndex(where: { $0.variant.name == comparison.other }) else { continue }
            let (x, y) = (figures[lead], figures[other])
            let n: Int?
            switch primary.kind {
            case .successRate:
                n = Statistics.sampleSize(
                    proportions: x.successRate, y.successRate, alpha: level, power: Self.power)
            case .duration:
                n = Statistics.sampleSize(
                    difference: comparison.difference,
                    sd: ((Statistics.variance(x.durations) + Statistics.variance(y.durations)) / 2).squareRoot(),
                    alpha: level, power: Self.power)
            case .rating:
                n = Statistics.sampleSize(
                    difference: comparison.difference,
                    sd: ((Statistics.variance(x.ratings) + Statistics.variance(y.ratings)) / 2).squareRoot(),
                    alpha: level, power: Self.power)
            case .cost:
                let (rx, ry) = (x.costRatio, y.costRatio)
                let spread = ((rx?.variance ?? .nan) * Double(x.ended) + (ry?.variance ?? .nan) * Double(y.ended)) / 2
                n = Statistics.sampleSize(
                    difference: comparison.difference, sd: spread.squareRoot(), alpha: level, power: Self.power)
            }
            guard let n else { return nil }
            most = max(most, n)
        }
        return most
    }

    // MARK: As the API shows it

    static func number(_ value: Double?) -> JSONValue {
        guard let value, value.isFinite else { return .null }
        return .number((value * 1_000_000).rounded() / 1_000_000)
    }

    static func interval(_ bounds: (Double, Double)) -> JSONValue { .array([number(bounds.0), number(bounds.1)]) }

    func view(_ figures: Figures, currency: String) -> JSONValue {
        let z = Statistics.normalQuantile(0.975)
        var cost: [String: JSONValue] = [
            "value": Self.number(figures.costRatio?.value), "currency": .string(currency),
            "n": .number(Double(figures.ended)),
            "total": Self.number(figures.costs.reduce(0, +)),
        ]
        if let ratio = figures.costRatio {
            let half = z * ratio.variance.squareRoot()
            cost["ci"] = Self.interval((ratio.value - half, ratio.value + half))
        } else {
            cost["ci"] = .null
        }
        return .object([
            "name": .string(figures.variant.name), "model": .string(figures.variant.model),
            "traffic": .number(figures.variant.traffic), "requests": .number(Double(figures.requests)),
            "running": .number(Double(figures.running)), "ended": .number(Double(figures.ended)),
            "cancelled": .number(Double(figures.cancelled)),
            "success_rate": .object([
                "value": Self.number(figures.ended > 0 ? figures.successRate : nil),
                "ci": figures.ended > 0
                    ? Self.interval(Statistics.wilson(successes: figures.successes, trials: figures.ended)) : .null,
                "n": .number(Double(figures.ended)),
            ]),
            "duration_seconds": .object([
                "mean": Self.number(figures.durations.isEmpty ? nil : Statistics.mean(figures.durations)),
                "ci": figures.durations.count > 1 ? Self.interval(Statistics.meanInterval(figures.durations)) : .null,
                "p50": Self.number(Statistics.quantile(figures.durations, 0.5)),
                "p95": Self.number(Statistics.quantile(figures.durations, 0.95)),
                "n": .number(Double(figures.durations.count)),
            ]),
            "cost_per_successful_output": .object(cost),
            "rating": .object([
                "mean": Self.number(figures.ratings.isEmpty ? nil : Statistics.mean(figures.ratings)),
                "ci": figures.ratings.count > 1 ? Self.interval(Statistics.meanInterval(figures.ratings)) : .null,
                "n": .number(Double(figures.ratings.count)),
            ]),
        ])
    }

    /// The leader against the control (the first variant; the runner-up when the control leads),
    /// in words: "flux-dev costs 44% less than flux-pro, with a success rate 0.7 points lower".
    public var recommendation: String? {
        guard let lead = leader else { return nil }
        let primary = experiment.primaryMetric
        let other: Int
        if lead != 0 {
            other = 0
        } else {
            let better: (Double, Double) -> Bool = primary.goal == .maximize ? { $0 > $1 } : { $0 < $1 }
            guard
                let runnerUp = figures.indices.filter({ $0 != lead && figures[$0].value(primary.kind) != nil }).min(
                    by: {
                        better(figures[$0].value(primary.kind)!, figures[$1].value(primary.kind)!)
                    })
            else { return nil }
            other = runnerUp
        }
        let (x, y) = (figures[lead], figures[other])
        // Each metric as the sentence's verb ("costs 44% less") and as a noun after "with".
        var parts: [(verb: String, noun: String)] = []
        let kinds = [primary.kind] + experiment.metrics.map(\.kind).filter { $0 != primary.kind }
        for kind in kinds {
            guard let vx = x.value(kind), let vy = y.value(kind) else { continue }
            switch kind {
            case .successRate:
                let points = Self.short(abs(vx - vy) * 100)
                let way = vx > vy ? "higher" : "lower"
                parts.append(
                    points == "0"
                        ? ("has the same success rate as", "the same success rate")
                        : ("has a success rate \(points) points \(way) than", "a success rate \(points) points \(way)"))
            case .cost:
                guard vy > 0 else { continue }
                let change = Self.short(abs(vx - vy) / vy * 100)
                let way = vx < vy ? "less" : "more"
                parts.append(
                    change == "0"
                        ? ("costs the same as", "the same cost")
                        : ("costs \(change)% \(way) than", "\(change)% \(vx < vy ? "lower" : "higher") cost"))
            case .duration:
                guard vy > 0 else { continue }
                let change = Self.short(abs(vx - vy) / vy * 100)
                let way = vx < vy ? "faster" : "slower"
                parts.append(
                    change == "0"
                        ? ("takes as long as", "the same duration")
                        : ("is \(change)% \(way) than", "\(change)% \(vx < vy ? "shorter" : "longer") duration"))
            case .rating:
                let points = Self.short(abs(vx - vy))
                let way = vx > vy ? "higher" : "lower"
                parts.append(
                    points == "0"
                        ? ("is rated the same as", "the same rating")
                        : ("is rated \(points) \(way) than", "a rating \(points) \(way)"))
            }
        }
        guard let first = parts.first else { return nil }
        var text = "\(x.variant.name) \(first.verb) \(y.variant.name)"
        if parts.count > 1 { text += ", with " + parts.dropFirst().map(\.noun).joined(separator: ", ") }
        return text
    }

    static func short(_ value: Double) -> String {
        guard value.isFinite, abs(value) < 1e15 else { return "∞" }
        let rounded = (value * 10).rounded() / 10
        return rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
    }

    public func json(currency: String, now: Date) -> JSONValue {
        let primary = experiment.primaryMetric
        var answer: [String: JSONValue] = [
            "object": .string("experiment.results"),
            "experiment": .object([
                "id": .string(experiment.id), "name": .string(experiment.name),
                "status": .string(experiment.status.rawValue),
            ]),
            "primary_metric": .string(primary.kind.rawValue), "alpha": .number(Self.alpha),
            "correction": .string("holm"), "confidence_level": .number(0.95),
            "variants": .array(figures.map { view($0, currency: currency) }),
            "comparisons": .array(
                comparisons.map {
                    .object([
                        "metric": .string($0.metric.kind.rawValue), "primary": .bool($0.metric.primary),
                        "goal": .string($0.metric.goal.rawValue), "variant": .string($0.leader),
                        "against": .string($0.other), "difference": Self.number($0.difference),
                        "test": .string($0.test), "statistic": Self.number($0.outcome.statistic),
                        "p_value": Self.number($0.outcome.pValue), "adjusted_p_value": Self.number($0.adjustedPValue),
                        "significant": .bool($0.significant),
                    ])
                }),
            "leader": leader.map { .string(figures[$0].variant.name) } ?? .null,
        ]
        if let started = experiment.startedAt {
            answer["started_at"] = .string(Timestamp.format(started))
            answer["duration_seconds"] = .number(
                ((experiment.endedAt ?? now).timeIntervalSince(started) * 1_000).rounded() / 1_000)
        }
        let decisive = comparisons.filter { $0.metric.kind == primary.kind }
        if let winner {
            let worst = decisive.map(\.adjustedPValue).max() ?? 0
            answer["winner"] = .object([
                "variant": .string(figures[winner].variant.name), "metric": .string(primary.kind.rawValue),
                "confidence": Self.number((1 - worst) * 100),
            ])
            answer["verdict"] = .string(
                "\(figures[winner].variant.name) wins on \(primary.kind.rawValue) (significant at \(Self.alpha) after Holm's correction)"
            )
            answer["sample_needed"] = .null
        } else {
            answer["winner"] = .null
            let smallest = figures.filter { $0.units(primary.kind) > 0 }.map { $0.units(primary.kind) }.min() ?? 0
            if let needed = neededPerVariant {
                answer["sample_needed"] = .object([
                    "per_variant": .number(Double(needed)), "more": .number(Double(max(0, needed - smallest))),
                    "power": .number(Self.power), "metric": .string(primary.kind.rawValue),
                ])
                answer["verdict"] = .string(
                    "no winner yet: about \(max(0, needed - smallest)) more ended jobs a variant for the \(primary.kind.rawValue) difference seen so far to be significant"
                )
            } else {
                answer["sample_needed"] = .null
                answer["verdict"] = .string(
                    leader == nil
                        ? "no winner yet: not enough ended jobs to compare"
                        : "no winner yet: no difference in \(primary.kind.rawValue) seen so far")
            }
        }
        answer["recommendation"] = recommendation.map(JSONValue.string) ?? .null
        return .object(answer)
    }
}
