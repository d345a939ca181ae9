import ArgumentParser
import GenGateBus
import GenGateCore
import GenGateImageInputs
import GenGateJobs
import GenGateRuntime
import Hummingbird
import NIOCore

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
        // Hints for the requests that wait on jobs (server-sent events, Prefer: wait).
        let hub = EventHub(
            subscriber: try await EventSubscriber.connect(
                context: environment.zmq, endpoint: environment.topology.eventsSubscriberEndpoint,
                topics: ["generation."]),
            logger: environment.logger)
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
        // The API's description, made once: it changes only with the configuration.
        let openAPI = try OpenAPIRoute.document(providers: environment.providers, config: config)
        router.get("openapi.json") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(data: openAPI)))
        }
        // Providers' callbacks carry their own proof, not an API key.
        CallbackRoutes(environment: environment, poll: poll).register(on: router)
        let api = router.group("v1").add(middleware: AuthMiddleware(store: environment.store, cache: KeyCache()))
        let validator = SubmissionValidator(
            providers: environment.providers, jobs: config.jobs,
            webhookPolicy: OutboundURLPolicy(allowPrivate: config.webhooks.allowPrivate), images: config.images)
        let masterKey = try MasterKey.load(config: config)
        let uploads = UploadRoutes(
            environment: environment, processor: environment.makeImageProcessor(), inputs: environment.inputObjects,
            links: environment.inputLinks(box: masterKey))
        uploads.register(on: api, router: router)
        let routes = GenerationRoutes(
            environment: environment, dispatch: dispatch, validator: validator,
            jobs: environment.jobs(notify: { step, id, reason in
                // What the engine moves here (a chain's step let go, a batch's released jobs).
                switch step {
                case .submit: dispatch.send(generationID: id, reason: reason)
                case .check: poll.send(generationID: id, reason: reason)
                case .upload: break  // the sweep hands it on
                }
            }), hub: hub,
            uploads: uploads)
        routes.register(on: api)
        let secrets = WebhookSecretKeeper(
            store: environment.store, box: masterKey, grace: config.webhooks.rotationGraceSeconds)
        let links = OutputLinks(
            box: masterKey, baseURL: config.publicBaseURL, lifetime: config.openai.linkLifetimeSeconds)
        OpenAIRoutes(routes: routes, links: links).register(on: api)
        // Signed links carry their own proof, not an API key.
        router.get("files/:id/:index") { request, context in
            try await routes.linkedOutput(request, context, links: links)
        }
        WebhookRoutes(routes: routes, secrets: secrets).register(on: api)
        let sender = WebhookSender(
            store: environment.store, secrets: secrets, config: config.webhooks,
            policy: OutboundURLPolicy(allowPrivate: config.webhooks.allowPrivate), hub: hub,
            instance: environment.instance, logger: environment.logger,
            render: { generation in
                var view = try await routes.fullView(generation, lasting: true)
                view["webhook_deliveries"] = nil  // the deliveries' own bookkeeping stays out of them
                return view
            })

        // An idle timeout closes connections of clients that stopped talking (and is the last
        // resort for one that never reads its answer).
        let app = Application(
            router: router, server: .http1(configuration: .init(idleTimeout: .seconds(60))),
            configuration: .init(address: .hostname(config.http.host, port: config.http.port), serverName: "GenGate"),
            logger: environment.logger)
        environment.logger.info(
            "api-ingress listening", metadata: ["address": "\(config.http.host):\(config.http.port)"])
        // Stopped in reverse order: the hub first, which ends the streams the server then waits for.
        try await environment.run([app, sender, hub])
        await dispatch.close()
        await poll.close()
        await environment.finish()
    }
}
