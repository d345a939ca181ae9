import ArgumentParser
import GenGateBus
import GenGateImageInputs
import GenGateJobs
import GenGateRuntime

/// The dispatcher: claims due work, submits it to the provider, hands provider tasks to the
/// pollers, schedules retries, and runs the recovery sweep (one dispatcher at a time sweeps).
@main
struct DispatcherCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dispatcher", abstract: "GenGate dispatcher")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let environment = try await ServiceEnvironment.start(service: "dispatcher", options: options)
        let consumer = try await WorkConsumer.connect(
            context: environment.zmq, queue: .dispatch,
            endpoint: environment.topology.consumerEndpoint(.dispatch))
        let producers = try await WorkProducers.connect(environment)
        let jobs = environment.jobs(
            notify: producers.notify,
            images: try environment.imagePreparation(processor: environment.makeImageProcessor()))
        let submission = Submission(context: jobs)
        let loop = WorkLoop(
            consumer: consumer, concurrency: environment.config.jobs.concurrency, drain: environment.drain,
            logger: environment.logger
        ) { id in
            await submission.handle(id)
        }
        environment.logger.info("dispatcher started", metadata: ["store": "\(environment.config.storeDescription)"])
        try await environment.run([loop, RecoverySweep(context: jobs)])
        // Jobs let go from the waiting room are handled outside the loop: their submissions too
        // are recorded before the process ends.
        jobs.waiting.stop()
        await jobs.waiting.drain()
        await producers.close()
        await environment.finish()
    }
}
