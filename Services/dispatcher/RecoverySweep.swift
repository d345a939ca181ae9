import Foundation
import GenGateBus
import GenGateCore
import GenGateRuntime
import ServiceLifecycle

/// DESIGN.md rule 2 in action: every `sweep_interval_seconds`, fail jobs past their deadline and
/// re-send a message for every job whose lease expired or whose message was probably lost, so a
/// killed process or a dropped message delays a job by at most one lease period.
/// Several dispatchers may sweep at once; compare-and-set makes that harmless.
struct RecoverySweep: Service, CustomStringConvertible {
    var description: String { "RecoverySweep" }

    let environment: ServiceEnvironment
    let producers: [WorkQueue: WorkProducer]

    func run() async throws {
        let interval = Duration.milliseconds(Int(environment.config.jobs.sweepIntervalSeconds * 1_000))
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await sweepOnce()
                } catch is CancellationError {
                    return
                } catch {
                    environment.logger.error("recovery sweep failed", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: interval)
            }
        }
    }

    func sweepOnce(now: Date = Date()) async throws {
        for generation in try await environment.store.pastDeadline(now: now, limit: 500) {
            _ = try await environment.fail(generation, error: GenGateError(.taskTimeout, "the generation passed its deadline"), now: now)
        }
        let stale = now.addingTimeInterval(-environment.config.jobs.staleAfterSeconds)
        for work in try await environment.store.dueWork(now: now, staleBefore: stale, limit: 1_000) {
            let queue: WorkQueue
            switch work.status {
            case .pending, .retryWait, .dispatching: queue = .dispatch
            case .running: queue = .poll
            case .uploading: queue = .upload
            case .completed, .failed, .cancelled: continue
            }
            if work.leaseExpired {
                environment.logger.notice("lease expired; re-driving", metadata: ["generation": "\(work.id)", "status": "\(work.status.rawValue)"])
            }
            producers[queue]?.send(generationID: work.id, reason: work.leaseExpired ? "lease expired" : "sweep")
        }
    }
}
