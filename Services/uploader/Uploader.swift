import ArgumentParser
import GenGateBus
import GenGateRuntime

/// The uploader: fetches each output from the provider and writes it to object storage,
/// checkpointing every output as it lands. Any number of uploaders share the `upload` queue.
@main
struct UploaderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "uploader", abstract: "GenGate uploader")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let environment = try await ServiceEnvironment.start(service: "uploader", options: options)
        let topology = environment.topology
        let consumer = try await WorkConsumer.connect(context: environment.zmq, queue: .upload,
                                                      endpoint: topology.consumerEndpoint(.upload))
        let transfer = OutputTransfer(environment: environment)
        let loop = WorkLoop(consumer: consumer, concurrency: environment.config.jobs.concurrency, logger: environment.logger) { item in
            await transfer.handle(item)
        }
        environment.logger.info("uploader started", metadata: ["objects": "\(environment.config.objectsDirectory.path)"])
        try await environment.run([loop])
    }
}
