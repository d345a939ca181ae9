import Foundation
import GenGateCore
import GenGateStore

/// The settings of the alert rules (from the `alerts` section of the configuration).
public struct AlertRuleSettings: Sendable, Equatable {
    public struct Rate: Sendable, Equatable {
        public var threshold: Double
        public var window: TimeInterval
        public var minimumAttempts: Int
        /// A second, shorter window checked the same way (0: none), so that a provider that
        /// stops working is seen in minutes, not once its failures outweigh an hour of successes.
        public var shortWindow: TimeInterval

        public init(threshold: Double, window: TimeInterval, minimumAttempts: Int, shortWindow: TimeInterval = 0) {
            self.threshold = threshold
            self.window = window
            self.minimumAttempts = minimumAttempts
            self.shortWindow = shortWindow
        }

        var windows: [TimeInterval] { shortWindow > 0 ? [window, shortWindow] : [window] }
    }

    public var failureRate = Rate(threshold: 0.5, window: 3_600, minimumAttempts: 10, shortWindow: 300)
    public var timeoutRate = Rate(threshold: 0.2, window: 3_600, minimumAttempts: 10)
    public var maxRetries = 3
    public var retryWindow: TimeInterval = 3_600
    /// How long after the last possible double charge its alert may resolve (once acknowledged).
    public var doubleChargeWindow: TimeInterval = 3_600
    public var disabled: Set<AlertRule> = []

    public init() {}

    /// The windows of attempts the rules read.
    public var attemptWindows: Set<TimeInterval> { Set(failureRate.windows + [doubleChargeWindow]) }
    /// The windows of jobs the rules read.
    public var jobWindows: Set<TimeInterval> { Set(timeoutRate.windows) }
}

/// What the rules are checked against, gathered by the monitor. A figure that could not be
/// read is nil, and the rules that need it are skipped (their alerts neither raised nor
/// resolved) rather than taken for zero.
public struct AlertInputs: Sendable {
    /// Attempts that ended in each window the rules read, by provider and model.
    public var attempts: [TimeInterval: [OutcomeCounts]]?
    /// Jobs that ended in each window the rules read, by provider and model.
    public var jobs: [TimeInterval: [OutcomeCounts]]?
    /// Possible double charges ever, by provider: an alert's level, so each new one is sent.
    public var doubleChargeTotals: [String: Int]?
    public var retried: [RetriedJob]?
    /// Each expected service and the age of its freshest heartbeat (nil: never seen).
    public var services: [(service: String, heartbeatAge: Double?)]?
    public var staleAfter: Double
    /// Why the store could not be reached, if it could not.
    public var storeError: String?

    public init(
        attempts: [TimeInterval: [OutcomeCounts]]?, jobs: [TimeInterval: [OutcomeCounts]]? = nil,
        doubleChargeTotals: [String: Int]? = nil, retried: [RetriedJob]?,
        services: [(service: String, heartbeatAge: Double?)]?, staleAfter: Double, storeError: String?
    ) {
        self.attempts = attempts
        self.jobs = jobs
        self.doubleChargeTotals = doubleChargeTotals
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

    /// Failures that say the request was refused for what it asked, not that the provider
    /// failed: they do not count against a provider.
    public static let clientCaused: Set<String> = [
        ErrorCode.invalidRequest.rawValue, ErrorCode.contentPolicy.rawValue, ErrorCode.cancelled.rawValue,
        ErrorCode.invalidImage.rawValue, ErrorCode.inputUnavailable.rawValue,
    ]

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
            rate(.providerFailureRate, settings.failureRate, inputs.attempts)
        }
        check(.taskTimeoutRate) {
            rate(.taskTimeoutRate, settings.timeoutRate, inputs.jobs)
        }
        check(.possibleDoubleCharge) {
            guard let windowed = inputs.attempts?[settings.doubleChargeWindow], let totals = inputs.doubleChargeTotals
            else { return nil }
            return doubleCharges(windowed, totals: totals)
        }
        check(.jobRetries) { inputs.retried.map(retries) }
        check(.serviceDown) { inputs.services.map { services($0, staleAfter: inputs.staleAfter) } }
        check(.storeUnreachable) { inputs.storeError.map { [Self.storeUnreachable($0)] } ?? [] }
        return verdict
    }

    /// The alert for a store that cannot be reached (or written).
    public static func storeUnreachable(_ error: String) -> AlertDraft {
        AlertDraft(
            type: AlertRule.storeUnreachable.rawValue, severity: .critical,
            fingerprint: AlertRule.storeUnreachable.rawValue, message: "The store cannot be reached: \(error)",
            details: ["error": .string(error)])
    }

    /// What counts against the rule in `outcome`: failures not caused by the request
    /// (`providerFailureRate`), or jobs that ran past their deadline (`taskTimeoutRate`).
    func counted(_ rule: AlertRule, _ outcome: OutcomeCounts) -> Int {
        if rule == .taskTimeoutRate { return outcome.failures[ErrorCode.taskTimeout.rawValue, default: 0] }
        return outcome.failures.filter { !Self.clientCaused.contains($0.key) }.values.reduce(0, +)
    }

    /// Per provider (its models together): the share of what ended in a window that failed or
    /// timed out, over the long window or the short one; when the provider as a whole is fine,
    /// each of its models the same way (a model that fails alone is its own incident).
    func rate(
        _ rule: AlertRule, _ setting: AlertRuleSettings.Rate, _ byWindow: [TimeInterval: [OutcomeCounts]]?
    ) -> [AlertDraft]? {
        guard let byWindow, setting.windows.allSatisfy({ byWindow[$0] != nil }) else { return nil }
        var drafts: [AlertDraft] = []
        var providers = Set<String>()
        for window in setting.windows { providers.formUnion(byWindow[window]!.map(\.provider)) }
        for provider in providers.sorted() {
            var found: AlertDraft?
            for window in setting.windows where found == nil {
                let models = byWindow[window]!.filter { $0.provider == provider }
                found = draft(rule, setting, window: window, subject: provider, provider: provider, models: models)
            }
            if let found {
                drafts.append(found)
                continue
            }
            let modelNames = Set(
                setting.windows.flatMap { byWindow[$0]!.filter { $0.provider == provider }.map(\.model) })
            guard modelNames.count > 1 else { continue }
            for model in modelNames.sorted() {
                for window in setting.windows {
                    let models = byWindow[window]!.filter { $0.provider == provider && $0.model == model }
                    if let draft = draft(
                        rule, setting, window: window, subject: "\(provider)/\(model)", provider: provider,
                        models: models)
                    {
                        drafts.append(draft)
                        break
                    }
                }
            }
        }
        return drafts
    }

    func draft(
        _ rule: AlertRule, _ setting: AlertRuleSettings.Rate, window: TimeInterval, subject: String, provider: String,
        models: [OutcomeCounts]
    ) -> AlertDraft? {
        let ended = models.reduce(0) { $0 + $1.ended }
        let bad = models.reduce(0) { $0 + counted(rule, $1) }
        guard ended >= setting.minimumAttempts, ended > 0 else { return nil }
        let share = Double(bad) / Double(ended)
        guard share > setting.threshold else { return nil }
        let what = rule == .taskTimeoutRate ? "jobs ran past their deadline" : "attempts failed"
        var failures: [String: Int] = [:]
        for model in models { failures.merge(model.failures, uniquingKeysWith: +) }
        let percent = Int((share * 100).rounded())
        let minutes = Int(window / 60)
        return AlertDraft(
            type: rule.rawValue, severity: rule == .providerFailureRate ? .high : .medium,
            fingerprint: "\(rule.rawValue):\(subject)",
            message:
                "\(subject): \(bad) of \(ended) \(what) in the last \(minutes) min (\(percent)%, over \(Int((setting.threshold * 100).rounded()))%)",
            details: [
                "provider": .string(provider), "subject": .string(subject), "ended": .number(Double(ended)),
                "count": .number(Double(bad)), "rate": .number((share * 1_000).rounded() / 1_000),
                "threshold": .number(setting.threshold), "window_seconds": .number(window),
                "failures": .object(failures.mapValues { .number(Double($0)) }),
                "models": .object(
                    Dictionary(
                        models.map {
                            (
                                $0.model,
                                JSONValue.object([
                                    "ended": .number(Double($0.ended)), "count": .number(Double(counted(rule, $0))),
                                ])
                            )
                        }, uniquingKeysWith: { first, _ in first })),
            ])
    }

    /// A provider with possible double charges in the window: one incident, sent again each
    /// time there are more (its level is the provider's count of them, ever).
    func doubleCharges(_ outcomes: [OutcomeCounts], totals: [String: Int]) -> [AlertDraft] {
        let byProvider = Dictionary(grouping: outcomes, by: \.provider)
        return byProvider.keys.sorted().compactMap { provider -> AlertDraft? in
            let count = (byProvider[provider] ?? []).reduce(0) { $0 + $1.possibleDoubleCharges }
            guard count > 0 else { return nil }
            let total = max(count, totals[provider] ?? 0)
            return AlertDraft(
                type: AlertRule.possibleDoubleCharge.rawValue, severity: .high,
                fingerprint: "\(AlertRule.possibleDoubleCharge.rawValue):\(provider)",
                message:
                    "\(provider): \(count) submission\(count == 1 ? "" : "s") may have been paid twice in the last \(Int(settings.doubleChargeWindow / 60)) min (\(total) in all); check the provider's bill",
                details: [
                    "provider": .string(provider), "count": .number(Double(count)), "total": .number(Double(total)),
                    "window_seconds": .number(settings.doubleChargeWindow),
                ], level: total)
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
        // When no heartbeat arrives, the monitor's own included, the bus is what is down: one
        // incident, not one per service.
        let silent = services.allSatisfy { ($0.heartbeatAge ?? .infinity) > staleAfter }
        if silent, let own = services.first(where: { $0.service == Self.evaluator }), let age = own.heartbeatAge {
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
