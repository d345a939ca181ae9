import Foundation
import GenGateBus
import GenGateCore
import GenGateStore
import Logging
import Metrics
import ServiceLifecycle

/// Reads the event stream and turns each event into metrics; heartbeats go to the service table.
/// Events may be lost (PUB/SUB), so these counts are for operators, never for decisions.
struct EventCounter: Service, CustomStringConvertible {
    var description: String { "EventCounter" }

    let subscriber: EventSubscriber
    let services: ServiceTable
    let state: MonitorState
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
                    await state.log(
                        ErrorEntry(
                            level: .warning, source: "bus", code: nil, message: "an event was rejected: \(error)",
                            generationID: nil, at: Date()))
                }
            }
        }
        await subscriber.close()
    }

    func count(_ received: ReceivedEvent) async {
        await state.record(received)
        let event = received.event
        Counter(label: "gengate_events_total", dimensions: [("type", event.type.rawValue)]).increment()
        switch event.payload {
        case .serviceHeartbeat(let beat):
            await services.heartbeat(beat)
            // Every message a service's bus sockets dropped since it started (they only say
            // how many so far: a gauge per service and socket).
            for (socket, count) in beat.busDropped {
                Gauge(
                    label: "gengate_bus_dropped_messages", dimensions: [("service", beat.service), ("socket", socket)]
                )
                .record(Double(count))
            }
        case .generationCreated(let created):
            Counter(
                label: "gengate_generations_created_total",
                dimensions: [("provider", created.provider), ("model", created.model)]
            ).increment()
        case .generationCompleted(let completed):
            Counter(
                label: "gengate_generations_completed_total",
                dimensions: [("provider", completed.provider), ("model", completed.model)]
            ).increment()
            Timer(label: "gengate_generation_duration_seconds", dimensions: [("provider", completed.provider)])
                .recordNanoseconds(Int64(completed.durationMs) * 1_000_000)
        case .generationFailed(let failed):
            Counter(
                label: "gengate_generations_failed_total",
                dimensions: [
                    ("provider", failed.provider ?? "unknown"), ("model", failed.model ?? "unknown"),
                    ("code", failed.error.code.rawValue),
                ]
            ).increment()
        case .generationCancelled:
            Counter(label: "gengate_generations_cancelled_total").increment()
        case .generationRetrying:
            Counter(label: "gengate_generation_retries_total").increment()
        case .generationFallback(let fallback):
            Counter(
                label: "gengate_generation_fallbacks_total", dimensions: [("from", fallback.from), ("to", fallback.to)]
            ).increment()
        case .generationOutput(let output):
            Counter(label: "gengate_outputs_stored_total").increment()
            Counter(label: "gengate_output_bytes_total").increment(by: output.bytes)
        case .providerCircuitOpened(let opened):
            Counter(label: "gengate_provider_circuit_opened_total", dimensions: [("provider", opened.provider)])
                .increment()
        case .providerCall(let call):
            Counter(
                label: "gengate_provider_calls_total",
                dimensions: [
                    ("provider", call.provider), ("operation", call.operation), ("outcome", call.outcome),
                    ("code", call.errorCode ?? "none"),
                ]
            ).increment()
            Timer(
                label: "gengate_provider_call_duration_seconds",
                dimensions: [("provider", call.provider), ("operation", call.operation)]
            )
            .recordNanoseconds(Int64(call.latencyMs) * 1_000_000)
        case .providerPossibleDoubleCharge(let charge):
            // Counted from the store at each scrape (see Monitor), where no event can be lost.
            logger.warning(
                "possible double charge",
                metadata: ["generation": "\(event.generationID ?? "")", "provider": "\(charge.provider)"])
        case .pollerChecks(let checks):
            Counter(label: "gengate_status_calls_total").increment(by: checks.statusCalls)
            Gauge(label: "gengate_check_lateness_max_seconds").record(checks.latenessMax)
        case .generationStarted, .generationProgress, .generationStreamChunk:
            break
        }
    }
}
