import Foundation
import GenGateBus
import GenGateRuntime
import Logging

/// The fixed points of the bus on this host: one queue device per work queue and the event
/// forwarder, whose backend also binds the public event stream.
struct BusDevices {
    let devices: [BusDevice]
    let publicEvents: String

    static func start(config: GenGateConfig, logger: Logger) async throws -> BusDevices {
        let topology = BusTopology(config: config)
        let context = try ZMQContext()
        var devices: [BusDevice] = []
        do {
            for queue in WorkQueue.allCases {
                devices.append(try await BusDevice.start(context: context, kind: .queue, name: queue.rawValue,
                                                         frontend: [topology.producerEndpoint(queue)],
                                                         backend: [topology.consumerEndpoint(queue)]))
            }
            devices.append(try await BusDevice.start(context: context, kind: .forwarder, name: "events",
                                                     frontend: [topology.eventsPublisherEndpoint],
                                                     backend: [topology.eventsSubscriberEndpoint, topology.eventsPublic]))
        } catch {
            for device in devices { await device.stop() }
            throw ConfigError("cannot start the message bus: \(error) (is another GenGate using the same ports? see --events-port)")
        }
        logger.debug("bus devices started", metadata: ["endpoints": "\(topology.endpoints)"])
        return BusDevices(devices: devices, publicEvents: devices.last?.backendEndpoints.last ?? topology.eventsPublic)
    }

    func stop() async {
        for device in devices { await device.stop() }
    }
}
