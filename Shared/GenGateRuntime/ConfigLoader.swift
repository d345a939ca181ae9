import Foundation
import GenGatePostgres
import GenGateCore
import GenGateJobs
import GenGateProviders
import GenGateStore

/// Reads the configuration: defaults, then a JSON file, then `GENGATE_*` environment variables,
/// then overrides from the command line. Unknown keys and bad values are errors that say where.
public enum ConfigLoader {
    /// Environment variables and the setting each overrides.
    public static let environmentKeys: [String: [String]] = [
        "GENGATE_DATA_DIR": ["data_dir"],
        "GENGATE_HTTP_HOST": ["http", "host"],
        "GENGATE_HTTP_PORT": ["http", "port"],
        "GENGATE_PUBLIC_URL": ["http", "public_url"],
        "GENGATE_EVENT_STREAM_KEEP_ALIVE_SECONDS": ["http", "event_stream_keep_alive_seconds"],
        "GENGATE_WEBHOOK_ALLOW_PRIVATE": ["webhooks", "allow_private"],
        "GENGATE_IMAGES_ALLOW_PRIVATE_URLS": ["images", "allow_private_urls"],
        "GENGATE_IMAGES_MAX_UPLOAD_BYTES": ["images", "max_upload_bytes"],
        "GENGATE_IMAGES_CONCURRENCY": ["images", "concurrency"],
        "GENGATE_MONITOR_PORT": ["monitor", "port"],
        "GENGATE_ALERT_WEBHOOK_URL": ["alerts", "webhook_url"],
        "GENGATE_ALERT_EMAIL_FROM": ["alerts", "email_from"],
        "GENGATE_ALERT_EMAIL_TO": ["alerts", "email_to"],
        "GENGATE_ALERT_EVALUATE_EVERY_SECONDS": ["alerts", "evaluate_every_seconds"],
        "GENGATE_ALERT_COOL_DOWN_SECONDS": ["alerts", "cool_down_seconds"],
        "GENGATE_EVENTS_PORT": ["bus", "events_port"],
        "GENGATE_EVENTS_HOST": ["bus", "events_host"],
        "GENGATE_BUS_HOST": ["bus", "host"],
        "GENGATE_BUS_PORT": ["bus", "port"],
        "GENGATE_BUS_BIND_HOST": ["bus", "bind_host"],
        "GENGATE_STORE_PATH": ["store", "path"],
        "GENGATE_STORE_URL": ["store", "url"],
        "GENGATE_STORE_POOL_SIZE": ["store", "pool_size"],
        "GENGATE_STORE_DURABILITY": ["store", "durability"],
        "GENGATE_OBJECTS_DIR": ["objects", "directory"],
        "GENGATE_S3_BUCKET": ["objects", "s3", "bucket"],
        "GENGATE_S3_ENDPOINT": ["objects", "s3", "endpoint"],
        "GENGATE_S3_REGION": ["objects", "s3", "region"],
        "GENGATE_S3_PREFIX": ["objects", "prefix"],
        "GENGATE_S3_PATH_STYLE": ["objects", "s3", "path_style"],
        "GENGATE_S3_PUBLIC_URL": ["objects", "s3", "public_url"],
        "GENGATE_S3_URL_LIFETIME_SECONDS": ["objects", "s3", "url_lifetime_seconds"],
        "GENGATE_S3_MEMORY_MIB": ["objects", "s3", "memory_mib"],
        "GENGATE_S3_URL_ENDPOINT": ["objects", "s3", "url_endpoint"],
        "GENGATE_LOG_LEVEL": ["log", "level"],
        "GENGATE_LOG_FORMAT": ["log", "format"],
        "GENGATE_LEASE_SECONDS": ["jobs", "lease_seconds"],
        "GENGATE_SWEEP_INTERVAL_SECONDS": ["jobs", "sweep_interval_seconds"],
        "GENGATE_STALE_AFTER_SECONDS": ["jobs", "stale_after_seconds"],
        "GENGATE_SILENT_AFTER_SECONDS": ["jobs", "silent_after_seconds"],
        "GENGATE_MAX_ATTEMPTS": ["jobs", "max_attempts"],
        "GENGATE_RETRY_BASE_SECONDS": ["jobs", "retry_base_seconds"],
        "GENGATE_RATE_LIMIT_BASE_SECONDS": ["jobs", "rate_limit_base_seconds"],
        "GENGATE_DRAIN_SECONDS": ["jobs", "drain_seconds"],
        "GENGATE_HEARTBEAT_SECONDS": ["bus", "heartbeat_seconds"],
        "GENGATE_SIM_LATENCY_MS": ["sim", "latency_ms"],
        "GENGATE_SIM_FAILURE_RATE": ["sim", "failure_rate"],
        "GENGATE_SIM_SUBMIT_LATENCY_MS": ["sim", "submit_latency_ms"],
        "GENGATE_SIM_LEDGER": ["sim", "ledger"],
        "GENGATE_SIM_MAX_OUTPUTS_PER_CALL": ["sim", "max_outputs_per_call"],
        "GENGATE_SIM_FINDS_BY_REFERENCE": ["sim", "finds_by_reference"],
        "GENGATE_SIM_MAX_CONCURRENCY": ["sim", "max_concurrency"],
        "GENGATE_SIM_MAX_REQUESTS_PER_SECOND": ["sim", "max_requests_per_second"],
    ].merging(
        RealProvider.all.flatMap { provider in
            ["base_url", "max_concurrency", "max_requests_per_second"].map {
                ("GENGATE_\(provider.name.uppercased())_\($0.uppercased())", ["providers", provider.name, $0])
            }
        },
        uniquingKeysWith: { first, _ in first })

    /// Loads and validates. `overrides` are key paths (`["http", "port"]`) set by flags.
    public static func load(
        file: String?, environment: [String: String] = ProcessInfo.processInfo.environment,
        overrides: [([String], JSONValue)] = []
    ) throws -> GenGateConfig {
        var tree = try JSONCoding.decode(JSONValue.self, from: encoded(GenGateConfig()))

        if let file = file ?? environment["GENGATE_CONFIG"], !file.isEmpty {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ConfigError("cannot read configuration file \(file)")
            }
            let fileTree: JSONValue
            do {
                fileTree = try JSONCoding.decode(JSONValue.self, from: data)
            } catch {
                throw ConfigError("configuration file \(file) is not valid JSON: \(error)")
            }
            tree = try merge(fileTree, into: tree, path: [], origin: file)
        }
        for (name, path) in environmentKeys.sorted(by: { $0.key < $1.key }) {
            guard let text = environment[name] else { continue }
            // A numeric setting without a default has no value to take its type from.
            let like = value(at: path, in: tree) ?? (Self.numericOptionals.contains(path.last ?? "") ? .number(0) : nil)
            tree = try set(path, to: try parse(text, like: like, name: name), in: tree)
        }
        for (path, value) in overrides {
            tree = try set(path, to: value, in: tree)
        }
        let decoder = JSONCoding.decoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let config: GenGateConfig
        do {
            config = try decoder.decode(GenGateConfig.self, from: JSONCoding.encode(tree))
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.dataCorrupted(context) {
            throw ConfigError(
                "setting \(context.codingPath.map(\.stringValue).joined(separator: ".")) has the wrong type")
        }
        try validate(config)
        return config
    }

    /// `config` in the file format (snake_case keys, pretty-printed).
    public static func encoded(_ config: GenGateConfig) throws -> Data {
        let encoder = JSONCoding.encoder(pretty: true)
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return try encoder.encode(config)
    }

    static func validate(_ alerts: GenGateConfig.Alerts) throws {
        guard (1...3_600).contains(alerts.evaluateEverySeconds) else {
            throw ConfigError("alerts.evaluate_every_seconds must be between 1 and 3600")
        }
        guard alerts.coolDownSeconds >= 0 else { throw ConfigError("alerts.cool_down_seconds must not be negative") }
        for (name, rule) in [("failure_rate", alerts.failureRate), ("timeout_rate", alerts.timeoutRate)] {
            guard rule.threshold >= 0 && rule.threshold < 1 else {
                throw ConfigError(
                    "alerts.\(name).threshold must be a share from 0 up to (not including) 1, got \(rule.threshold)")
            }
            // The rules read every attempt of their windows at each evaluation: a day at most.
            guard (60...86_400).contains(rule.windowSeconds) else {
                throw ConfigError("alerts.\(name).window_seconds must be between 60 and 86400")
            }
            // One as long as the window (or longer) is no second window.
            guard rule.shortWindowSeconds == 0 || rule.shortWindowSeconds >= 60 else {
                throw ConfigError("alerts.\(name).short_window_seconds must be 0 (none) or at least 60")
            }
            guard rule.minimumAttempts >= 1 else {
                throw ConfigError("alerts.\(name).minimum_attempts must be at least 1")
            }
        }
        guard alerts.maxRetries >= 0 else { throw ConfigError("alerts.max_retries must not be negative") }
        guard (60...86_400).contains(alerts.retryWindowSeconds) else {
            throw ConfigError("alerts.retry_window_seconds must be between 60 and 86400")
        }
        let rules = AlertRule.allCases.map(\.rawValue)
        if let unknown = alerts.disabledRules.first(where: { !rules.contains($0) }) {
            throw ConfigError("alerts.disabled_rules: no rule \(unknown); rules: \(rules.joined(separator: ", "))")
        }
        // The operator's own channel: any address, loopback and private ones included.
        if let url = alerts.webhookUrl, let problem = OutboundURLPolicy(allowPrivate: true).problem(with: url) {
            throw ConfigError("alerts.webhook_url (GENGATE_ALERT_WEBHOOK_URL) \(problem)")
        }
        guard (1...300).contains(alerts.deliveryTimeoutSeconds) else {
            throw ConfigError("alerts.delivery_timeout_seconds must be between 1 and 300")
        }
        guard (1...86_400).contains(alerts.deliveryGiveUpSeconds) else {
            throw ConfigError("alerts.delivery_give_up_seconds must be between 1 and 86400")
        }
    }

    static func validate(_ config: GenGateConfig) throws {
        func port(_ value: Int, _ name: String) throws {
            guard (1...65_535).contains(value) else {
                throw ConfigError("\(name) must be a port in 1...65535, got \(value)")
            }
        }
        try port(config.http.port, "http.port")
        try port(config.monitor.port, "monitor.port")
        try port(config.bus.eventsPort, "bus.events_port")
        guard !config.dataDir.isEmpty else { throw ConfigError("data_dir must not be empty") }
        try validate(config.alerts)
        guard !config.monitor.expectedServices.isEmpty,
            config.monitor.expectedServices.allSatisfy({ !$0.isEmpty && $0.count <= 64 })
        else {
            throw ConfigError("monitor.expected_services must list services by name")
        }
        guard (0...1).contains(config.sim.failureRate) else {
            throw ConfigError("sim.failure_rate must be between 0 and 1, got \(config.sim.failureRate)")
        }
        guard config.sim.latencyMs >= 0 else { throw ConfigError("sim.latency_ms must not be negative") }
        if let url = config.store.url {
            if PostgresSettings.isPostgresURL(url) {
                do {
                    _ = try PostgresSettings.parse(url)
                } catch {
                    throw ConfigError("store.url (GENGATE_STORE_URL): \(error)")
                }
            } else if !url.hasPrefix("sqlite:") || url.count == "sqlite:".count {
                throw ConfigError(
                    "store.url (GENGATE_STORE_URL) must be sqlite:PATH or postgres://user:password@host:5432/database")
            }
        }
        guard (1...200).contains(config.store.poolSize) else {
            throw ConfigError("store.pool_size must be between 1 and 200, got \(config.store.poolSize)")
        }
        guard ["full", "normal"].contains(config.store.durability) else {
            throw ConfigError("store.durability must be full or normal, got \(config.store.durability)")
        }
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(config.log.level) else {
            throw ConfigError("log.level must be one of trace, debug, info, notice, warning, error, critical")
        }
        guard ["human", "json"].contains(config.log.format) else {
            throw ConfigError("log.format must be human or json")
        }
        let jobs = config.jobs
        guard jobs.leaseSeconds >= 0.5, jobs.sweepIntervalSeconds > 0, jobs.staleAfterSeconds >= 0,
            jobs.maxAttempts >= 1,
            jobs.retryBaseSeconds >= 0, jobs.retryMaxSeconds >= jobs.retryBaseSeconds, jobs.concurrency >= 1,
            jobs.checkConcurrency >= 1, jobs.checkBatch >= 1, jobs.maxCheckFailures >= 1, jobs.maxHandlerFailures >= 1,
            jobs.drainSeconds >= 0, jobs.defaultDeadlineSeconds >= 1,
            jobs.maxDeadlineSeconds >= jobs.defaultDeadlineSeconds
        else {
            throw ConfigError(
                "jobs settings out of range (lease_seconds ≥ 0.5, max_attempts ≥ 1, retry_max ≥ retry_base, concurrency, check_concurrency, check_batch, max_check_failures and max_handler_failures ≥ 1, drain_seconds ≥ 0, deadlines ≥ 1)"
            )
        }
        for (model, seconds) in jobs.modelDeadlineSeconds.sorted(by: { $0.key < $1.key })
        where !(10...jobs.maxDeadlineSeconds).contains(seconds) {
            throw ConfigError(
                "jobs.model_deadline_seconds.\(model) must be 10…\(jobs.maxDeadlineSeconds) (jobs.max_deadline_seconds), got \(seconds)"
            )
        }
        // Aliases name models some provider serves (configured here or not), of one kind.
        let everyModel = ProviderRegistry(
            adapters: [],
            unavailable: [.init(provider: "sim", models: SimProvider.catalogue, missing: "")]
                + RealProvider.all.map {
                    .init(provider: $0.name, models: $0.models(config.providers[keyPath: $0.connection]), missing: "")
                },
            aliases: config.modelAliases)
        let problems = everyModel.aliasProblems()
        guard problems.isEmpty else { throw ConfigError(problems.joined(separator: "; ")) }
        guard (0...100_000).contains(config.sim.maxConcurrency ?? 0),
            (0...100_000).contains(config.sim.maxRequestsPerSecond ?? 0)
        else {
            throw ConfigError("sim.max_concurrency and sim.max_requests_per_second must be 0…100000 (0: no limit)")
        }
        guard jobs.circuitThreshold >= 1, (1...3_600).contains(jobs.circuitCoolDownSeconds) else {
            throw ConfigError("jobs.circuit_threshold must be ≥ 1 and jobs.circuit_cool_down_seconds 1…3600")
        }
        let known = Set(["sim"] + RealProvider.all.map(\.name))
        for (provider, settings) in [("jobs", nil)]
            + jobs.providerRetry.sorted(by: { $0.key < $1.key }).map({ ($0, $1) })
        {
            let name = settings == nil ? "jobs" : "jobs.provider_retry.\(provider)"
            if settings != nil, !known.contains(provider) {
                throw ConfigError("\(name): no provider \(provider); known: \(known.sorted().joined(separator: ", "))")
            }
            let policy = config.retry(settings)
            guard policy.maxAttempts >= 1, policy.baseSeconds >= 0, policy.maxSeconds >= policy.baseSeconds,
                policy.rateLimitBaseSeconds >= 1, policy.maxSeconds <= 86_400, policy.rateLimitBaseSeconds <= 3_600
            else {
                throw ConfigError(
                    "\(name): max_attempts ≥ 1, 0 ≤ retry_base_seconds ≤ retry_max_seconds ≤ 86400, 1 ≤ rate_limit_base_seconds ≤ 3600"
                )
            }
        }
        let providers = config.providers
        for (name, connection) in RealProvider.all.map({ ($0.name, providers[keyPath: $0.connection]) }) {
            if let base = connection.baseUrl {
                guard base.hasPrefix("http://") || base.hasPrefix("https://"), let url = URL(string: base),
                    let host = url.host, !host.isEmpty, url.user == nil, url.password == nil
                else {
                    throw ConfigError(
                        "providers.\(name).base_url must be an http:// or https:// URL with a host and no credentials")
                }
            }
            guard (0.001...3_600).contains(connection.connectTimeoutSeconds),
                (0.001...3_600).contains(connection.requestTimeoutSeconds),
                (1...1_024).contains(connection.maxConnections),
                (0...100_000).contains(connection.maxConcurrency ?? 0),
                (0...100_000).contains(connection.maxRequestsPerSecond ?? 0)
            else {
                throw ConfigError(
                    "providers.\(name): connect_timeout_seconds and request_timeout_seconds must be 0.001…3600, max_connections 1…1024, max_concurrency and max_requests_per_second 0…100000 (0: no limit)"
                )
            }
            if let models = connection.models {
                guard !models.isEmpty else {
                    throw ConfigError("providers.\(name).models lists no model (leave it out for the defaults)")
                }
                let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_.:/"))
                var seen: Set<String> = []
                for model in models {
                    let rest = model.id.dropFirst(name.count + 1)
                    guard model.id.hasPrefix("\(name)/"), !rest.isEmpty, !rest.hasPrefix("/"),
                        rest.unicodeScalars.allSatisfy({ $0.isASCII && allowed.contains($0) })
                    else {
                        throw ConfigError(
                            "providers.\(name).models: \(model.id) must be \(name)/<model> (letters, digits, - _ . : /)"
                        )
                    }
                    guard seen.insert(model.id).inserted else {
                        throw ConfigError("providers.\(name).models: \(model.id) is listed twice")
                    }
                    guard (1...100).contains(model.maxOutputs ?? 1), (model.maxOutputsPerCall ?? 1) >= 1 else {
                        throw ConfigError(
                            "providers.\(name).models: \(model.id): max_outputs must be 1…100, max_outputs_per_call ≥ 1"
                        )
                    }
                }
            }
        }
        guard jobs.silentAfterSeconds >= 2 * config.bus.heartbeatSeconds else {
            throw ConfigError(
                "jobs.silent_after_seconds (\(jobs.silentAfterSeconds)) must be at least twice bus.heartbeat_seconds (\(config.bus.heartbeatSeconds)), or a live process would be taken for gone"
            )
        }
        let schedules =
            [
                ("image", jobs.checkSchedules.image), ("video", jobs.checkSchedules.video),
                ("text", jobs.checkSchedules.text),
            ]
            .map { ("jobs.check_schedules.\($0.0)", $0.1) }
            + jobs.modelCheckSchedules.sorted { $0.key < $1.key }.map {
                ("jobs.model_check_schedules.\($0.key)", $0.value)
            }
        for (name, schedule) in schedules {
            if let problem = schedule.problem(named: name) { throw ConfigError(problem) }
        }
        guard config.sim.submitLatencyMs >= 0 else { throw ConfigError("sim.submit_latency_ms must not be negative") }
        guard config.store.eventRetentionDays * 86_400 > Double(config.jobs.maxDeadlineSeconds) else {
            throw ConfigError(
                "store.event_retention_days must be longer than jobs.max_deadline_seconds, so only events of ended jobs expire"
            )
        }
        let prefixParts = config.objects.prefix.split(separator: "/", omittingEmptySubsequences: true)
        guard !prefixParts.contains(where: { $0.hasPrefix(".") }) else {
            throw ConfigError("objects.prefix must not have parts starting with \".\", got \(config.objects.prefix)")
        }
        let s3 = config.objects.s3
        guard (1...604_800).contains(s3.urlLifetimeSeconds), (5...5_120).contains(s3.partSizeMib),
            (1...3_600).contains(s3.requestTimeoutSeconds), (5...1_048_576).contains(s3.memoryMib)
        else {
            throw ConfigError(
                "objects.s3: url_lifetime_seconds must be 1–604800 (7 days, S3's limit), part_size_mib 5–5120, request_timeout_seconds 1–3600, memory_mib 5–1048576"
            )
        }
        if s3.bucket != nil, s3.region.isEmpty { throw ConfigError("objects.s3.region must not be empty") }
        guard config.http.idempotencyWindowSeconds >= 60 else {
            throw ConfigError("http.idempotency_window_seconds must be at least 60")
        }
        guard (1...3_600).contains(config.openai.waitSeconds), config.openai.linkLifetimeSeconds >= 60 else {
            throw ConfigError("openai.wait_seconds must be 1–3600 and openai.link_lifetime_seconds at least 60")
        }
        let batches = config.batches
        guard batches.maxRequests >= 1, batches.maxBodyBytes >= 1_024, batches.maxConcurrency >= 1,
            (1...batches.maxConcurrency).contains(batches.defaultMaxConcurrency)
        else {
            throw ConfigError(
                "batches: max_requests and max_concurrency must be at least 1, max_body_bytes at least 1024, default_max_concurrency from 1 to max_concurrency"
            )
        }
        for (model, price) in config.pricing.models.sorted(by: { $0.key < $1.key }) {
            if let problem = price.problem { throw ConfigError("pricing.models.\(model) \(problem)") }
        }
        guard !config.pricing.currency.isEmpty, config.pricing.currency.count <= 8 else {
            throw ConfigError("pricing.currency must be a short label such as USD")
        }
        let images = config.images
        guard (1...7).contains(images.keepDays) else {
            throw ConfigError("images.keep_days must be from 1 to 7, got \(images.keepDays)")
        }
        guard images.maxUploadBytes >= 1_024, (1_024...(32 << 20)).contains(images.maxDataUrlBytes),
            images.maxPixels >= 1_000_000, (1...64).contains(images.concurrency),
            (1...600).contains(images.fetchTimeoutSeconds), (60...604_800).contains(images.linkLifetimeSeconds)
        else {
            throw ConfigError(
                "images: max_upload_bytes must be at least 1024, max_data_url_bytes 1024 to 32 MiB, max_pixels at least 1000000, concurrency 1–64, fetch_timeout_seconds 1–600, link_lifetime_seconds 60–604800"
            )
        }
        let webhooks = config.webhooks
        guard webhooks.retryScheduleSeconds.count <= 20, webhooks.retryScheduleSeconds.allSatisfy({ $0 >= 0.1 })
        else {
            throw ConfigError("webhooks.retry_schedule_seconds must be at most 20 delays of at least 0.1 s")
        }
        guard (1...120).contains(webhooks.timeoutSeconds), (1...256).contains(webhooks.concurrency),
            webhooks.rotationGraceSeconds >= 0
        else {
            throw ConfigError(
                "webhooks: timeout_seconds must be 1–120, concurrency 1–256, rotation_grace_seconds not negative")
        }
        guard (1...300).contains(config.http.eventStreamKeepAliveSeconds) else {
            throw ConfigError("http.event_stream_keep_alive_seconds must be from 1 to 300")
        }
        guard !config.sim.findsByReference || config.sim.ledger != nil else {
            throw ConfigError("sim.finds_by_reference needs sim.ledger, where the sim keeps its submissions")
        }
        guard (1...10).contains(config.sim.maxOutputsPerCall) else {
            throw ConfigError("sim.max_outputs_per_call must be 1 to 10")
        }
        guard config.bus.heartbeatSeconds >= 0.1 else {
            throw ConfigError("bus.heartbeat_seconds must be at least 0.1 (each beat is a store write)")
        }
        guard (1...65_528).contains(config.bus.port) else {
            throw ConfigError("bus.port must be 1–65528 (the bus takes it and the 7 ports after it)")
        }
        if let host = config.bus.host, host.isEmpty || host.contains("/") || host.contains(" ") {
            throw ConfigError("bus.host must be a host name or address, got \"\(host)\"")
        }
        let knownEndpoints = Set(BusTopology.endpointNames)
        for name in config.bus.endpoints.keys where !knownEndpoints.contains(name) {
            throw ConfigError(
                "bus.endpoints.\(name) is not a bus endpoint (known: \(BusTopology.endpointNames.joined(separator: ", ")))"
            )
        }
    }

    /// Numeric settings without a default value.
    static let numericOptionals: Set<String> = ["max_concurrency", "max_requests_per_second"]

    /// Settings without a default value (absent from the encoded defaults).
    static let optionalSettings: Set<String> = Set(
        [
            "http.public_url", "store.url", "store.path", "objects.directory", "objects.s3.bucket",
            "objects.s3.endpoint",
            "objects.s3.public_url", "objects.s3.url_endpoint", "bus.host", "sim.ledger", "sim.max_concurrency",
            "sim.max_requests_per_second", "alerts.webhook_url", "alerts.email_from", "alerts.email_to",
        ]
            + RealProvider.all.flatMap { provider in
                ["base_url", "models", "max_concurrency", "max_requests_per_second"].map {
                    "providers.\(provider.name).\($0)"
                }
            })

    /// Overlays `file` onto the defaults; keys the defaults lack are refused, except inside
    /// free-form maps (whose default is an empty object).
    static func merge(_ file: JSONValue, into base: JSONValue, path: [String], origin: String) throws -> JSONValue {
        guard case .object(let fileObject) = file else {
            return file
        }
        guard case .object(var baseObject) = base else {
            throw ConfigError("\(origin): \(path.joined(separator: ".")) must not be an object")
        }
        let freeForm = baseObject.isEmpty && !path.isEmpty
        for (key, value) in fileObject {
            guard let existing = baseObject[key] else {
                if freeForm || optionalSettings.contains((path + [key]).joined(separator: ".")) {
                    baseObject[key] = value
                    continue
                }
                throw ConfigError("\(origin): unknown setting \((path + [key]).joined(separator: "."))")
            }
            baseObject[key] = try merge(value, into: existing, path: path + [key], origin: origin)
        }
        return .object(baseObject)
    }

    static func value(at path: [String], in tree: JSONValue) -> JSONValue? {
        var node: JSONValue? = tree
        for key in path { node = node?[key] }
        return node
    }

    static func set(_ path: [String], to value: JSONValue, in tree: JSONValue) throws -> JSONValue {
        guard let key = path.first else { return value }
        guard case .object(var object) = tree else { throw ConfigError("cannot set \(path.joined(separator: "."))") }
        object[key] = try set(Array(path.dropFirst()), to: value, in: object[key] ?? .object([:]))
        return .object(object)
    }

    /// Environment values are text; numbers and booleans are read as such where the setting is one.
    static func parse(_ text: String, like current: JSONValue?, name: String) throws -> JSONValue {
        switch current {
        case .number:
            guard let number = Double(text.trimmingCharacters(in: .whitespaces)) else {
                throw ConfigError("\(name) must be a number, got \"\(text)\"")
            }
            return .number(number)
        case .bool:
            switch text.lowercased() {
            case "1", "true", "yes": return .bool(true)
            case "0", "false", "no": return .bool(false)
            default: throw ConfigError("\(name) must be true or false, got \"\(text)\"")
            }
        default:
            return .string(text)
        }
    }
}

/// A configuration problem, said in terms of the setting at fault.
public struct ConfigError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
