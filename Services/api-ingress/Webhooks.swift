import AsyncHTTPClient
import Foundation
import GenGateCore
import GenGateJobs
import GenGateRuntime
import GenGateStore
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Each API key's webhook signing secret: made on first need, kept sealed in the store, read
/// back through the master key. The secret is shown only to its own key.
final class WebhookSecretKeeper: Sendable {
    let store: any GenerationStore
    let box: SecretBox
    /// How long the previous secret keeps signing after a rotation.
    let grace: TimeInterval

    init(store: any GenerationStore, box: SecretBox, grace: TimeInterval) {
        self.store = store
        self.box = box
        self.grace = grace
    }

    struct Opened {
        var secret: String
        var createdAt: Date
        var previous: String?
        var previousUntil: Date?
    }

    /// The key's secrets, made now if it has none.
    func secrets(for keyID: String) async throws -> Opened {
        let sealed: WebhookSecrets
        if let found = try await store.webhookSecrets(keyID: keyID) {
            sealed = found
        } else {
            sealed = try await store.createWebhookSecret(
                keyID: keyID, sealed: try box.seal(Data(StandardWebhooks.newSecret().utf8)), at: Date())
        }
        return try open(sealed)
    }

    /// A new secret for the key; the one it had signs too until the grace period ends.
    func rotate(for keyID: String) async throws -> Opened {
        let now = Date()
        let sealed = try await store.rotateWebhookSecret(
            keyID: keyID, sealed: try box.seal(Data(StandardWebhooks.newSecret().utf8)),
            previousUntil: now.addingTimeInterval(grace), at: now)
        return try open(sealed)
    }

    private func open(_ sealed: WebhookSecrets) throws -> Opened {
        func text(_ data: Data) throws -> String {
            do {
                return String(decoding: try box.open(data), as: UTF8.self)
            } catch {
                throw GenGateError(
                    .internalError,
                    "a webhook secret cannot be opened with this master key (was GENGATE_MASTER_KEY or master.key changed?)"
                )
            }
        }
        let live = sealed.previousUntil.map { $0 > Date() } ?? false
        return Opened(
            secret: try text(sealed.sealed), createdAt: sealed.createdAt,
            previous: live ? try sealed.previous.map(text) : nil, previousUntil: live ? sealed.previousUntil : nil)
    }

    /// The keys a delivery is signed with now: the current secret's, and the previous one's
    /// during a rotation's grace period.
    func signingKeys(for keyID: String) async throws -> [[UInt8]] {
        let opened = try await secrets(for: keyID)
        return [opened.secret, opened.previous].compactMap { $0.flatMap(StandardWebhooks.key(secret:)) }
    }
}

/// Sends the applications' webhooks: claims due deliveries from the store (a lease each, so
/// several api-ingress processes share the work and none is sent twice at once), posts each,
/// signed, and records every attempt; a receiver that does not accept (2xx) gets it again on
/// the retry schedule, over hours. At least once: a process stopped mid-delivery leaves its
/// lease to run out and the delivery is sent again, with the same `webhook-id`.
struct WebhookSender: Service, CustomStringConvertible {
    var description: String { "WebhookSender" }

    let store: any GenerationStore
    let secrets: WebhookSecretKeeper
    let config: GenGateConfig.Webhooks
    let policy: OutboundURLPolicy
    let hub: EventHub
    let instance: String
    let logger: Logger
    /// The body's `data`: the job as `GET /v1/generations/{id}` shows it.
    let render: @Sendable (Generation) async throws -> [String: JSONValue]
    /// Clients kept per receiver, so that deliveries reuse their connections.
    let clients = WebhookClients()

    /// A client for deliveries to `host` at `address` (the one checked): it connects there,
    /// whatever the name resolves to by then (TLS still checks the certificate against the
    /// name), and follows no redirects (a receiver could send the delivery on to an address it
    /// may not reach).
    ///
    /// As many connections to the receiver as deliveries may go at once (`connections`), so that
    /// none waits in the client's queue for another's connection; one kept idle is closed after
    /// 4 s, before common servers' keep-alive ends (a request written on a connection the server
    /// is closing fails, and is not retried by the client).
    static func makeClient(timeout: Double, host: String, address: IPAddress?, connections: Int) -> HTTPClient {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(Int64(min(timeout, 10))), read: .seconds(Int64(timeout))))
        if let address { configuration.dnsOverride = [host: address.description] }
        configuration.connectionPool = .init(
            idleTimeout: .seconds(4), concurrentHTTP1ConnectionsPerHostSoftLimit: max(1, connections))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    func run() async throws {
        let watch = hub.watch(nil)
        // Rung by each delivery that ends: what the loop waits for while every slot is busy
        // (the hub's doorbell, rung by them too, rings at every event of every job).
        let slots = Doorbell()
        let inFlight = InFlight()
        let doorbell = watch.doorbell
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                while !Task.isCancelled {
                    let free = config.concurrency - inFlight.count.withLock { $0 }
                    var claimed: [WebhookDelivery] = []
                    if free > 0 {
                        do {
                            let now = Date()
                            claimed = try await store.claimWebhookDeliveries(
                                owner: instance, leaseUntil: now.addingTimeInterval(config.timeoutSeconds * 3 + 30),
                                now: now, limit: free)
                        } catch {
                            logger.warning("cannot claim webhook deliveries", metadata: ["error": "\(error)"])
                        }
                    }
                    for delivery in claimed {
                        inFlight.count.withLock { $0 += 1 }
                        group.addTask {
                            await deliver(delivery)
                            inFlight.count.withLock { $0 -= 1 }
                            slots.ring()
                            doorbell.ring()  // the job's next delivery may be due now
                        }
                    }
                    if free == 0 {
                        // Every slot busy: the next look is when one frees, at once.
                        await slots.wait(upTo: .seconds(1))
                    } else if claimed.count < free {
                        // Nothing more due: every job's events ring, so at most ten looks a second.
                        await doorbell.wait(upTo: .seconds(1))
                        try? await Task.sleep(for: .milliseconds(100))
                    }
                }
            }
        }
        hub.unwatch(watch)
        await clients.shutdown()
    }

    /// A failure on this side, said as it is (not as the receiver's).
    struct Problem: Error {
        let text: String
    }

    final class InFlight: Sendable {
        let count = Mutex(0)
    }

    /// One attempt at one delivery, recorded whatever happens.
    func deliver(_ delivery: WebhookDelivery) async {
        let started = ContinuousClock.now
        let now = Date()
        var status: Int?
        var problem: String?
        var final = false
        var body = delivery.body
        do {
            let sent: String
            do {
                sent = try await makeBody(delivery)
            } catch let error as OutboundURLRefused {
                throw error
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                throw Problem(text: "could not make the delivery's body (\(String(describing: error).prefix(200)))")
            }
            body = sent
            guard let url = URL(string: delivery.url), let host = url.host else {
                throw OutboundURLRefused(reason: "\(delivery.url) is not a URL")
            }
            let address = try await policy.checkResolved(host: host)
            let keys = try await secrets.signingKeys(for: delivery.ownerKeyID)
            let timestamp = Int(now.timeIntervalSince1970)
            let data = Data(sent.utf8)
            var request = HTTPClientRequest(url: delivery.url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: "User-Agent", value: "GenGate-Webhooks/1")
            request.headers.add(name: "webhook-id", value: delivery.id)
            request.headers.add(name: "webhook-timestamp", value: "\(timestamp)")
            request.headers.add(
                name: "webhook-signature",
                value: keys.map { StandardWebhooks.sign(key: $0, id: delivery.id, timestamp: timestamp, body: data) }
                    .joined(separator: " "))
            request.body = .bytes(ByteBuffer(data: data))
            let lease = clients.take(
                host: host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), address: address,
                timeout: config.timeoutSeconds, connections: config.concurrency)
            defer { clients.giveBack(lease) }
            let response = try await lease.client.execute(request, timeout: .seconds(Int64(config.timeoutSeconds)))
            status = Int(response.status.code)
            // The status is the answer. Up to 64 KiB of the body is read within what is left of
            // the delivery's time (so that the connection serves the next delivery); a receiver
            // that sends more, or drips it, only loses its connection.
            let left = Double(config.timeoutSeconds) - (ContinuousClock.now - started).inSeconds
            await WebhookClients.drain(response, within: .seconds(max(0.1, left)))
            if !(200..<300).contains(status ?? 0) { problem = "the receiver answered \(status ?? 0)" }
            // 410 Gone: the receiver says this endpoint is no more.
            final = status == 410
        } catch let refused as OutboundURLRefused {
            problem = refused.description
            final = refused.final
        } catch is CancellationError {
            return  // stopping: the lease runs out and the delivery is made again
        } catch let failure as Problem {
            problem = failure.text
        } catch {
            problem = Self.describe(error)
        }
        let elapsed = ContinuousClock.now - started
        let attempt = WebhookAttempt(
            number: delivery.attempts + 1, at: now, statusCode: status, error: problem,
            durationMs: Int(elapsed.components.seconds * 1_000 + elapsed.components.attoseconds / 1_000_000_000_000_000)
        )
        let schedule = config.retryScheduleSeconds
        let state: WebhookDelivery.State
        var next: Date?
        if problem == nil {
            state = .delivered
        } else if final || delivery.attempts >= schedule.count {
            state = .failed
        } else {
            state = .pending
            next = Date().addingTimeInterval(schedule[delivery.attempts])
        }
        if state != .delivered {
            logger.info(
                "webhook delivery failed",
                metadata: [
                    "generation": "\(delivery.generationID)", "delivery": "\(delivery.id)",
                    "error": "\(problem ?? "")", "then": "\(state.rawValue)",
                ])
        }
        do {
            _ = try await store.recordWebhookAttempt(
                WebhookOutcome(
                    deliveryID: delivery.id, owner: instance, attempt: attempt, body: body, state: state,
                    nextAttemptAt: next))
        } catch {
            logger.warning("cannot record a webhook attempt", metadata: ["error": "\(error)"])
        }
    }

    /// `{"type", "timestamp", "data": the job, "event": the event}`, the Standard Webhooks
    /// payload shape; made once, at the first attempt, and sent as it is ever after.
    func makeBody(_ delivery: WebhookDelivery) async throws -> String {
        if let body = delivery.body { return body }
        guard let generation = try await store.generation(id: delivery.generationID) else {
            throw OutboundURLRefused(reason: "its job \(delivery.generationID) is gone")  // final
        }
        let event = try await store.events(
            generationID: delivery.generationID, after: delivery.eventSeq - 1, limit: 1
        ).first { $0.seq == delivery.eventSeq }
        var body: [String: JSONValue] = [
            "type": .string(delivery.eventType.rawValue),
            "timestamp": .string(Timestamp.format(event?.event.at ?? delivery.createdAt)),
            "data": .object(try await render(generation)),
        ]
        if let event {
            body["event"] = try JSONValue(encoding: event.event)
        }
        return String(decoding: try JSONCoding.encode(JSONValue.object(body)), as: UTF8.self)
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout, .readTimeout, .deadlineExceeded: return "the receiver did not answer in time"
            default: return "could not reach the receiver (\(error))"
            }
        }
        return "could not reach the receiver (\(String(describing: error).prefix(200)))"
    }
}

/// The webhook sender's HTTP clients, one per receiver (host and the address it was checked at),
/// so that a busy receiver's deliveries reuse their keep-alive connections instead of connecting
/// anew each time. At most `limit` are kept; the least recently used one that no delivery is
/// using goes first, and a delivery that finds every kept client in use and the cache full gets
/// a client of its own, shut down after it.
final class WebhookClients: Sendable {
    struct Lease {
        let key: String
        let client: HTTPClient
        let kept: Bool
    }

    private struct Entry {
        var client: HTTPClient
        var users = 0
        var used: ContinuousClock.Instant
    }

    private let entries = Mutex<[String: Entry]>([:])
    private let limit: Int

    init(limit: Int = 64) { self.limit = limit }

    func take(host: String, address: IPAddress?, timeout: Double, connections: Int) -> Lease {
        let key = "\(host)|\(address?.description ?? "")"
        let (lease, evicted) = entries.withLock { entries -> (Lease?, HTTPClient?) in
            if var entry = entries[key] {
                entry.users += 1
                entry.used = .now
                entries[key] = entry
                return (Lease(key: key, client: entry.client, kept: true), nil)
            }
            var evicted: HTTPClient?
            if entries.count >= limit {
                guard let idle = entries.filter({ $0.value.users == 0 }).min(by: { $0.value.used < $1.value.used })
                else { return (nil, nil) }
                evicted = entries.removeValue(forKey: idle.key)?.client
            }
            let client = WebhookSender.makeClient(
                timeout: timeout, host: host, address: address, connections: connections)
            entries[key] = Entry(client: client, users: 1, used: .now)
            return (Lease(key: key, client: client, kept: true), evicted)
        }
        if let evicted { Task { try? await evicted.shutdown() } }
        return lease
            ?? Lease(
                key: key,
                client: WebhookSender.makeClient(
                    timeout: timeout, host: host, address: address, connections: connections),
                kept: false)
    }

    func giveBack(_ lease: Lease) {
        guard lease.kept else {
            Task { try? await lease.client.shutdown() }
            return
        }
        entries.withLock { entries in entries[lease.key]?.users -= 1 }
    }

    /// Shuts every kept client down (the sender is stopping).
    func shutdown() async {
        let clients = entries.withLock { entries -> [HTTPClient] in
            defer { entries = [:] }
            return entries.values.map(\.client)
        }
        for client in clients { try? await client.shutdown() }
    }

    /// Reads and drops up to 64 KiB of `response`'s body within `limit`; gives up quietly
    /// (cancelling the read, which closes the connection) past either.
    static func drain(_ response: HTTPClientResponse, within limit: Duration) async {
        _ = await withDeadline(limit) { _ = try await response.body.collect(upTo: 64 * 1_024) }
    }
}
