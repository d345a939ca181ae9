import ArgumentParser
import GenGateBus
import GenGateRuntime
import Hummingbird
import Metrics
import Prometheus

/// monitor: subscribes to every event, counts them into Prometheus metrics, and reports each
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
        let services = ServiceTable(staleAfter: config.monitor.staleAfterSeconds)
        let counter = EventCounter(subscriber: subscriber, services: services, logger: environment.logger)

        let router = Router()
        router.get("metrics") { _, _ in
            await services.recordAges()
            do {
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
        try await environment.run([app, counter])
        await environment.finish()
    }
}
