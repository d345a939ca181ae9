import Foundation
import GenGateCore
import GenGateMonitoring
import GenGateObjects
import GenGateStore
import HTTPTypes
import Hummingbird

/// `GET /health/detailed`: the store, object storage, each service by heartbeat and each
/// provider by its recent calls, as `healthy`, `degraded` or `unhealthy`. Built at most once
/// every `ttl` however many ask (probes and dashboards cost nothing); a check that does not
/// answer within `checkTimeout` counts as down.
actor DetailedHealth {
    let store: any GenerationStore
    let objects: any ObjectStore
    let services: ServiceTable
    let state: MonitorState
    let startedAt = Date()
    let ttl: Duration
    let checkTimeout: Duration
    /// Providers are judged on this window of calls.
    static let providerWindow: TimeInterval = 900

    private var cached: (at: ContinuousClock.Instant, report: Report)?
    private var building: Task<Report, Never>?

    struct Report: Sendable {
        var status: String
        var json: [String: JSONValue]
        /// The store's figures, for the dashboard: jobs by status (nil if it could not be read).
        var active: [GenerationStatus: Int]?
    }

    init(
        store: any GenerationStore, objects: any ObjectStore, services: ServiceTable, state: MonitorState,
        ttl: Duration = .seconds(2), checkTimeout: Duration = .seconds(3)
    ) {
        self.store = store
        self.objects = objects
        self.services = services
        self.state = state
        self.ttl = ttl
        self.checkTimeout = checkTimeout
    }

    func report() async -> Report {
        if let cached, ContinuousClock.now - cached.at < ttl { return cached.report }
        if let building { return await building.value }
        let task = Task { await self.build() }
        building = task
        let report = await task.value
        cached = (.now, report)
        building = nil
        return report
    }

    static func milliseconds(_ duration: Duration) -> Double {
        (duration.inSeconds * 1_000).rounded()
    }

    func build() async -> Report {
        let now = Date()
        var components: [String: JSONValue] = [:]
        var unhealthy = false
        var degraded = false

        // The store: a read of jobs by status (also the queue depths).
        let store = self.store
        var started = ContinuousClock.now
        let counts = await withDeadline(checkTimeout) { try await store.activeCounts() }
        var active: [GenerationStatus: Int]?
        switch counts {
        case .success(let value):
            active = value
            components["store"] = .object([
                "status": .string("up"), "response_ms": .number(Self.milliseconds(.now - started)),
                "last_check": .string(Timestamp.format(now)),
            ])
        case .failure(let error):
            unhealthy = true
            components["store"] = .object([
                "status": .string("down"), "message": .string(String(describing: error)),
                "last_check": .string(Timestamp.format(now)),
            ])
        }

        let objects = self.objects
        started = ContinuousClock.now
        let check = await withDeadline(checkTimeout) { await objects.check() }
        let objectStatus: (String, String?) =
            switch check {
            case .success(.ok): ("up", nil)
            case .success(.refused(let problem)), .success(.unreachable(let problem)): ("down", problem)
            case .failure(let error): ("down", String(describing: error))
            }
        if objectStatus.0 != "up" { unhealthy = true }
        components["objects"] = .object(
            [
                "status": .string(objectStatus.0), "response_ms": .number(Self.milliseconds(.now - started)),
                "last_check": .string(Timestamp.format(now)),
            ].merging(objectStatus.1.map { ["message": JSONValue.string($0)] } ?? [:]) { $1 })

        let (allServicesUp, serviceStatuses) = await services.statuses()
        if !allServicesUp { degraded = true }
        components["services"] = .object(serviceStatuses)

        var providers: [String: JSONValue] = [:]
        for provider in Self.providerSummaries(await state.figures(now: now, window: Self.providerWindow)) {
            if provider.status != "up" { degraded = true }
            providers[provider.name] = .object(provider.json)
        }
        components["providers"] = .object(providers)

        let status = unhealthy ? "unhealthy" : (degraded ? "degraded" : "healthy")
        var json: [String: JSONValue] = [
            "status": .string(status), "timestamp": .string(Timestamp.format(now)),
            "uptime_seconds": .number(now.timeIntervalSince(startedAt).rounded()),
            "components": .object(components),
            "events_missed_last_hour": .object(await state.missed(now: now).mapValues { .number(Double($0)) }),
        ]
        if let active {
            json["queues"] = .object(
                Dictionary(uniqueKeysWithValues: active.map { ($0.key.rawValue, JSONValue.number(Double($0.value))) }))
        }
        if case .success(let open) = await withDeadline(checkTimeout, { try await store.openAlertCounts() }) {
            json["open_alerts"] = .object(open.mapValues { .number(Double($0)) })
        }
        return Report(status: status, json: json, active: active)
    }

    /// A provider as health and the dashboard show it.
    struct ProviderSummary {
        var name: String
        var figures: WindowFigures
        /// `up`, `degraded` (over a tenth of its calls failed) or `down` (over half), once it
        /// made five calls in the window; calls refused for what the request asked do not count.
        var status: String {
            guard figures.calls >= 5, let rate = figures.providerFailureRate else { return "up" }
            return rate > 0.5 ? "down" : (rate > 0.1 ? "degraded" : "up")
        }

        var json: [String: JSONValue] {
            var json: [String: JSONValue] = [
                "status": .string(status), "calls": .number(Double(figures.calls)),
                "failed_calls": .number(Double(figures.callErrors)),
                "failure_rate": figures.providerFailureRate.map { .number(($0 * 1_000).rounded() / 1_000) } ?? .null,
                "timeouts": .number(Double(figures.timeouts)), "retries": .number(Double(figures.retries)),
                "jobs_completed": .number(Double(figures.completed)), "jobs_failed": .number(Double(figures.failed)),
                "window_seconds": .number(DetailedHealth.providerWindow),
            ]
            for (name, quantile) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
                json["latency_\(name)_ms"] = figures.latency.percentile(quantile).map { .number($0.rounded()) } ?? .null
            }
            if let common = figures.mostCommonError { json["most_common_error"] = .string(common) }
            return json
        }
    }

    /// Each provider's figures (its models together).
    static func providerSummaries(_ figures: [ProviderFigures]) -> [ProviderSummary] {
        var byProvider: [String: WindowFigures] = [:]
        for entry in figures { byProvider[entry.provider, default: WindowFigures()].add(entry.figures) }
        return byProvider.keys.sorted().map { ProviderSummary(name: $0, figures: byProvider[$0]!) }
    }
}

/// Admin requests to the monitor: `Authorization: Bearer <admin key>`, or HTTP Basic with the
/// admin key as the password (what a browser can send, for the dashboard). Keys found are kept
/// by hash for a minute (and, while the store cannot be reached, for 15 minutes: the dashboard
/// and detailed health are most needed then; a key revoked meanwhile works that long); at most
/// four look-ups run at once, so a flood of guesses cannot take the store's connections from the
/// alert rules.
final class AdminGate: Sendable {
    let store: any GenerationStore
    let known = Locked<[String: (key: APIKey, checked: ContinuousClock.Instant)]>([:])
    let lookups = Locked(0)
    static let fresh: Duration = .seconds(60)
    static let outage: Duration = .seconds(900)
    static let concurrentLookups = 4

    init(store: any GenerationStore) {
        self.store = store
    }

    enum Refusal: Error, Equatable {
        case noCredentials, notAdmin, unavailable, busy, crossSite
    }

    /// The secret a request carries, and whether it came by Basic (what a browser remembers).
    static func credentials(_ request: Request) -> (secret: String, basic: Bool)? {
        guard let header = request.headers[.authorization] else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2 else { return nil }
        let value = parts[1].trimmingCharacters(in: .whitespaces)
        switch parts[0].lowercased() {
        case "bearer":
            return value.isEmpty ? nil : (value, false)
        case "basic":
            guard let decoded = Data(base64Encoded: value), let text = String(data: decoded, encoding: .utf8),
                let colon = text.firstIndex(of: ":")
            else { return nil }
            let secret = String(text[text.index(after: colon)...])
            return secret.isEmpty ? nil : (secret, true)
        default:
            return nil
        }
    }

    func admin(_ request: Request) async -> Result<APIKey, Refusal> {
        guard let (secret, _) = Self.credentials(request) else { return .failure(.noCredentials) }
        let hash = Digest.sha256Hex(secret)
        let cached = known.withLock { $0[hash] }
        if let cached, ContinuousClock.now - cached.checked < Self.fresh { return .success(cached.key) }
        /// A key checked within the outage allowance, when the store cannot say now.
        func fallback(_ refusal: Refusal) -> Result<APIKey, Refusal> {
            if let cached, ContinuousClock.now - cached.checked < Self.outage { return .success(cached.key) }
            return .failure(refusal)
        }
        let admitted = lookups.withLock { count -> Bool in
            guard count < Self.concurrentLookups else { return false }
            count += 1
            return true
        }
        guard admitted else { return fallback(.busy) }
        let store = self.store
        let lookups = self.lookups
        // The slot is freed when the look-up ends, not when its deadline passes: a slow store is
        // not sent more look-ups than the limit.
        let found = await withDeadline(.seconds(3)) {
            defer { lookups.withLock { $0 -= 1 } }
            return try await store.apiKey(secret: secret)
        }
        switch found {
        case .success(let key):
            guard let key, key.isAdmin else {
                known.withLock { $0[hash] = nil }
                return .failure(.notAdmin)
            }
            known.withLock { known in
                if known.count > 1_000 { known.removeAll() }
                known[hash] = (key, .now)
            }
            return .success(key)
        case .failure(let error) where error is DeadlinePassed || StoreError.isUnavailable(error):
            return fallback(.unavailable)
        case .failure:
            return .failure(.unavailable)
        }
    }

    /// A post a browser may have made for another site's page, with the Basic credentials it
    /// remembers for this one: refused unless `Origin` names this host (browsers send it with
    /// every form post) or `Sec-Fetch-Site` says same-origin. A post with a Bearer key (a script
    /// holding it) is no browser's, and passes.
    static func isSameOrigin(_ request: Request) -> Bool {
        if let origin = request.headers[.origin] {
            guard let host = request.head.authority, let url = URL(string: origin), let originHost = url.host
            else { return false }
            func normal(_ authority: String) -> String {
                authority.lowercased().replacingOccurrences(of: "[", with: "").replacingOccurrences(of: "]", with: "")
            }
            let originAuthority = url.port.map { "\(originHost):\($0)" } ?? originHost
            return normal(originAuthority) == normal(host)
        }
        if let site = request.headers[HTTPField.Name("Sec-Fetch-Site")!] { return site == "same-origin" }
        return credentials(request)?.basic == false
    }

    /// The answer to a refused request: a browser is asked for the key (Basic), a client told
    /// why, in GenGate's error form.
    static func answer(_ refusal: Refusal) -> Response {
        let (status, code, message): (HTTPResponse.Status, ErrorCode, String) =
            switch refusal {
            case .noCredentials:
                (
                    .unauthorized, .unauthorized,
                    "an admin key is needed: Authorization: Bearer <key>, or Basic with the key as password"
                )
            case .notAdmin: (.forbidden, .forbidden, "this needs an admin key")
            case .crossSite: (.forbidden, .forbidden, "refused: a post that did not come from this monitor's own page")
            case .unavailable: (.serviceUnavailable, .unavailable, "the store is unavailable; try again")
            case .busy: (.serviceUnavailable, .unavailable, "too many key checks at once; try again")
            }
        let body: JSONValue = .object([
            "error": .object([
                "code": .string(code.rawValue), "message": .string(message), "retryable": .bool(code.isRetryable),
            ])
        ])
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"]
        if refusal == .noCredentials { headers[.wwwAuthenticate] = #"Basic realm="GenGate monitor", charset="UTF-8""# }
        return Response(
            status: status, headers: headers,
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: (try? JSONCoding.encode(body)) ?? Data())))
    }
}
