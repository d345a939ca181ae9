import ArgumentParser
import GenGateBus
import GenGateRuntime
import Hummingbird

/// api-ingress: the HTTP API for applications. Validates, authenticates, commits, answers at
/// once with an id, and tells the dispatchers.
@main
struct ApiIngressCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "api-ingress", abstract: "GenGate HTTP API")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let environment = try await ServiceEnvironment.start(service: "api-ingress", options: options)
        let config = environment.config
        let dispatch = try await WorkProducer.connect(
            context: environment.zmq, queue: .dispatch,
            endpoint: environment.topology.producerEndpoint(.dispatch),
            source: environment.instance)
        let poll = try await WorkProducer.connect(
            context: environment.zmq, queue: .poll, endpoint: environment.topology.producerEndpoint(.poll),
            source: environment.instance)
        let router = Router(context: GateContext.self)
        // One line per request at debug level (headers left out, so keys never reach the log).
        router.middlewares.add(RequestLog())
        router.middlewares.add(ErrorMiddleware(maxBodyBytes: config.http.maxBodyBytes))
        router.get("health") { _, _ in
            do {
                _ = try await environment.store.apiKeyCount()
            } catch {
                throw APIError.unavailable
            }
            return JSONResponse.make(status: .ok, ["status": .string("ok"), "service": .string(environment.instance)])
        }
        // Providers' callbacks carry their own proof, not an API key.
        CallbackRoutes(environment: environment, poll: poll).register(on: router)
        let api = router.group("v1").add(middleware: AuthMiddleware(store: environment.store, cache: KeyCache()))
        let validator = SubmissionValidator(providers: environment.providers, jobs: config.jobs)
        GenerationRoutes(environment: environment, dispatch: dispatch, validator: validator, jobs: environment.jobs())
            .register(on: api)

        // An idle timeout closes connections of clients that stopped talking (and is the last
        // resort for one that never reads its answer).
        let app = Application(
            router: router, server: .http1(configuration: .init(idleTimeout: .seconds(60))),
            configuration: .init(address: .hostname(config.http.host, port: config.http.port), serverName: "GenGate"),
            logger: environment.logger)
        environment.logger.info(
            "api-ingress listening", metadata: ["address": "\(config.http.host):\(config.http.port)"])
        try await environment.run([app])
        await dispatch.close()
        await poll.close()
        await environment.finish()
    }
}
