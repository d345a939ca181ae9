import CoreMetrics
import Prometheus

/// Every metric the monitor serves, with the help text Prometheus shows for it. The monitor's
/// code records through swift-metrics (`Counter(label:)`, `Gauge(label:)`, `Timer(label:)`);
/// `DescribedMetricsFactory` makes each with its text from here, so `GET /metrics` passes
/// `promtool check metrics` (which refuses a metric without `# HELP`).
enum MetricCatalogue {
    static let help: [String: String] = [
        "gengate_events_total": "Events seen on the event stream, by type.",
        "gengate_bus_rejected_messages_total": "Messages on the bus that could not be read, by channel.",
        "gengate_bus_dropped_messages":
            "Messages a service's bus sockets dropped (from its heartbeats), by service and socket.",
        "gengate_generations_created_total": "Generations accepted, by provider and model.",
        "gengate_generations_completed_total": "Generations completed with their outputs, by provider and model.",
        "gengate_generation_duration_seconds":
            "Time from acceptance to completion of completed generations, by provider.",
        "gengate_generations_failed_total": "Generations that failed, by provider, model and error code.",
        "gengate_generations_cancelled_total": "Generations cancelled.",
        "gengate_generation_retries_total": "Attempts scheduled again after a failure that passes.",
        "gengate_generation_fallbacks_total":
            "Generations moved from one route of an alias to the next, by the routes' models.",
        "gengate_outputs_stored_total": "Outputs put in object storage.",
        "gengate_output_bytes_total": "Bytes of outputs put in object storage.",
        "gengate_provider_circuit_opened_total": "Times a provider's circuit opened after repeated failures.",
        "gengate_provider_calls_total": "Calls to providers, by provider, operation, outcome and error code.",
        "gengate_provider_call_duration_seconds": "Duration of calls to providers, by provider and operation.",
        "gengate_status_calls_total": "Status calls the pollers made to providers.",
        "gengate_check_lateness_max_seconds":
            "The latest a poller's status check came after its due time, in its last report.",
        "gengate_generations_active": "Generations not yet ended, by status (from the store).",
        "gengate_provider_in_flight": "Provider tasks open now, by provider (from the store).",
        "gengate_provider_concurrency_limit": "A provider's concurrency limit now, -1 for none, by provider.",
        "gengate_provider_rate_limit": "A provider's request rate limit per second now, -1 for none, by provider.",
        "gengate_possible_double_charges":
            "Attempts that may have been paid twice, by provider (from the store, never missed).",
        "gengate_spend_total":
            "What charged provider attempts cost, in the price table's currency, by provider and model (from the store).",
        "gengate_spend_wasted_total":
            "The part of gengate_spend_total paid for attempts that delivered nothing (failed after the provider charged, possible double charges).",
        "gengate_service_heartbeat_age_seconds": "Seconds since a service's last heartbeat, by service.",
        "gengate_service_up": "1 if a service's heartbeat is fresh, 0 if stale or missing, by service.",
        "gengate_events_missed_total":
            "Events a service published that the monitor never received (gaps in their seq), by service.",
        "gengate_error_log_dropped_total": "Error log entries dropped because too many waited for the store.",
        "gengate_alerts_raised_total": "Alerts raised (new incidents), by rule and severity.",
        "gengate_alert_deliveries_total": "Attempts to deliver alerts, by channel and outcome (sent, failed).",
        "gengate_alerts_open": "Alerts not yet resolved, by rule (from the store).",
    ]

    /// The help text of `name`; a metric missing from the catalogue is still described.
    static func describe(_ name: String) -> MetricNameDescriptor {
        MetricNameDescriptor(
            metricName: name, unitName: "",
            helpText: help[name] ?? name.replacingOccurrences(of: "_", with: " "))
    }
}

/// `PrometheusMetricsFactory` with help text (`MetricCatalogue`) on every metric it makes.
struct DescribedMetricsFactory: MetricsFactory {
    let base: PrometheusMetricsFactory
    var registry: PrometheusCollectorRegistry { base.registry }

    init(registry: PrometheusCollectorRegistry) {
        base = PrometheusMetricsFactory(registry: registry)
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: MetricCatalogue.describe(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: MetricCatalogue.describe(label), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        // The monitor records values as gauges only (no value histograms).
        registry.makeGauge(descriptor: MetricCatalogue.describe(label), labels: dimensions)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: MetricCatalogue.describe(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(
            descriptor: MetricCatalogue.describe(label), labels: dimensions,
            buckets: base.durationHistogramBuckets[label] ?? base.defaultDurationHistogramBuckets)
    }

    func destroyCounter(_ handler: any CounterHandler) { base.destroyCounter(handler) }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        base.destroyFloatingPointCounter(handler)
    }
    func destroyRecorder(_ handler: any RecorderHandler) { base.destroyRecorder(handler) }
    func destroyMeter(_ handler: any MeterHandler) { base.destroyMeter(handler) }
    func destroyTimer(_ handler: any TimerHandler) { base.destroyTimer(handler) }
}
