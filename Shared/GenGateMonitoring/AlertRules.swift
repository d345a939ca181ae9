import Foundation
import GenGateCore
import GenGateStore

/// The settings of the alert rules (from the `alerts` section of the configuration).
public struct AlertRuleSettings: Sendable, Equatable {
    public struct Rate: Sendable, Equatable {
        public var threshold: Double
        public var window: TimeInterval
        public var minimumAttempts: Int

        public init(threshold: Double, window: TimeInterval, minimumAttempts: Int) {
            self.threshold = threshold
            self.window = window
            self.minimumAttempts = minimumAttempts
        }
    }

    public var failureRate = Rate(threshold: 0.5, window: 3_600, minimumAttempts: 10)
    public var timeoutRate = Rate(threshold: 0.2, window: 3_600, minimumAttempts: 10)
    public var maxRetries = 3
    public var retryWindow: TimeInterval = 3_600
    /// The window in which a possible double charge keeps its alert open.
    public var doubleChargeWindow: TimeInterval = 3_600
    public var disabled: Set<AlertRule> = []

    public init() {}

    /// The longest window any attempt-based rule reads.
    public var attemptWindow: TimeInterval { max(failureRate.window, timeoutRate.window, doubleChargeWindow) }
}

/// What the rules are checked against, gathered by the monitor. A figure that could not be
/// read is nil, and the rules that need it are skipped (their alerts neither raised nor
/// resolved) rather than taken for zero.
public struct AlertInputs: Sendable {
    /// Attempts that ended in each window the rules read, by provider and model.
    public var outcomes: [TimeInterval: [AttemptOutcomes]]?
    public var retried: [RetriedJob]?
    /// Each expected service and the age of its freshest heartbeat (nil: never seen).
    public var services: [(service: String, heartbeatAge: Double?)]?
    public var staleAfter: Double
    /// Why the store could not be read, if it could not.
    public var storeError: String?

    public init(
        outcomes: [TimeInterval: [AttemptOutcomes]]?, retried: [RetriedJob]?,
        services: [(service: String, heartbeatAge: Double?)]?, staleAfter: Double, storeError: String?
    ) {
        self.outcomes = outcomes
        self.retried = retried
        self.services = services
        self.staleAfter = staleAfter
        self.storeError = storeError
    }
}

/// What one evaluation found: alerts whose condition holds, and the rules it could check (an
/// unresolved alert of a checked rule that is not among `raised` has ended).
public struct AlertVerdict: Sendable, Equatable {
    public var raised: [AlertDraft] = []
    public var checked: Set<AlertRule> = []
}

/// The alert rules: each turns figures into alerts, one per incident (its fingerprint: the rule
/// and what it is about, so a provider that keeps failing is one alert, not one per job).
public struct AlertRules: Sendable {
    public var settings: AlertRuleSettings

    public init(settings: AlertRuleSettings) {
        self.settings = settings
    }

    public func evaluate(_ inputs: AlertInputs) -> AlertVerdict {
        var verdict = AlertVerdict()
        func check(_ rule: AlertRule, _ body: () -> [AlertDraft]?) {
            guard !settings.disabled.contains(rule), let drafts = body() else { return }
            verdict.checked.insert(rule)
            verdict.raised += drafts
        }
        check(.providerFailureRate) {
            inputs.outcomes?[settings.failureRate.window].map { rate(.providerFailureRate, settings.failureRate, $0) }
        }
        check(.taskTimeoutRate) {
            inputs.outcomes?[settings.timeoutRate.window].map { rate(.taskTimeoutRate, settings.timeoutRate, $0) }
        }
        check(.possibleDoubleCharge) {
            inputs.outcomes?[settings.doubleChargeWindow].map(doubleCharges)
        }
        check(.jobRetries) { inputs.retried.map(retries) }
        check(.serviceDown) { inputs.services.map { services($0, staleAfter: inputs.staleAfter) } }
        check(.storeUnreachable) {
            guard let error = inputs.storeError else { return [] }
            return [
                AlertDraft(
                    type: AlertRule.storeUnreachable.rawValue, severity: .critical,
                    fingerprint: AlertRule.storeUnreachable.rawValue, message: "The store cannot be reached: \(error)",
                    details: ["error": .string(error)])
            ]
        }
        return verdict
    }

    /// Per provider (its models together, listed in the details): the share of ended attempts
    /// that failed (`providerFailureRate`) or timed out (`taskTimeoutRate`).
    func rate(_ rule: AlertRule, _ setting: AlertRuleSettings.Rate, _ outcomes: [AttemptOutcomes]) -> [AlertDraft] {
        let byProvider = Dictionary(grouping: outcomes, by: \.provider)
        return byProvider.keys.sorted().compactMap { provider -> AlertDraft? in
            let models = byProvider[provider] ?? []
            let ended = models.reduce(0) { $0 + $1.ended }
            func counted(_ outcome: AttemptOutcomes) -> Int {
                rule == .taskTimeoutRate ? outcome.failures[ErrorCode.taskTimeout.rawValue, default: 0] : outcome.failed
            }
            let bad = models.reduce(0) { $0 + counted($1) }
            guard ended >= setting.minimumAttempts, ended > 0 else { return nil }
            let share = Double(bad) / Double(ended)
            guard share > setting.threshold else { return nil }
            let what = rule == .taskTimeoutRate ? "timed out" : "failed"
            var failures: [String: Int] = [:]
            for model in models { failures.merge(model.failures, uniquingKeysWith: +) }
            let percent = Int((share * 100).rounded())
            let minutes = Int(setting.window / 60)
            return AlertDraft(
                type: rule.rawValue, severity: rule == .providerFailureRate ? .high : .medium,
                fingerprint: "\(rule.rawValue):\(provider)",
                message:
                    "\(provider): \(bad) of \(ended) attempts \(what) in the last \(minutes) min (\(percent)%, over \(Int((setting.threshold * 100).rounded()))%)",
                details: [
                    "provider": .string(provider), "ended": .number(Double(ended)), "count": .number(Double(bad)),
                    "rate": .number((share * 1_000).rounded() / 1_000), "threshold": .number(setting.threshold),
                    "window_seconds": .number(setting.window),
                    "failures": .object(failures.mapValues { .number(Double($0)) }),
                    "models": .object(
                        Dictionary(
                            uniqueKeysWithValues: models.map {
                                (
                                    $0.model,
                                    JSONValue.object([
                                        "ended": .number(Double($0.ended)), "count": .number(Double(counted($0))),
                                    ])
                                )
                            })),
                ])
        }
    }

    func doubleCharges(_ outcomes: [AttemptOutcomes]) -> [AlertDraft] {
        let byProvider = Dictionary(grouping: outcomes, by: \.provider)
        return byProvider.keys.sorted().compactMap { provider -> AlertDraft? in
            let count = (byProvider[provider] ?? []).reduce(0) { $0 + $1.possibleDoubleCharges }
            guard count > 0 else { return nil }
            return AlertDraft(
                type: AlertRule.possibleDoubleCharge.rawValue, severity: .high,
                fingerprint: "\(AlertRule.possibleDoubleCharge.rawValue):\(provider)",
                message:
                    "\(provider): \(count) submission\(count == 1 ? "" : "s") may have been paid twice in the last \(Int(settings.doubleChargeWindow / 60)) min; check the provider's bill",
                details: [
                    "provider": .string(provider), "count": .number(Double(count)),
                    "window_seconds": .number(settings.doubleChargeWindow),
                ])
        }
    }

    /// One alert per provider for its jobs retried more than `maxRetries` times.
    func retries(_ jobs: [RetriedJob]) -> [AlertDraft] {
        let byProvider = Dictionary(grouping: jobs, by: \.provider)
        return byProvider.keys.sorted().map { provider in
            let jobs = byProvider[provider] ?? []
            let listed = jobs.prefix(10).map { "\($0.generationID) (\($0.attempts) attempts)" }
            return AlertDraft(
                type: AlertRule.jobRetries.rawValue, severity: .medium,
                fingerprint: "\(AlertRule.jobRetries.rawValue):\(provider)",
                message:
                    "\(provider): \(jobs.count) job\(jobs.count == 1 ? " was" : "s were") retried more than \(settings.maxRetries) times: \(listed.joined(separator: ", "))\(jobs.count > listed.count ? ", …" : "")",
                details: [
                    "provider": .string(provider), "count": .number(Double(jobs.count)),
                    "max_retries": .number(Double(settings.maxRetries)),
                    "jobs": .array(
                        jobs.prefix(50).map {
                            .object([
                                "generation_id": .string($0.generationID), "model": .string($0.model),
                                "attempts": .number(Double($0.attempts)),
                                "last_error": $0.lastErrorCode.map(JSONValue.string) ?? .null,
                            ])
                        }),
                ])
        }
    }

    /// The service that evaluates the rules: its own heartbeat travels the bus like the others'.
    public static let evaluator = "monitor"

    func services(_ services: [(service: String, heartbeatAge: Double?)], staleAfter: Double) -> [AlertDraft] {
        // When not even the monitor's own heartbeat arrives, the bus is what is down: one
        // incident, not one per service.
        if let own = services.first(where: { $0.service == Self.evaluator }), let age = own.heartbeatAge,
            age > staleAfter
        {
            return [
                AlertDraft(
                    type: AlertRule.serviceDown.rawValue, severity: .critical,
                    fingerprint: "\(AlertRule.serviceDown.rawValue):bus",
                    message:
                        "No heartbeat has reached the monitor for \(Int(age.rounded())) s, its own included: the event bus (gengate up or gengate bus) is down or out of reach",
                    details: ["service": .string("bus"), "heartbeat_age_seconds": .number((age * 10).rounded() / 10)])
            ]
        }
        return services.compactMap { entry -> AlertDraft? in
            if let age = entry.heartbeatAge, age <= staleAfter { return nil }
            let said =
                entry.heartbeatAge.map { "no heartbeat for \(Int($0.rounded())) s" } ?? "no heartbeat seen"
            return AlertDraft(
                type: AlertRule.serviceDown.rawValue, severity: .critical,
                fingerprint: "\(AlertRule.serviceDown.rawValue):\(entry.service)",
                message: "\(entry.service) is down: \(said) (stale after \(Int(staleAfter)) s)",
                details: [
                    "service": .string(entry.service),
                    "heartbeat_age_seconds": entry.heartbeatAge.map { .number(($0 * 10).rounded() / 10) } ?? .null,
                ])
        }
    }
}
