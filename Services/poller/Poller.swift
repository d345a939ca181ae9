import ArgumentParser
import GenGateBus
import GenGateCore
import GenGateJobs
import GenGateRuntime
import ServiceLifecycle

/// The poller: checks running provider tasks when their next check is due, each check a short
/// action, then hands finished outputs to the uploaders. Any number of pollers share the due
/// checks through the store; `poll` messages only wake them early.
@main
struct PollerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "poller", abstract: "GenGate poller")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let environment = try await ServiceEnvironment.start(service: "poller", options: options)
        let hints = try await WorkConsumer.connect(
            context: environment.zmq, queue: .poll,
            endpoint: environment.topology.consumerEndpoint(.poll))
        let producers = try await WorkProducers.connect(environment)
        let checks = StatusChecks(context: environment.jobs(notify: producers.notify))
        environment.logger.info("poller started")
        let report = CheckReport(
            stats: checks.stats, every: .milliseconds(Int(environment.config.bus.heartbeatSeconds * 1_000)),
            publish: { environment.events.publish(Event(.pollerChecks($0))) })
        try await environment.run([checks, WakeOnHints(hints: hints, wake: checks.wake), report])
        await producers.close()
        await environment.finish()
    }
}

/// Publishes what the checks did (`poller.checks`) every heartbeat interval, until shutdown.
struct CheckReport: Service, CustomStringConvertible {
    var description: String { "CheckReport" }

    let stats: CheckStats
    let every: Duration
    let publish: @Sendable (EventPayload.PollerChecks) -> Void

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: every)
                publish(stats.drain())
            }
        }
        publish(stats.drain())
    }
}

/// Rings the status checks' doorbell for every `poll` message, until graceful shutdown.
struct WakeOnHints: Service, CustomStringConvertible {
    var description: String { "WakeOnHints" }

    let hints: WorkConsumer
    let wake: @Sendable () -> Void

    func run() async throws {
        await withGracefulShutdownHandler {
            for await _ in hints.items { wake() }
        } onGracefulShutdown: { [hints] in
            Task { await hints.close() }
        }
        await hints.close()
    }
}
