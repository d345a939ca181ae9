import ArgumentParser
import GenGateBus
import GenGateRuntime

/// The poller: watches provider tasks with back-off until they finish, then hands the outputs to
/// the uploaders. Any number of pollers share the `poll` queue.
@main
struct PollerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "poller", abstract: "GenGate poller")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let environment = try await ServiceEnvironment.start(service: "poller", options: options)
        let topology = environment.topology
        let consumer = try await WorkConsumer.connect(context: environment.zmq, queue: .poll, endpoint: topology.consumerEndpoint(.poll))
        let upload = try await WorkProducer.connect(context: environment.zmq, queue: .upload,
                                                    endpoint: topology.producerEndpoint(.upload), source: environment.instance)
        let watcher = TaskWatcher(environment: environment, upload: upload)
        let loop = WorkLoop(consumer: consumer, concurrency: environment.config.jobs.concurrency, logger: environment.logger) { item in
            await watcher.handle(item)
        }
        environment.logger.info("poller started")
        try await environment.run([loop])
        await upload.close()
    }
}
