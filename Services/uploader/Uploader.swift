import ArgumentParser
import GenGateBus
import GenGateJobs
import GenGateRuntime

/// The uploader: fetches each output from the provider and writes it to object storage,
/// checkpointing every output as it lands. Any number of uploaders share the `upload` queue.
@main
struct UploaderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "uploader", abstract: "GenGate uploader")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let environment = try await ServiceEnvironment.start(service: "uploader", options: options)
        let consumer = try await WorkConsumer.connect(
            context: environment.zmq, queue: .upload,
            endpoint: environment.topology.consumerEndpoint(.upload))
        let producers = try await WorkProducers.connect(environment)
        let transfer = OutputTransfer(context: environment.jobs(notify: producers.notify))
        let loop = WorkLoop(
            consumer: consumer, concurrency: environment.config.jobs.concurrency, drain: environment.drain,
            logger: environment.logger
        ) { id in
            await transfer.handle(id)
        }
        environment.logger.info(
            "uploader started", metadata: ["objects": "\(environment.config.objectsDirectory.path)"])
        try await environment.run([loop])
        await producers.close()
        await environment.finish()
    }
}
