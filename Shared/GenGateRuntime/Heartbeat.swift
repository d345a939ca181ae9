import Foundation
import GenGateBus
import GenGateCore
import ServiceLifecycle

/// Publishes `service.heartbeat` every `bus.heartbeat_seconds` until graceful shutdown, then one
/// last beat saying the service is stopping. The monitor reports each service's heartbeat age.
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
                try? await Task.sleep(for: interval)
            }
        }
        environment.events.publish(beat(stopping: true))
    }

    func beat(stopping: Bool) -> Event {
        Event(
            .serviceHeartbeat,
            payload: [
                "service": .string(environment.service),
                "instance": .string(environment.instance),
                "pid": .number(Double(getpid())),
                "started_at": .string(Timestamp.format(environment.startedAt)),
                "stopping": .bool(stopping),
                "bus_dropped": .object(BusStatistics.shared.dropped.mapValues { .number(Double($0)) }),
            ])
    }
}

extension ServiceEnvironment {
    /// The last step of a service: ends the ZeroMQ context once the service closed its sockets
    /// (bounded, so a socket left open cannot hang the exit).
    public func finish() async {
        await zmq.terminate(within: .seconds(2))
    }

    /// Runs `services` and this process's heartbeat until SIGTERM or SIGINT asks for a graceful
    /// shutdown (or one of them fails), then closes the event publisher.
    public func run(_ services: [any Service]) async throws {
        let all: [any Service] = services + [Heartbeat(environment: self)]
        let group = ServiceGroup(
            configuration: .init(
                services: all.map { .init(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            await events.close()
            throw error
        }
        await events.close()
    }
}
