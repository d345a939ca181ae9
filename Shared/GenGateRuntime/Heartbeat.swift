import Foundation
import GenGateBus
import GenGateCore
import ServiceLifecycle

/// Publishes `service.heartbeat` every `bus.heartbeat_seconds` until graceful shutdown, then one
/// last beat saying the service is stopping. The monitor reports each service's heartbeat age.
///
/// Each beat is also written to the store (`present`), where the recovery sweep, on whatever
/// host it runs, finds processes gone silent and voids their leases at once. It runs as the
/// first service of the group, so it is the last to stop: a process keeps beating while it
/// drains, and forgets itself in the store only once everything else has let go of its leases.
public struct Heartbeat: Service, CustomStringConvertible {
    public var description: String { "Heartbeat(\(environment.instance))" }

    let environment: ServiceEnvironment

    public init(environment: ServiceEnvironment) {
        self.environment = environment
    }

    public func run() async throws {
        let interval = Duration.milliseconds(Int(environment.config.bus.heartbeatSeconds * 1_000))
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                environment.events.publish(beat(stopping: false))
                await writePresence()
                try? await Task.sleep(for: interval)
            }
        }
        environment.events.publish(beat(stopping: true))
        do {
            try await environment.store.absent(instance: environment.instance)
        } catch {
            environment.logger.warning("cannot remove this process from the store", metadata: ["error": "\(error)"])
        }
    }

    /// One beat in the store; a failure only delays it (the sweep waits `jobs.silent_after_seconds`).
    func writePresence() async {
        do {
            try await environment.store.present(
                instance: environment.instance, at: Date(), silentAfter: environment.config.jobs.silentAfterSeconds)
        } catch {
            environment.logger.warning("cannot record this process's heartbeat", metadata: ["error": "\(error)"])
        }
    }

    func beat(stopping: Bool) -> Event {
        Event(
            .serviceHeartbeat(
                .init(
                    service: environment.service, instance: environment.instance, pid: Int(getpid()),
                    startedAt: environment.startedAt, stopping: stopping, busDropped: BusStatistics.shared.dropped)))
    }
}

extension ServiceEnvironment {
    /// The last step of a service: ends the ZeroMQ context once the service closed its sockets
    /// (bounded, so a socket left open cannot hang the exit).
    public func finish() async {
        await providers.shutdown()
        await zmq.terminate(within: .seconds(2))
    }

    /// Runs `services` and this process's heartbeat until SIGTERM or SIGINT asks for a graceful
    /// shutdown (or one of them fails), then closes the event publisher.
    public func run(_ services: [any Service]) async throws {
        // Graceful shutdown runs in reverse order: the heartbeat, first, stops last.
        let heartbeat = Heartbeat(environment: self)
        let all: [any Service] = [heartbeat] + services
        // Beat once before any work is claimed: a row left by an earlier process of the same name
        // (a container's pid 1 after a restart) must not look silent while this one works.
        await heartbeat.writePresence()
        let group = ServiceGroup(
            configuration: .init(
                services: all.map { .init(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            await events.close()
            await providers.shutdown()
            throw error
        }
        await events.close()
    }
}
