import Foundation
import GenGateBus
import GenGateRuntime
import Logging

/// The fixed points of the bus on this host: one queue device per work queue and the event
/// forwarder, whose backend also binds the public event stream.
struct BusDevices {
    let devices: [BusDevice]
    let publicEvents: String
    let context: ZMQContext

    static func start(config: GenGateConfig, logger: Logger) async throws -> BusDevices {
        let topology = BusTopology(config: config)
        let context = try ZMQContext()
        let onFailure: @Sendable (String) -> Void = { logger.error("\($0)") }
        var devices: [BusDevice] = []
        do {
            for queue in WorkQueue.allCases {
                devices.append(
                    try await BusDevice.start(
                        context: context, kind: .queue, name: queue.rawValue,
                        frontend: [topology.bindEndpoints["\(queue.rawValue)-in"]!],
                        backend: [topology.bindEndpoints["\(queue.rawValue)-out"]!], onFailure: onFailure))
            }
            devices.append(
                try await BusDevice.start(
                    context: context, kind: .forwarder, name: "events",
                    frontend: [topology.bindEndpoints["events-in"]!],
                    backend: [topology.bindEndpoints["events-out"]!, topology.eventsPublic],
                    onFailure: onFailure))
        } catch {
            for device in devices { await device.stop() }
            throw ConfigError(
                "cannot start the message bus: \(error) (is another GenGate using the same ports? see --events-port)")
        }
        logger.debug("bus devices started", metadata: ["endpoints": "\(topology.endpoints)"])
        return BusDevices(
            devices: devices, publicEvents: devices.last?.backendEndpoints.last ?? topology.eventsPublic,
            context: context)
    }

    /// Stops every device, then ends the ZeroMQ context.
    func stop() async {
        for device in devices { await device.stop() }
        await context.terminate(within: .seconds(2))
    }
}
