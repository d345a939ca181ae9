import Foundation
import GenGateBus
import GenGateCore
import Logging
import Metrics
import ServiceLifecycle

/// Reads the event stream and turns each event into metrics; heartbeats go to the service table.
/// Events may be lost (PUB/SUB), so these counts are for operators, never for decisions.
struct EventCounter: Service, CustomStringConvertible {
    var description: String { "EventCounter" }

    let subscriber: EventSubscriber
    let services: ServiceTable
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            for await result in subscriber.events {
                switch result {
                case .success(let received):
                    await count(received)
                case .failure(let error):
                    Counter(label: "gengate_bus_rejected_messages_total", dimensions: [("channel", "events")])
                        .increment()
                    logger.warning("rejected event", metadata: ["error": "\(error)"])
                }
            }
        }
        await subscriber.close()
    }

    func count(_ received: ReceivedEvent) async {
        let event = received.event
        let payload = event.payload
        Counter(label: "gengate_events_total", dimensions: [("type", event.type.rawValue)]).increment()
        let provider = payload["provider"]?.stringValue ?? "unknown"
        let model = payload["model"]?.stringValue ?? "unknown"
        switch event.type {
        case .serviceHeartbeat:
            await services.heartbeat(event, source: received.source)
            // Every message a service's bus sockets dropped since it started (they only say
            // how many so far: a gauge per service and socket).
            if case .object(let drops)? = payload["bus_dropped"] {
                let service = payload["service"]?.stringValue ?? "unknown"
                for (socket, count) in drops {
                    Gauge(
                        label: "gengate_bus_dropped_messages", dimensions: [("service", service), ("socket", socket)]
                    )
                    .record(count.doubleValue ?? 0)
                }
            }
        case .generationCreated:
            Counter(label: "gengate_generations_created_total", dimensions: [("provider", provider), ("model", model)])
                .increment()
        case .generationCompleted:
            Counter(
                label: "gengate_generations_completed_total", dimensions: [("provider", provider), ("model", model)]
            ).increment()
            if let milliseconds = payload["duration_ms"]?.doubleValue {
                Timer(label: "gengate_generation_duration_seconds", dimensions: [("provider", provider)])
                    .recordNanoseconds(Int64(milliseconds * 1_000_000))
            }
        case .generationFailed:
            let code = payload["error"]?["code"]?.stringValue ?? "unknown"
            Counter(
                label: "gengate_generations_failed_total",
                dimensions: [("provider", provider), ("model", model), ("code", code)]
            ).increment()
        case .generationCancelled:
            Counter(label: "gengate_generations_cancelled_total").increment()
        case .generationRetrying:
            Counter(label: "gengate_generation_retries_total").increment()
        case .generationFallback:
            Counter(
                label: "gengate_generation_fallbacks_total",
                dimensions: [
                    ("from", payload["from"]?.stringValue ?? "unknown"),
                    ("to", payload["to"]?.stringValue ?? "unknown"),
                ]
            ).increment()
        case .generationOutput:
            Counter(label: "gengate_outputs_stored_total").increment()
            if let bytes = payload["bytes"]?.intValue {
                Counter(label: "gengate_output_bytes_total").increment(by: bytes)
            }
        case .providerCircuitOpened:
            Counter(label: "gengate_provider_circuit_opened_total", dimensions: [("provider", provider)]).increment()
        case .providerCall:
            let operation = payload["operation"]?.stringValue ?? "unknown"
            let outcome = payload["outcome"]?.stringValue ?? "unknown"
            let code = payload["error_code"]?.stringValue ?? "none"
            Counter(
                label: "gengate_provider_calls_total",
                dimensions: [
                    ("provider", provider), ("operation", operation), ("outcome", outcome), ("code", code),
                ]
            ).increment()
            if let milliseconds = payload["latency_ms"]?.doubleValue {
                Timer(
                    label: "gengate_provider_call_duration_seconds",
                    dimensions: [("provider", provider), ("operation", operation)]
                )
                .recordNanoseconds(Int64(milliseconds * 1_000_000))
            }
        case .providerPossibleDoubleCharge:
            // Counted from the store at each scrape (see Monitor), where no event can be lost.
            logger.warning(
                "possible double charge",
                metadata: ["generation": "\(event.generationID ?? "")", "provider": "\(provider)"])
        case .pollerChecks:
            if let calls = payload["status_calls"]?.intValue {
                Counter(label: "gengate_status_calls_total").increment(by: calls)
            }
            if let late = payload["lateness_max"]?.doubleValue {
                Gauge(label: "gengate_check_lateness_max_seconds").record(late)
            }
        case .generationStarted, .generationProgress, .generationStreamChunk:
            break
        }
    }
}
