import ArgumentParser
import Foundation
import AsyncHTTPClient
import GenGateBus
import GenGateCore
import GenGateMonitoring
import GenGateRuntime
import GenGateStore
import HTTPTypes
import Hummingbird
import Metrics
import Prometheus
import ServiceLifecycle

/// monitor: subscribes to every event, counts them into Prometheus metrics and windows per
/// provider, keeps the error log, checks the alert rules and sends alerts, and reports each
/// service's heartbeat age. Serves `GET /metrics` and `GET /health`.
@main
struct MonitorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "monitor", abstract: "GenGate monitor")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let environment = try await ServiceEnvironment.start(service: "monitor", options: options)
        let config = environment.config
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(DescribedMetricsFactory(registry: registry))
        let subscriber = try await EventSubscriber.connect(
            context: environment.zmq,
            endpoint: environment.topology.eventsSubscriberEndpoint)
        let services = ServiceTable(
            staleAfter: config.monitor.staleAfterSeconds, expected: config.monitor.expectedServices)
        let state = MonitorState()
        let counter = EventCounter(
            subscriber: subscriber, services: services, state: state, logger: environment.logger)
        let channelSettings: AlertChannelSettings
        do {
            channelSettings = try AlertChannelSettings(
                webhookURL: config.alerts.webhookUrl, emailFrom: config.alerts.emailFrom,
                emailTo: config.alerts.emailTo)
        } catch {
            throw ValidationError("alert channels: \(error)")
        }
        let alertClient = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(
                redirectConfiguration: .disallow,
                timeout: .init(connect: .seconds(10), read: .seconds(Int64(config.alerts.deliveryTimeoutSeconds)))))
        let store = environment.store
        let owner = environment.instance
        let notifier = AlertNotifier(
            channels: channelSettings.channels(
                client: alertClient, timeout: .milliseconds(Int64(config.alerts.deliveryTimeoutSeconds * 1_000))),
            ledger: .init(
                claim: { id, channel, until in
                    try await store.claimAlertDelivery(
                        id: id, channel: channel, owner: owner, until: until, now: Date())
                },
                record: { id, channel, error, level in
                    try await store.recordAlertDelivery(
                        id: id, channel: channel, error: error, level: level, at: Date())
                }),
            giveUpAfter: .seconds(config.alerts.deliveryGiveUpSeconds),
            channelTimeout: .milliseconds(Int64(config.alerts.deliveryTimeoutSeconds * 1_000) + 5_000),
            logger: environment.logger
        ) { channel, sent in
            Counter(
                label: "gengate_alert_deliveries_total",
                dimensions: [("channel", channel), ("outcome", sent ? "sent" : "failed")]
            ).increment()
        }
        environment.logger.info(
            "alert channels", metadata: ["channels": "\(notifier.channels.map { $0.name }.joined(separator: ","))"])
        let alerts = AlertLoop(
            store: store, rules: AlertRules(settings: config.alerts.ruleSettings), notifier: notifier,
            coolDown: config.alerts.coolDownSeconds, staleAfter: config.monitor.staleAfterSeconds,
            // Past the store's own busy timeout: a busy store answers "unavailable" first.
            readTimeout: .seconds(config.store.busyTimeoutSeconds + 5),
            deliveryWindow: config.alerts.deliveryGiveUpSeconds, logger: environment.logger,
            heartbeatAges: { await services.heartbeatAges() }, log: { await state.log($0) },
            onRaise: { alert in
                Counter(
                    label: "gengate_alerts_raised_total",
                    dimensions: [("type", alert.type), ("severity", alert.severity.rawValue)]
                ).increment()
            })
        let errorLog = ErrorLogWriter(state: state, store: store, logger: environment.logger)

        let router = Router()
        let spend = SpendCounter(store: store, currency: config.pricing.currency)
        router.get("metrics") { _, _ in
            await services.recordAges()
            do {
                try await spend.refresh()
                for (status, count) in try await environment.store.activeCounts() {
                    Gauge(label: "gengate_generations_active", dimensions: [("status", status.rawValue)]).record(count)
                }
                // Each provider's open tasks and current adaptive limits (-1: none).
                for limit in try await environment.store.providerLimits() {
                    let provider = [("provider", limit.provider)]
                    Gauge(label: "gengate_provider_in_flight", dimensions: provider).record(limit.inFlight)
                    Gauge(label: "gengate_provider_concurrency_limit", dimensions: provider).record(
                        limit.concurrency ?? -1)
                    Gauge(label: "gengate_provider_rate_limit", dimensions: provider).record(
                        limit.requestsPerSecond ?? -1)
                }
                // Every rule, zero included: a gauge left at its last count would keep a
                // Prometheus alert firing after the incident ended.
                let open = try await environment.store.openAlertCounts()
                for rule in AlertRule.allCases {
                    Gauge(label: "gengate_alerts_open", dimensions: [("type", rule.rawValue)]).record(
                        open[rule.rawValue] ?? 0)
                }
                // From the store, not the event stream: a lost event must not hide a double charge.
                for (provider, count) in try await environment.store.possibleDoubleCharges() {
                    Gauge(label: "gengate_possible_double_charges", dimensions: [("provider", provider)]).record(
                        count)
                }
            } catch {
                environment.logger.warning("cannot count active generations", metadata: ["error": "\(error)"])
            }
            var buffer: [UInt8] = []
            buffer.reserveCapacity(16_384)
            registry.emit(into: &buffer)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        let health = DetailedHealth(
            store: store, objects: environment.objects, services: services, state: state)
        let gate = AdminGate(store: store)
        let dashboard = Dashboard(health: health, state: state, store: store, currency: config.pricing.currency)
        router.get("health/detailed") { request, _ in
            if case .failure(let refusal) = await gate.admin(request) { return AdminGate.answer(refusal) }
            let report = await health.report()
            return Response(
                status: .ok, headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
                body: ResponseBody(
                    byteBuffer: ByteBuffer(bytes: (try? JSONCoding.encode(JSONValue.object(report.json))) ?? Data())))
        }
        router.get("dashboard") { request, _ in
            if case .failure(let refusal) = await gate.admin(request) { return AdminGate.answer(refusal) }
            return Response(
                status: .ok,
                headers: [
                    .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                    .contentSecurityPolicy: "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
                    HTTPField.Name("X-Frame-Options")!: "DENY",
                ],
                body: ResponseBody(byteBuffer: ByteBuffer(string: await dashboard.page())))
        }
        // The dashboard's Acknowledge buttons: a form post from the page itself (a post from
        // another site, which a browser would send with the remembered Basic credentials, is refused).
        router.post("dashboard/alerts/:id/ack") { request, context in
            let key: APIKey
            switch await gate.admin(request) {
            case .success(let admin): key = admin
            case .failure(let refusal): return AdminGate.answer(refusal)
            }
            guard AdminGate.isSameOrigin(request) else { return AdminGate.answer(.crossSite) }
            guard let id = context.parameters.get("id"), id.hasPrefix("alt_"), id.count <= 64 else {
                return Response(
                    status: .notFound, headers: [.contentType: "text/plain; charset=utf-8"],
                    body: ResponseBody(byteBuffer: ByteBuffer(string: "no such alert\n")))
            }
            let acknowledged = await withDeadline(.seconds(10)) {
                try await store.acknowledgeAlert(id: id, by: key.id, at: Date())
            }
            switch acknowledged {
            case .success(.some): break
            case .success(.none):
                return Response(
                    status: .notFound, headers: [.contentType: "text/plain; charset=utf-8"],
                    body: ResponseBody(byteBuffer: ByteBuffer(string: "no such alert\n")))
            case .failure:
                return AdminGate.answer(.unavailable)
            }
            environment.logger.notice("alert acknowledged", metadata: ["alert": "\(id)", "key": "\(key.id)"])
            return Response(status: .seeOther, headers: [.location: "/dashboard#\(id)"])
        }
        router.get("health") { _, _ in
            let report = await services.report()
            return Response(
                status: report.healthy ? .ok : .serviceUnavailable,
                headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: report.json)))
        }
        let app = Application(
            router: router,
            configuration: .init(
                address: .hostname(config.monitor.host, port: config.monitor.port),
                serverName: "GenGate monitor"),
            logger: environment.logger)
        environment.logger.info(
            "monitor listening", metadata: ["address": "\(config.monitor.host):\(config.monitor.port)"])
        let evaluateEvery = Duration.milliseconds(Int64(config.alerts.evaluateEverySeconds * 1_000))
        try await environment.run([
            app, counter, errorLog, Background("AlertLoop") { await alerts.run(every: evaluateEvery) },
            Background("AlertNotifier") { await notifier.run() },
        ])
        try? await alertClient.shutdown()
        await environment.finish()
    }
}

/// Work that runs until a graceful shutdown cancels it (the alert rules, the notifier's
/// deliveries: what a notifier did not get to send, the next monitor to look sends, from the
/// delivery records).
struct Background: Service, CustomStringConvertible {
    let description: String
    let body: @Sendable () async -> Void

    init(_ name: String, _ body: @escaping @Sendable () async -> Void) {
        description = name
        self.body = body
    }

    func run() async throws {
        await cancelWhenGracefulShutdown { await body() }
    }
}

extension GenGateConfig.Alerts {
    /// The rules' settings from the configuration.
    var ruleSettings: AlertRuleSettings {
        var settings = AlertRuleSettings()
        // A short window as long as the window is no second window.
        func rate(_ rule: GenGateConfig.RateRule) -> AlertRuleSettings.Rate {
            .init(
                threshold: rule.threshold, window: rule.windowSeconds, minimumAttempts: rule.minimumAttempts,
                shortWindow: rule.shortWindowSeconds < rule.windowSeconds ? rule.shortWindowSeconds : 0)
        }
        settings.failureRate = rate(failureRate)
        settings.timeoutRate = rate(timeoutRate)
        settings.maxRetries = maxRetries
        settings.retryWindow = retryWindowSeconds
        settings.disabled = Set(disabledRules.compactMap(AlertRule.init(rawValue:)))
        return settings
    }
}
