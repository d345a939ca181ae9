import Foundation
import GenGateCore
import GenGateStore
import Hummingbird

/// The caller's webhook signing secret, and each job's webhook deliveries.
struct WebhookRoutes: Sendable {
    let routes: GenerationRoutes
    let secrets: WebhookSecretKeeper

    var store: any GenerationStore { routes.store }

    func register(on group: RouterGroup<GateContext>) {
        group.get("webhooks/secret") { _, context in try await secret(context, rotate: false) }
        group.post("webhooks/secret/rotate") { _, context in try await secret(context, rotate: true) }
        group.get("generations/:id/webhooks") { _, context in try await deliveries(context) }
        group.post("generations/:id/webhooks/:delivery/redeliver") { _, context in try await redeliver(context) }
    }

    /// `{secret, created_at, previous_valid_until}`: the `whsec_…` secret that signs this key's
    /// deliveries (made on first read); after a rotation the previous one signs too until
    /// `previous_valid_until`, so receivers can switch without losing a delivery.
    func secret(_ context: GateContext, rotate: Bool) async throws -> Response {
        let key = try context.requireKey()
        let opened = rotate ? try await secrets.rotate(for: key.id) : try await secrets.secrets(for: key.id)
        if rotate { context.logger.notice("webhook secret rotated", metadata: ["key_id": "\(key.id)"]) }
        return JSONResponse.make(
            status: .ok,
            [
                "secret": .string(opened.secret), "created_at": .string(Timestamp.format(opened.createdAt)),
                "previous_valid_until": GenerationView.time(opened.previousUntil),
            ])
    }

    func deliveries(_ context: GateContext) async throws -> Response {
        let generation = try await routes.owned(context)
        let deliveries = try await store.webhookDeliveries(generationID: generation.id)
        return JSONResponse.make(
            status: .ok, ["object": .string("list"), "data": .array(deliveries.map(GenerationView.render))])
    }

    /// Sends a delivery again (a new round of attempts, with the same `webhook-id`).
    func redeliver(_ context: GateContext) async throws -> Response {
        let generation = try await routes.owned(context)
        guard let id = context.parameters.get("delivery"), id.count <= 64,
            try await store.redeliverWebhook(id: id, generationID: generation.id, now: Date())
        else {
            throw APIError.notFound(
                "no webhook delivery \(context.parameters.get("delivery") ?? "") of \(generation.id)")
        }
        routes.hub.wakeEveryone()
        let delivery = try await store.webhookDeliveries(generationID: generation.id).first { $0.id == id }
        guard let delivery, case .object(let view) = GenerationView.render(delivery) else {
            throw APIError.notFound("no webhook delivery \(id) of \(generation.id)")
        }
        return JSONResponse.make(status: .accepted, view)
    }
}
