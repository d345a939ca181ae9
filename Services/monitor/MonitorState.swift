import Foundation
import GenGateBus
import GenGateCore
import GenGateMonitoring
import GenGateRuntime
import GenGateStore
import Logging
import Metrics
import ServiceLifecycle

/// What the monitor has made of the event stream: windows per provider and model, the
/// messages it missed, and error log entries on their way to the store.
actor MonitorState {
    private(set) var windows = ProviderWindows()
    private(set) var gaps = EventGaps()
    private var pendingErrors: [ErrorEntry] = []
    /// Error log entries are written in batches; beyond this many waiting (the store down),
    /// new ones are counted and dropped rather than held without bound.
    static let maxPendingErrors = 10_000

    func record(_ received: ReceivedEvent, now: Date = Date()) {
        // The service's name is worked out only when a gap is found, not for every event.
        func service() -> String { ServiceEnvironment.parseInstance(received.source)?.service ?? received.source }
        let missed = gaps.saw(source: received.source, service: service(), seq: received.seq, now: now)
        if missed > 0 {
            Counter(label: "gengate_events_missed_total", dimensions: [("service", service())]).increment(by: missed)
        }
        windows.record(received.event, now: now)
        // Its id from the message's: every monitor writes the same entry, which the store keeps once.
        let id = received.messageID.hasPrefix("msg_") ? "err_" + received.messageID.dropFirst(4) : nil
        if let entry = Self.errorEntry(for: received.event, id: id) { log(entry) }
    }

    func log(_ entry: ErrorEntry) {
        guard pendingErrors.count < Self.maxPendingErrors else {
            Counter(label: "gengate_error_log_dropped_total").increment()
            return
        }
        pendingErrors.append(entry)
    }

    func takeErrors(limit: Int) -> [ErrorEntry] {
        let taken = Array(pendingErrors.prefix(limit))
        pendingErrors.removeFirst(taken.count)
        return taken
    }

    /// Puts back entries a write failed to store, ahead of newer ones.
    func putBack(_ entries: [ErrorEntry]) {
        let all = entries + pendingErrors
        if all.count > Self.maxPendingErrors {
            Counter(label: "gengate_error_log_dropped_total").increment(by: all.count - Self.maxPendingErrors)
        }
        pendingErrors = Array(all.prefix(Self.maxPendingErrors))
    }

    func figures(now: Date = Date(), window: TimeInterval? = nil) -> [ProviderFigures] {
        windows.figures(now: now, window: window)
    }

    func missed(now: Date = Date()) -> [String: Int] { gaps.missed(now: now) }

    func timeline(provider: String, now: Date = Date()) -> [WindowFigures] {
        windows.timeline(provider: provider, now: now)
    }

    /// The error log entry an event makes, if it says something went wrong.
    static func errorEntry(for event: Event, id: String? = nil) -> ErrorEntry? {
        switch event.payload {
        case .generationFailed(let failed):
            var context: [String: JSONValue] = [:]
            if let model = failed.model { context["model"] = .string(model) }
            if let attempts = failed.attempts { context["attempts"] = .number(Double(attempts)) }
            return ErrorEntry(
                id: id, level: .error, source: failed.provider ?? "gengate", code: failed.error.code.rawValue,
                message: failed.error.message, generationID: event.generationID, context: context, at: event.at)
        case .providerCall(let call) where call.outcome != "ok":
            return ErrorEntry(
                id: id, level: .warning, source: call.provider, code: call.errorCode,
                message: "\(call.operation) call to \(call.provider) failed: \(call.errorCode ?? "error")",
                generationID: event.generationID,
                context: [
                    "model": .string(call.model), "operation": .string(call.operation),
                    "latency_ms": .number(Double(call.latencyMs)),
                    "retryable": call.retryable.map(JSONValue.bool) ?? .null,
                ], at: event.at)
        case .providerPossibleDoubleCharge(let charge):
            return ErrorEntry(
                id: id, level: .critical, source: charge.provider, code: nil,
                message: "attempt \(charge.attempt) at \(charge.provider) may have been paid twice",
                generationID: event.generationID,
                context: [
                    "model": .string(charge.model), "attempt": .number(Double(charge.attempt)),
                    "client_reference": .string(charge.clientReference),
                ], at: event.at)
        case .providerCircuitOpened(let opened):
            return ErrorEntry(
                id: id, level: .error, source: opened.provider, code: ErrorCode.providerUnavailable.rawValue,
                message:
                    "\(opened.provider) kept failing to answer; submissions to it pause until \(Timestamp.format(opened.until))",
                generationID: nil, context: [:], at: event.at)
        default:
            return nil
        }
    }
}

/// Writes the error log to the store in batches, once a second.
struct ErrorLogWriter: Service, CustomStringConvertible {
    func drop(_ batch: [ErrorEntry], _ error: any Error) async {
        Counter(label: "gengate_error_log_dropped_total").increment(by: batch.count)
        logger.error(
            "error log entries refused by the store; dropped",
            metadata: ["entries": "\(batch.count)", "error": "\(error)"])
    }

    var description: String { "ErrorLogWriter" }
    let state: MonitorState
    let store: any GenerationStore
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                await flush()
            }
        }
        await flush()
    }

    func flush() async {
        while true {
            let batch = await state.takeErrors(limit: 500)
            guard !batch.isEmpty else { return }
            do {
                try await store.appendErrors(batch)
            } catch  where StoreError.isUnavailable(error) {
                await state.putBack(batch)
                logger.warning("cannot write the error log", metadata: ["error": "\(error)"])
                return
            } catch {
                // Refused (or its outcome unknown): one entry at a time, so that one the store
                // will not take is dropped alone (entries are written once however often tried).
                for (index, entry) in batch.enumerated() {
                    do {
                        try await store.appendErrors([entry])
                    } catch  where StoreError.isUnavailable(error) {
                        await state.putBack(Array(batch[index...]))
                        return
                    } catch {
                        await drop([entry], error)
                    }
                }
            }
        }
    }
}
