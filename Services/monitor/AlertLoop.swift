import Foundation
import GenGateCore
import GenGateMonitoring
import GenGateRuntime
import GenGateStore
import Logging
import Metrics
import ServiceLifecycle

/// Checks the alert rules every `alerts.evaluate_every_seconds` against the store (attempts
/// and retries, which no lost event can hide) and the service table, raises alerts through
/// the store (which keeps one per incident, across monitors and restarts), resolves the ones
/// whose condition ended, and hands new ones to the notifier.
struct AlertLoop: Service, CustomStringConvertible {
    var description: String { "AlertLoop" }

    let store: any GenerationStore
    let rules: AlertRules
    let services: ServiceTable
    let notifier: AlertNotifier
    let state: MonitorState
    let every: Duration
    let coolDown: TimeInterval
    let staleAfter: Double
    let logger: Logger
    /// The store's outage as this monitor saw it: when it began and the alert sent for it
    /// (not in the store, which could not take it).
    let outage = Locked<(since: Date, alert: Alert?)?>(nil)

    func run() async throws {
        await resumeDeliveries()
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await evaluate()
                try? await Task.sleep(for: every)
            }
        }
    }

    /// Alerts this monitor (or another) raised but did not get to every channel before it stopped.
    func resumeDeliveries() async {
        do {
            let recent = try await store.alerts(AlertFilter(states: [.open, .acknowledged], limit: 200))
            for alert in recent where Date().timeIntervalSince(alert.createdAt) < 3_600 { notifier.resume(alert) }
        } catch {
            logger.warning("cannot read alerts to finish their delivery", metadata: ["error": "\(error)"])
        }
    }

    func evaluate(now: Date = Date()) async {
        let settings = rules.settings
        var outcomes: [TimeInterval: [AttemptOutcomes]]? = [:]
        var retried: [RetriedJob]?
        var storeError: String?
        do {
            for window in Set([settings.failureRate.window, settings.timeoutRate.window, settings.doubleChargeWindow]) {
                outcomes?[window] = try await store.attemptOutcomes(since: now.addingTimeInterval(-window))
            }
            retried = try await store.retriedJobs(
                moreThan: settings.maxRetries + 1, since: now.addingTimeInterval(-settings.retryWindow), limit: 200)
        } catch {
            outcomes = nil
            storeError = String(describing: error)
        }
        let ages = await services.heartbeatAges()
        let inputs = AlertInputs(
            outcomes: outcomes, retried: retried, services: ages, staleAfter: staleAfter, storeError: storeError)
        var verdict = rules.evaluate(inputs)

        if let storeError {
            await storeIsDown(verdict.raised.first { $0.type == AlertRule.storeUnreachable.rawValue }, storeError, now)
            return
        }
        await storeIsBack(now)
        verdict.raised.removeAll { $0.type == AlertRule.storeUnreachable.rawValue }

        var raisedFingerprints: Set<String> = []
        for draft in verdict.raised {
            raisedFingerprints.insert(draft.fingerprint)
            do {
                if let alert = try await store.raiseAlert(draft, coolDown: coolDown, now: now) {
                    Counter(
                        label: "gengate_alerts_raised_total",
                        dimensions: [("type", alert.type), ("severity", alert.severity.rawValue)]
                    ).increment()
                    logger.warning(
                        "alert",
                        metadata: ["alert": "\(alert.id)", "type": "\(alert.type)", "message": "\(alert.message)"])
                    notifier.notify(alert)
                }
            } catch {
                logger.warning(
                    "cannot raise an alert", metadata: ["error": "\(error)", "alert": "\(draft.fingerprint)"])
            }
        }
        do {
            let open = try await store.alerts(AlertFilter(states: [.open, .acknowledged], limit: 1_000))
            let ended = open.filter { alert in
                guard let rule = AlertRule(rawValue: alert.type), verdict.checked.contains(rule) else { return false }
                return !raisedFingerprints.contains(alert.fingerprint)
            }
            if try await store.resolveAlerts(fingerprints: ended.map(\.fingerprint), at: now) > 0 {
                logger.info("alerts resolved", metadata: ["alerts": "\(ended.map(\.id).joined(separator: ","))"])
            }
        } catch {
            logger.warning("cannot resolve alerts", metadata: ["error": "\(error)"])
        }
    }

    /// The store cannot be read: an alert is sent (once per outage, after two evaluations in a
    /// row failed, so one slow moment is not an incident) without the store, and the error is
    /// kept for the error log.
    func storeIsDown(_ draft: AlertDraft?, _ error: String, _ now: Date) async {
        let known = outage.withLock { current -> (since: Date, alert: Alert?) in
            if let current { return current }
            let started = (since: now, alert: Alert?.none)
            current = started
            return started
        }
        guard known.alert == nil, now.timeIntervalSince(known.since) > 0, let draft else { return }
        let alert = Alert(
            id: Identifier.make("alt", at: now), type: draft.type, severity: draft.severity,
            fingerprint: draft.fingerprint, message: draft.message, details: draft.details, createdAt: now,
            lastSeenAt: now, occurrences: 1, resolvedAt: nil, acknowledgedAt: nil, acknowledgedBy: nil,
            deliveries: [:])
        outage.withLock { $0?.alert = alert }
        Counter(
            label: "gengate_alerts_raised_total",
            dimensions: [("type", alert.type), ("severity", alert.severity.rawValue)]
        ).increment()
        logger.critical(
            "alert", metadata: ["alert": "\(alert.id)", "type": "\(alert.type)", "message": "\(alert.message)"])
        notifier.notify(alert)
        await state.log(
            ErrorEntry(
                level: .critical, source: "store", code: ErrorCode.unavailable.rawValue, message: error,
                generationID: nil, at: now))
    }

    /// The store answers again: the outage goes on record as an alert that has ended.
    func storeIsBack(_ now: Date) async {
        guard
            let ended = outage.withLock({ current -> (since: Date, alert: Alert?)? in
                defer { current = nil }
                return current
            }), let alert = ended.alert
        else { return }
        let draft = AlertDraft(
            type: alert.type, severity: alert.severity, fingerprint: alert.fingerprint,
            message: alert.message + " (from \(Timestamp.format(ended.since)) to \(Timestamp.format(now)))",
            details: alert.details.merging(["outage_seconds": .number(now.timeIntervalSince(ended.since).rounded())]) {
                $1
            })
        do {
            _ = try await store.raiseAlert(draft, coolDown: 0, now: ended.since)
            _ = try await store.resolveAlerts(fingerprints: [alert.fingerprint], at: now)
        } catch {
            logger.warning("cannot record the store's outage", metadata: ["error": "\(error)"])
        }
    }
}
