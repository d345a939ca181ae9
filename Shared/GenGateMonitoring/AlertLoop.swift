import Foundation
import GenGateCore
import GenGateStore
import Logging

/// Checks the alert rules every `every` against the store (attempts, jobs and retries, which no
/// lost event can hide) and the services' heartbeats, raises alerts through the store (which
/// keeps one per incident, across monitors and restarts), resolves the ones whose condition
/// ended, and has the notifier send new ones and any a monitor did not finish sending.
public final class AlertLoop: Sendable {
    let store: any MonitoringStore
    let rules: AlertRules
    let notifier: AlertNotifier
    let heartbeatAges: @Sendable () async -> [(service: String, heartbeatAge: Double?)]
    let log: @Sendable (ErrorEntry) async -> Void
    /// Told of each alert raised (new, or grown), for metrics.
    let onRaise: @Sendable (Alert) -> Void
    let coolDown: TimeInterval
    let staleAfter: Double
    /// Each store read of an evaluation has this long; a read that takes longer counts as the
    /// store being unreachable.
    let readTimeout: Duration
    let logger: Logger
    /// Alerts not yet sent everywhere are sent again while they are younger than this.
    let deliveryWindow: TimeInterval
    /// Jobs with more retries listed at most: when there are more, retry alerts are not resolved.
    static let retriedLimit = 500

    /// The store's outage as this monitor saw it: when it began, the alert sent for it (held
    /// here: the store could not take it), and when the last one ended (its cool-down).
    struct Outage {
        var since: Date?
        var alert: Alert?
        var lastEnded: Date?
    }
    let outage = Locked(Outage())
    /// Evaluations in a row whose writes failed, and the last failure.
    let writes = Locked<(failures: Int, last: String?)>((0, nil))

    /// A failure that says the store is out of reach or busy (not a refusal of one statement).
    static func isOutage(_ error: any Error) -> Bool {
        error is DeadlinePassed || StoreError.isUnavailable(error)
    }

    /// Writes wait for the writer lock behind others' batches: twice a read's time.
    var writeTimeout: Duration { readTimeout * 2 }

    public init(
        store: any MonitoringStore, rules: AlertRules, notifier: AlertNotifier, coolDown: TimeInterval,
        staleAfter: Double, readTimeout: Duration = .seconds(10), deliveryWindow: TimeInterval = 3_600,
        logger: Logger, heartbeatAges: @escaping @Sendable () async -> [(service: String, heartbeatAge: Double?)],
        log: @escaping @Sendable (ErrorEntry) async -> Void, onRaise: @escaping @Sendable (Alert) -> Void = { _ in }
    ) {
        self.onRaise = onRaise
        self.store = store
        self.rules = rules
        self.notifier = notifier
        self.coolDown = coolDown
        self.staleAfter = staleAfter
        self.readTimeout = readTimeout
        self.deliveryWindow = deliveryWindow
        self.logger = logger
        self.heartbeatAges = heartbeatAges
        self.log = log
    }

    /// Evaluates every `every` until cancelled.
    public func run(every: Duration) async {
        while !Task.isCancelled {
            await evaluate()
            try? await Task.sleep(for: every)
        }
    }

    /// A store read with the evaluation's deadline. An unreachable store (its own "unavailable",
    /// or no answer in time) is `unreachable`; any other failure only skips the rules that need
    /// this figure.
    func read<T: Sendable>(
        _ what: String, unreachable: inout String?, _ body: @escaping @Sendable () async throws -> T
    ) async -> T? {
        guard unreachable == nil else { return nil }
        switch await withDeadline(readTimeout, body) {
        case .success(let value):
            return value
        case .failure(let error) where Self.isOutage(error):
            unreachable = "\(what): \(error)"
        case .failure(let error):
            if !(error is CancellationError) {
                logger.error("cannot read \(what) for the alert rules", metadata: ["error": "\(error)"])
            }
        }
        return nil
    }

    public func evaluate(now: Date = Date()) async {
        let settings = rules.settings
        let store = self.store
        var unreachable: String?
        var attempts: [TimeInterval: [OutcomeCounts]]? = [:]
        for window in settings.attemptWindows.sorted() {
            let since = now.addingTimeInterval(-window)
            attempts?[window] = await read("attempts", unreachable: &unreachable) {
                try await store.attemptOutcomes(since: since)
            }
            if attempts?[window] == nil { attempts = nil }
        }
        var jobs: [TimeInterval: [OutcomeCounts]]? = [:]
        for window in settings.jobWindows.sorted() {
            let since = now.addingTimeInterval(-window)
            jobs?[window] = await read("jobs", unreachable: &unreachable) { try await store.jobOutcomes(since: since) }
            if jobs?[window] == nil { jobs = nil }
        }
        let totals = await read("double charges", unreachable: &unreachable) {
            try await store.possibleDoubleCharges()
        }
        let retrySince = now.addingTimeInterval(-settings.retryWindow)
        let retried = await read("retried jobs", unreachable: &unreachable) {
            try await store.retriedJobs(moreThan: settings.maxRetries + 1, since: retrySince, limit: Self.retriedLimit)
        }
        let inputs = AlertInputs(
            attempts: attempts, jobs: jobs, doubleChargeTotals: totals, retried: retried,
            services: await heartbeatAges(), staleAfter: staleAfter, storeError: unreachable)
        var verdict = rules.evaluate(inputs)
        // Stopping: reads cut short by the cancellation say nothing of the store.
        if Task.isCancelled { return }
        let outagesAlerted = !settings.disabled.contains(.storeUnreachable)
        if let unreachable {
            if outagesAlerted { await storeIsDown(AlertRules.storeUnreachable(unreachable), unreachable, now) }
            return
        }
        verdict.raised.removeAll { $0.type == AlertRule.storeUnreachable.rawValue }
        // Reads work; writes may not (a full disk, a writer lock that never comes): two
        // evaluations in a row whose writes failed are an outage too.
        let failingWrites = writes.withLock { $0 }
        if failingWrites.failures >= 2, let error = failingWrites.last, outagesAlerted {
            await storeIsDown(AlertRules.storeUnreachable(error), error, now, confirmed: true)
        }
        var wrote = false
        var writeError: String?
        // A full page of retried jobs may leave some out: their providers' alerts stay as they are.
        if (retried?.count ?? 0) >= Self.retriedLimit { verdict.checked.remove(.jobRetries) }

        var raised: Set<String> = []
        for draft in verdict.raised {
            raised.insert(draft.fingerprint)
            let coolDown = self.coolDown
            switch await withDeadline(writeTimeout, { try await store.raiseAlert(draft, coolDown: coolDown, now: now) })
            {
            case .success(let raisedAlert):
                wrote = true
                if let alert = raisedAlert {
                    if alert.occurrences == 1 {
                        logger.warning(
                            "alert",
                            metadata: ["alert": "\(alert.id)", "type": "\(alert.type)", "message": "\(alert.message)"])
                    } else {
                        logger.warning(
                            "alert grew",
                            metadata: [
                                "alert": "\(alert.id)", "level": "\(alert.level)", "message": "\(alert.message)",
                            ])
                    }
                    onRaise(alert)
                    notifier.deliver(alert)
                }
            case .failure(let error):
                // Written or not (a lost commit), the alert is found by the next evaluation's
                // look at unsent alerts below, or raised again.
                if Self.isOutage(error) { writeError = "writes fail: \(error)" }
                logger.warning(
                    "cannot raise an alert", metadata: ["error": "\(error)", "alert": "\(draft.fingerprint)"])
            }
        }
        let settled = await settle(
            verdict: verdict, raised: raised, now: now, redeliver: failingWrites.failures == 0)
        wrote = wrote || settled.wrote
        if let error = settled.error { writeError = error }
        let failures = writes.withLock { state -> Int in
            if let writeError {
                state.failures += 1
                state.last = writeError
            } else if wrote {
                state.failures = 0
            }
            return state.failures
        }
        // Back: reads work, and so do writes (or none failed): an outage ends on record.
        if failures == 0 { await storeIsBack(now) }
    }

    /// Resolves unresolved alerts whose condition ended (of rules checked this time, or turned
    /// off), and hands the notifier those not sent everywhere yet. Returns why its write failed.
    func settle(verdict: AlertVerdict, raised: Set<String>, now: Date, redeliver: Bool) async -> (
        wrote: Bool, error: String?
    ) {
        var open: [Alert] = []
        var cursor: String?
        let store = self.store
        repeat {
            let before = cursor
            let read = await withDeadline(readTimeout) {
                try await store.alerts(AlertFilter(states: [.open, .acknowledged], before: before, limit: 500))
            }
            switch read {
            case .success(let page):
                open += page
                cursor = page.count == 500 ? page.last?.id : nil
            case .failure(let error):
                logger.warning("cannot read open alerts", metadata: ["error": "\(error)"])
                return (false, nil)
            }
        } while cursor != nil
        let disabled = rules.settings.disabled
        let ended = open.filter { alert in
            guard let rule = AlertRule(rawValue: alert.type) else { return false }
            if disabled.contains(rule) { return true }
            guard verdict.checked.contains(rule), !raised.contains(alert.fingerprint) else { return false }
            // A possible double charge stays until someone has looked at it.
            return rule != .possibleDoubleCharge || alert.acknowledgedAt != nil
        }
        var outcome: (wrote: Bool, error: String?) = (false, nil)
        if !ended.isEmpty {
            let fingerprints = ended.map(\.fingerprint)
            let resolved = await withDeadline(writeTimeout) {
                try await store.resolveAlerts(fingerprints: fingerprints, at: now)
            }
            switch resolved {
            case .success(let count):
                outcome.wrote = true
                if count > 0 {
                    logger.info("alerts resolved", metadata: ["alerts": "\(ended.map(\.id).joined(separator: ","))"])
                }
            case .failure(let error):
                if Self.isOutage(error) { outcome.error = "writes fail: \(error)" }
                logger.warning("cannot resolve alerts", metadata: ["error": "\(error)"])
            }
        }
        // Handed on while the store records deliveries (when it does not, what was sent would
        // be sent again): alerts created, or grown, within the delivery window.
        guard redeliver else { return outcome }
        let endedIDs = Set(ended.map(\.id))
        for alert in open where !endedIDs.contains(alert.id) {
            let since = alert.level > 0 ? alert.lastSeenAt : alert.createdAt
            if now.timeIntervalSince(since) < deliveryWindow { notifier.deliver(alert) }
        }
        return outcome
    }

    /// The store cannot be reached (or takes no writes): an alert is sent (once per outage,
    /// after two evaluations in a row failed, so one slow moment is not an incident, and not
    /// within the cool-down of the last one sent) without the store, and the error kept for the
    /// error log.
    /// `confirmed`: seen twice already (writes that failed in two evaluations).
    func storeIsDown(_ draft: AlertDraft, _ error: String, _ now: Date, confirmed: Bool = false) async {
        let send = outage.withLock { state -> Bool in
            guard let since = state.since else {
                state.since = now
                guard confirmed else { return false }
                return state.lastEnded.map { now.timeIntervalSince($0) >= coolDown } ?? true
            }
            guard state.alert == nil, now > since else { return false }
            // Within the cool-down of the last alerted outage: not yet (a long one is sent once
            // the cool-down has passed).
            if let ended = state.lastEnded, now.timeIntervalSince(ended) < coolDown { return false }
            return true
        }
        guard send else { return }
        let alert = Alert(
            id: Identifier.make("alt", at: now), type: draft.type, severity: draft.severity,
            fingerprint: draft.fingerprint, message: draft.message, details: draft.details, createdAt: now,
            lastSeenAt: now, occurrences: 1, resolvedAt: nil, acknowledgedAt: nil, acknowledgedBy: nil,
            deliveries: [:])
        outage.withLock { $0.alert = alert }
        logger.critical(
            "alert", metadata: ["alert": "\(alert.id)", "type": "\(alert.type)", "message": "\(alert.message)"])
        onRaise(alert)
        notifier.deliver(alert, stored: false)
        await log(
            ErrorEntry(
                level: .critical, source: "store", code: ErrorCode.unavailable.rawValue, message: error,
                generationID: nil, at: now))
    }

    /// The store answers again: an outage that was alerted goes on record, under the id it was
    /// sent with, as an alert that has ended (so nothing sends it again).
    func storeIsBack(_ now: Date) async {
        let current = outage.withLock { ($0.since, $0.alert) }
        guard let since = current.0 else { return }
        guard let alert = current.1 else {
            // Not alerted (one failed evaluation, or within a cool-down): nothing to record.
            outage.withLock { $0.since = nil }
            return
        }
        let draft = AlertDraft(
            type: alert.type, severity: alert.severity, fingerprint: alert.fingerprint,
            message: alert.message + " (from \(Timestamp.format(since)) to \(Timestamp.format(now)))",
            details: alert.details.merging(["outage_seconds": .number(now.timeIntervalSince(since).rounded())]) {
                $1
            })
        let store = self.store
        let coolDown = self.coolDown
        let recorded = await withDeadline(writeTimeout) {
            _ = try await store.raiseAlert(draft, coolDown: coolDown, now: alert.createdAt, id: alert.id)
            _ = try await store.resolveAlerts(fingerprints: [alert.fingerprint], at: now)
        }
        if case .failure(let error) = recorded {
            // Kept: the next evaluation tries again.
            logger.warning("cannot record the store's outage", metadata: ["error": "\(error)"])
            return
        }
        // Only an outage that was alerted starts a cool-down.
        outage.withLock { state in
            state.since = nil
            state.alert = nil
            state.lastEnded = now
        }
    }

}
