import ArgumentParser
import GenGateBus
import GenGateRuntime

/// The dispatcher: claims pending work, submits it to the provider, hands provider tasks to the
/// pollers, schedules retries, and runs the recovery sweep.
@main
struct DispatcherCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dispatcher", abstract: "GenGate dispatcher")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let environment = try await ServiceEnvironment.start(service: "dispatcher", options: options)
        let topology = environment.topology
        let consumer = try await WorkConsumer.connect(context: environment.zmq, queue: .dispatch,
                                                      endpoint: topology.consumerEndpoint(.dispatch))
        var producers: [WorkQueue: WorkProducer] = [:]
        for queue in WorkQueue.allCases {
            producers[queue] = try await WorkProducer.connect(context: environment.zmq, queue: queue,
                                                              endpoint: topology.producerEndpoint(queue), source: environment.instance)
        }
        let submitter = Submitter(environment: environment, poll: producers[.poll]!, upload: producers[.upload]!)
        let loop = WorkLoop(consumer: consumer, concurrency: environment.config.jobs.concurrency, logger: environment.logger) { item in
            await submitter.handle(item)
        }
        let sweep = RecoverySweep(environment: environment, producers: producers)
        environment.logger.info("dispatcher started", metadata: ["store": "\(environment.config.storePath)"])
        try await environment.run([loop, sweep])
        for producer in producers.values { await producer.close() }
    }
}
