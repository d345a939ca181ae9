import Foundation
import GenGateCore
import GenGateProviders
import GenGateJobs

/// Every setting of a GenGate deployment, as one typed value: read once at start (defaults, then
/// the file, then the environment, then command-line flags), validated, then passed down.
/// Nothing deeper reads the environment. Provider secrets never live here.
public struct GenGateConfig: Codable, Sendable, Equatable {
    public var dataDir: String = ".gengate"
    public var http = HTTP()
    public var monitor = Monitor()
    public var alerts = Alerts()
    public var bus = Bus()
    public var store = Store()
    public var objects = Objects()
    public var log = Log()
    public var jobs = Jobs()
    public var sim = Sim()
    public var webhooks = Webhooks()
    public var batches = Batches()
    public var openai = OpenAI()
    public var images = Images()
    public var pricing = Pricing()
    /// How each real provider is reached. Credentials are never here: they come from the
    /// environment, under the names the providers' own SDKs use (see `ProviderCredentials`).
    public var providers = Providers()
    /// Fallback aliases: a name clients use as a model, for models tried in this order
    /// (`"image-default": ["flux/flux-pro-1.1", "replicate/black-forest-labs/flux-1.1-pro"]`).
    public var modelAliases: [String: [String]] = [:]

    public init() {}

    public struct HTTP: Codable, Sendable, Equatable {
        public var host = "127.0.0.1"
        public var port = 8080
        /// The base of output URLs handed to clients; default `http://<host>:<port>`.
        public var publicUrl: String?
        /// Largest request body accepted; larger ones get 413.
        public var maxBodyBytes = 1_048_576
        /// How long an `Idempotency-Key` is remembered (per API key).
        public var idempotencyWindowSeconds = 86_400.0
        /// A server-sent event stream with nothing to say sends a comment this often, so that
        /// proxies and load balancers do not close it as idle.
        public var eventStreamKeepAliveSeconds = 15.0
    }

    /// The OpenAI-compatible endpoints (`/v1/images/generations`, `/v1/chat/completions`).
    public struct OpenAI: Codable, Sendable, Equatable {
        /// How long such a call waits for its job before answering 504 (the job goes on); below
        /// the OpenAI SDKs' own 600 s, so they hear the answer before they give up and retry.
        public var waitSeconds = 540
        /// How long the image links they hand out (`url`) work.
        public var linkLifetimeSeconds = 3_600.0
    }

    /// What models cost: `models` maps a model id to its price (`per_image`, `per_video_second`,
    /// `per_megapixel`, `per_1k_input_tokens`, `per_1k_output_tokens`, `per_call`); models not
    /// named use GenGate's shipped defaults (list prices when written), shown as defaults.
    public struct Pricing: Codable, Sendable, Equatable {
        /// The currency prices (and budgets) are in; a label, nothing is converted.
        public var currency = "USD"
        public var models: [String: Price] = [:]

        public var table: PriceTable { PriceTable(currency: currency, configured: models) }
    }

    /// Input images: uploads, fetching, preprocessing (libvips) and how long their files are kept.
    public struct Images: Codable, Sendable, Equatable {
        /// Largest upload (`POST /v1/uploads`) and largest image fetched from a URL; beyond it, 413
        /// (or, fetching, an `invalid_image` failure).
        public var maxUploadBytes = 50 << 20
        /// Largest image given inline as a `data:` URL (its decoded bytes); the request body may
        /// grow by as much (base64 is 4/3 of it) beyond `http.max_body_bytes`.
        public var maxDataUrlBytes = 10 << 20
        /// Most pixels an input may have, checked from its header before decoding. Formats
        /// decoded whole (interlaced PNG, progressive JPEG, WebP) take about 4 bytes a pixel while
        /// checked, so this bounds a check's memory too.
        public var maxPixels = 50_000_000
        /// Days uploads, fetched and preprocessed images are kept (1–7).
        public var keepDays = 2
        /// Images decoded at once by one process (each on a thread of its own); their memory
        /// is what this bounds.
        public var concurrency = 2
        /// How long fetching one image from its URL may take.
        public var fetchTimeoutSeconds = 30.0
        /// Loopback, private and link-local image URLs allowed (tests, private networks); as
        /// for webhooks, refused otherwise at submission and after DNS resolution at the fetch.
        public var allowPrivateUrls = false
        /// How long a signed GenGate link to a preprocessed image works (local storage hands
        /// providers these when they take URLs).
        public var linkLifetimeSeconds = 3_600.0
    }

    /// Batches (`POST /v1/batches`).
    public struct Batches: Codable, Sendable, Equatable {
        /// The most requests in one batch.
        public var maxRequests = 10_000
        /// Largest batch body accepted (the requests together); larger ones get 413.
        public var maxBodyBytes = 32 << 20
        /// How many of a batch's jobs run at once when it does not say (`max_concurrency`).
        public var defaultMaxConcurrency = 100
        /// The most a batch may ask for.
        public var maxConcurrency = 1_000
    }

    /// Webhooks to applications (`webhook` on a submission).
    public struct Webhooks: Codable, Sendable, Equatable {
        /// Loopback, private and link-local targets allowed (for tests and private networks);
        /// otherwise refused at submission and again after DNS resolution at each delivery.
        public var allowPrivate = false
        /// Seconds before each retry of a delivery the receiver did not accept (a 2xx): the
        /// Standard Webhooks schedule, eight attempts over about 27 hours.
        public var retryScheduleSeconds: [Double] = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
        /// How long a receiver has to answer one delivery.
        public var timeoutSeconds = 10.0
        /// Deliveries one api-ingress process sends at once.
        public var concurrency = 64
        /// After a rotation, how long deliveries are also signed with the previous secret.
        public var rotationGraceSeconds = 86_400.0
    }

    public struct Monitor: Codable, Sendable, Equatable {
        public var host = "127.0.0.1"
        public var port = 9464
        /// A service whose last heartbeat is older than this is reported stale.
        public var staleAfterSeconds = 10.0
        /// The services a complete deployment runs, each reported missing (and alerted) when no
        /// instance of it is heard; leave out those a deployment does not run.
        public var expectedServices = ["api-ingress", "dispatcher", "poller", "uploader", "monitor"]
    }

    /// The monitor's alert rules and where alerts go. Channels that carry a secret (the Slack
    /// URL, the SMTP URL with its password, the webhook signing secret) come from the
    /// environment only (`GENGATE_ALERT_SLACK_URL`, `GENGATE_ALERT_SMTP_URL`,
    /// `GENGATE_ALERT_WEBHOOK_SECRET`), never from this file.
    public struct Alerts: Codable, Sendable, Equatable {
        /// How often the rules are checked against the store.
        public var evaluateEverySeconds = 15.0
        /// An incident that ended and comes back within this long is the same alert again
        /// (reopened, not sent again).
        public var coolDownSeconds = 1_800.0
        /// A provider's (or one of its models') attempts that failed, of those that ended in
        /// the window (or in the short window); failures the request caused do not count.
        public var failureRate = RateRule(
            threshold: 0.5, windowSeconds: 3_600, minimumAttempts: 10, shortWindowSeconds: 300)
        /// A provider's jobs that ran past their deadline (`task_timeout`), of those that ended.
        public var timeoutRate = RateRule(threshold: 0.2, windowSeconds: 3_600, minimumAttempts: 10)
        /// A job retried more than this many times within `retry_window_seconds` raises an alert.
        public var maxRetries = 3
        public var retryWindowSeconds = 3_600.0
        /// Rules that raise nothing: `provider_failure_rate`, `task_timeout_rate`, `job_retries`,
        /// `service_down`, `store_unreachable`, `possible_double_charge`.
        public var disabledRules: [String] = []
        /// Generic webhook (JSON, signed with `GENGATE_ALERT_WEBHOOK_SECRET` when set).
        public var webhookUrl: String?
        /// The sender and the comma-separated recipients of alert email (through
        /// `GENGATE_ALERT_SMTP_URL`).
        public var emailFrom: String?
        public var emailTo: String?
        /// How long one delivery may take, and for how long a failed one is tried again (at
        /// most a minute apart).
        public var deliveryTimeoutSeconds = 10.0
        public var deliveryGiveUpSeconds = 3_600.0
    }

    /// An alert when over `threshold` (a share, 0–1) of what ended in the window failed, once at
    /// least `minimum_attempts` ended; also over `short_window_seconds` when that is set (0: not).
    public struct RateRule: Codable, Sendable, Equatable {
        public var threshold: Double
        public var windowSeconds: Double
        public var minimumAttempts: Int
        public var shortWindowSeconds: Double = 0
    }

    public struct Bus: Codable, Sendable, Equatable {
        /// The public event stream (XPUB) for outside subscribers, on 127.0.0.1.
        public var eventsHost = "127.0.0.1"
        public var eventsPort = 5560
        /// Internal endpoints, one by one; unset means `ipc://` sockets under the data dir's
        /// `run/`, or `tcp://<host>:<port + i>` when `host` is set.
        public var endpoints: [String: String] = [:]
        /// The host that runs the bus (`gengate bus`, or `gengate up` with the `bus` service), as
        /// services on other hosts reach it: setting it puts the bus on TCP, ports `port` to
        /// `port + 7`.
        public var host: String?
        public var port = 5570
        /// The address the bus binds its TCP ports on, on its own host (`*`: every interface).
        public var bindHost = "*"
        public var heartbeatSeconds = 2.0
    }

    public struct Store: Codable, Sendable, Equatable {
        /// `sqlite:PATH`, or `postgres://user:password@host:5432/database` for the PostgreSQL
        /// store that services on several hosts share; default the SQLite file at `path`.
        public var url: String?
        /// SQLite file; default `<data dir>/gengate.sqlite`.
        public var path: String?
        /// PostgreSQL connections each process opens at most.
        public var poolSize = 8
        /// `full` survives power loss; `normal` only a process crash, and commits faster.
        public var durability = "full"
        public var busyTimeoutSeconds = 10.0
        /// Days events are kept (a generation's event log); older ones expire. Longer than
        /// `jobs.max_deadline_seconds`, so only events of ended jobs ever expire.
        public var eventRetentionDays = 30.0
    }

    public struct Objects: Codable, Sendable, Equatable {
        /// Local object directory; default `<data dir>/objects`. Also where downloads wait on
        /// their way to S3.
        public var directory: String?
        /// Every output's key starts with it.
        public var prefix = "outputs"
        /// An S3-compatible service instead of the local directory, when `s3.bucket` is set.
        public var s3 = S3()
    }

    /// Outputs in an S3-compatible service; credentials come from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), never from this file.
    public struct S3: Codable, Sendable, Equatable {
        public var bucket: String?
        /// Default AWS's endpoint for `region`; an S3-compatible service's URL otherwise.
        public var endpoint: String?
        public var region = "us-east-1"
        /// `<endpoint>/<bucket>/<key>` addressing (most S3-compatible services) instead of
        /// `<bucket>.<endpoint host>/<key>`.
        public var pathStyle = false
        /// Where the bucket is readable by anyone (public bucket, CDN): output URLs are
        /// `<public_url>/<key>`. Without it, outputs get presigned URLs.
        public var publicUrl: String?
        /// Where clients reach the service, when not at `endpoint` (a container network's name):
        /// presigned output URLs point there, signed for that host.
        public var urlEndpoint: String?
        /// How long a presigned output URL works (1 s to 7 days).
        public var urlLifetimeSeconds = 3_600
        /// Outputs larger than this go up in parts of this size (multipart upload).
        public var partSizeMib = 16
        public var requestTimeoutSeconds = 120.0
        /// Memory a process gives to uploads in flight, a part each (at least one part): more
        /// uploads at once wait.
        public var memoryMib = 256
    }

    public struct Log: Codable, Sendable, Equatable {
        /// trace, debug, info, notice, warning, error, critical
        public var level = "info"
        /// `human` or `json`
        public var format = "human"
    }

    public struct Jobs: Codable, Sendable, Equatable {
        /// How long a worker owns a job while it acts on it before others may take it over.
        public var leaseSeconds = 30.0
        /// How often the recovery sweep looks for lost or due work.
        public var sweepIntervalSeconds = 1.0
        /// An unleased job due this long ago is assumed to have lost its message.
        public var staleAfterSeconds = 5.0
        /// A service process whose heartbeat the store has not seen for this long is taken to be
        /// gone (killed, or its host lost), and every lease it holds is voided at once instead of
        /// when it runs out. At least twice `bus.heartbeat_seconds`.
        public var silentAfterSeconds = 10.0
        /// On SIGTERM, how long in-flight work may take to finish before it is cancelled.
        /// Provider submissions already made are always recorded, however long that takes.
        public var drainSeconds = 20.0
        /// A job's deadline when its request names none: by model id or alias, else by kind of
        /// model (`image`, `video`, `text`; video at least 3600 unless set here), else
        /// `default_deadline_seconds`.
        public var defaultDeadlineSeconds = 1_800
        public var modelDeadlineSeconds: [String: Int] = [:]
        public var maxDeadlineSeconds = 86_400

        /// Built in for video (tasks of many minutes), under `model_deadline_seconds` and never
        /// shorter than `default_deadline_seconds`.
        static let videoDeadlineSeconds = 3_600

        /// The deadline of a job for `model` (a model or an alias) of `kind`, whose route is
        /// `route`, when its request names none: its own entry, else the longest of its route's
        /// models' entries, else its kind's.
        public func deadlineSeconds(model: String, kind: ModelInfo.Kind, route: [String] = []) -> Int {
            if let own = modelDeadlineSeconds[model] { return own }
            if let longest = route.compactMap({ modelDeadlineSeconds[$0] }).max() { return longest }
            if let byKind = modelDeadlineSeconds[kind.rawValue] { return byKind }
            guard kind == .video else { return defaultDeadlineSeconds }
            return min(maxDeadlineSeconds, max(defaultDeadlineSeconds, Self.videoDeadlineSeconds))
        }
        /// Provider submissions per generation before it fails.
        public var maxAttempts = 4
        public var retryBaseSeconds = 2.0
        public var retryMaxSeconds = 60.0
        /// The back-off base after a rate limit that said no Retry-After.
        public var rateLimitBaseSeconds = 30.0
        /// Submissions in a row that found a provider unreachable before this process stops
        /// submitting to it for `circuit_cool_down_seconds` (then one probe decides).
        public var circuitThreshold = 5
        public var circuitCoolDownSeconds = 30.0
        /// Retry settings of single providers (`max_attempts`, `retry_base_seconds`,
        /// `retry_max_seconds`, `rate_limit_base_seconds`, each optional), over the ones above.
        public var providerRetry: [String: RetrySettings] = [:]
        /// Jobs one dispatcher or uploader works on at once. A job in hand mostly waits (on a
        /// provider's answer, which takes seconds, or on a commit), so this bounds throughput:
        /// 256 submissions of 2 s each are 128 a second per dispatcher, and more writers waiting
        /// together share each commit.
        public var concurrency = 256
        /// Status calls one poller makes to one provider at once.
        public var checkConcurrency = 64
        /// Due status checks a poller claims in one go.
        public var checkBatch = 256
        /// Status calls that may fail in a row before the attempt counts as failed.
        public var maxCheckFailures = 5
        /// Unexpected handler errors on one job before it fails with internal_error.
        public var maxHandlerFailures = 5
        /// When running provider tasks are checked, by kind of model.
        public var checkSchedules = CheckSchedules()
        /// Check schedules of single models (by model id), over their kind's.
        public var modelCheckSchedules: [String: CheckSchedule] = [:]
    }

    public struct CheckSchedules: Codable, Sendable, Equatable {
        public var image = CheckSchedule.image
        public var video = CheckSchedule.video
        public var text = CheckSchedule.text
    }

    public struct Providers: Codable, Sendable, Equatable {
        public var replicate = ProviderConnection()
        public var flux = ProviderConnection()
        public var dashscope = ProviderConnection()
        public var pollo = ProviderConnection()
        public var kling = ProviderConnection()
        public var hunyuan = ProviderConnection()
        /// Synchronous: one call makes the images (a minute or two for gpt-image at high quality).
        public var openai = ProviderConnection(requestTimeoutSeconds: 300)
    }

    public struct RetrySettings: Codable, Sendable, Equatable {
        public var maxAttempts: Int?
        public var retryBaseSeconds: Double?
        public var retryMaxSeconds: Double?
        public var rateLimitBaseSeconds: Double?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case maxAttempts, retryBaseSeconds, retryMaxSeconds, rateLimitBaseSeconds
        }

        /// Strict: inside a free-form map the loader cannot tell a misspelt setting from a
        /// provider's name, so an unknown key, or none at all, is refused here.
        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            let given = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue)
            let known = Set(CodingKeys.allCases.map(\.stringValue))
            if let unknown = given.first(where: { !known.contains($0) }) {
                throw DecodingError.dataCorruptedError(
                    forKey: .maxAttempts, in: container,
                    debugDescription:
                        "unknown setting \(unknown); known: max_attempts, retry_base_seconds, retry_max_seconds, rate_limit_base_seconds"
                )
            }
            if given.isEmpty {
                throw DecodingError.dataCorruptedError(
                    forKey: .maxAttempts, in: container, debugDescription: "sets nothing")
            }
            maxAttempts = try container.decodeIfPresent(Int.self, forKey: .maxAttempts)
            retryBaseSeconds = try container.decodeIfPresent(Double.self, forKey: .retryBaseSeconds)
            retryMaxSeconds = try container.decodeIfPresent(Double.self, forKey: .retryMaxSeconds)
            rateLimitBaseSeconds = try container.decodeIfPresent(Double.self, forKey: .rateLimitBaseSeconds)
        }

        struct AnyKey: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }
    }

    public struct ProviderConnection: Codable, Sendable, Equatable {
        /// The API's base URL as the provider's SDK takes it; unset: the provider's own.
        public var baseUrl: String?
        public var connectTimeoutSeconds = 5.0
        /// One API call, from sending it to the end of its answer.
        public var requestTimeoutSeconds = 60.0
        /// Connections kept open to the provider at once.
        public var maxConnections = 64
        /// Provider tasks open at once across every process (0: no limit); unset: the limit the
        /// provider publishes, if any. Adapts down when the provider throttles.
        public var maxConcurrency: Int?
        /// Submissions a second across every process (0: no limit); unset: the provider's own.
        public var maxRequestsPerSecond: Double?

        /// The limits configured here over the provider's `defaults`.
        public func limits(over defaults: ProviderLimits) -> ProviderLimits {
            ProviderLimits(
                maxConcurrency: maxConcurrency.map { $0 > 0 ? $0 : nil } ?? defaults.maxConcurrency,
                maxRequestsPerSecond: maxRequestsPerSecond.map { $0 > 0 ? $0 : nil } ?? defaults.maxRequestsPerSecond)
        }
        /// The models offered, replacing the provider's defaults (an OpenAI-compatible server's
        /// own models, say); unset: the defaults.
        public var models: [ModelSetting]?
    }

    /// A model a provider offers: `id` is `provider/model`.
    public struct ModelSetting: Codable, Sendable, Equatable {
        public var id: String
        public var kind: ModelInfo.Kind
        /// Most outputs one generation may ask for (default 1).
        public var maxOutputs: Int?
        /// Most outputs one call may ask for, where fewer than the provider's.
        public var maxOutputsPerCall: Int?

        public init(id: String, kind: ModelInfo.Kind, maxOutputs: Int? = nil, maxOutputsPerCall: Int? = nil) {
            self.id = id
            self.kind = kind
            self.maxOutputs = maxOutputs
            self.maxOutputsPerCall = maxOutputsPerCall
        }
    }

    public struct Sim: Codable, Sendable, Equatable {
        public var latencyMs = 1_500
        /// Share of tasks (0...1) that fail retryably.
        public var failureRate = 0.0
        /// How long a submission takes to answer (real providers take a second or two).
        public var submitLatencyMs = 0
        /// Outputs one submission yields; a generation with more makes several submissions.
        public var maxOutputsPerCall = 10
        /// A file where the sim records every submission it receives (client reference and task
        /// id, one line each), as a provider's own records would. For tests and demonstrations
        /// that count what was submitted.
        public var ledger: String?
        /// Whether the sim, like some real providers, finds a submission by our client reference
        /// (needs `ledger`); recovery then asks it before submitting again.
        public var findsByReference = false
        /// Limits on the sim's tasks, as a real provider's (0 or unset: none).
        public var maxConcurrency: Int?
        public var maxRequestsPerSecond: Double?
    }
}

extension GenGateConfig {
    /// The data directory as an absolute path.
    public var dataDirectory: URL {
        URL(fileURLWithPath: dataDir, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
            .standardizedFileURL
    }

    public var runDirectory: URL { dataDirectory.appendingPathComponent("run") }

    /// The SQLite file, when the store is SQLite (`store.url` `sqlite:PATH`, or `store.path`).
    public var storePath: String {
        if let url = store.url, url.hasPrefix("sqlite:") { return String(url.dropFirst("sqlite:".count)) }
        return store.path ?? dataDirectory.appendingPathComponent("gengate.sqlite").path
    }

    public var objectsDirectory: URL {
        objects.directory.map { URL(fileURLWithPath: $0) } ?? dataDirectory.appendingPathComponent("objects")
    }

    public var adminKeyPath: URL { dataDirectory.appendingPathComponent("admin.key") }

    public var publicBaseURL: String {
        let base = http.publicUrl ?? "http://\(http.host):\(http.port)"
        return base.hasSuffix("/") ? String(base.dropLast()) : base
    }
}

extension GenGateConfig {
    /// The retry policy of `settings` over the general one (the general one for nil).
    func retry(_ settings: RetrySettings?) -> RetryPolicy {
        RetryPolicy(
            maxAttempts: settings?.maxAttempts ?? jobs.maxAttempts,
            baseSeconds: settings?.retryBaseSeconds ?? jobs.retryBaseSeconds,
            maxSeconds: settings?.retryMaxSeconds ?? jobs.retryMaxSeconds,
            rateLimitBaseSeconds: settings?.rateLimitBaseSeconds ?? jobs.rateLimitBaseSeconds)
    }

    /// The job engine's numbers, as one value.
    public var policy: JobPolicy {
        JobPolicy(
            leaseSeconds: jobs.leaseSeconds, sweepIntervalSeconds: jobs.sweepIntervalSeconds,
            staleAfterSeconds: jobs.staleAfterSeconds,
            drainSeconds: jobs.drainSeconds,
            retry: retry(nil),
            providerRetry: jobs.providerRetry.mapValues { retry($0) },
            modelSchedules: jobs.modelCheckSchedules,
            kindSchedules: [
                .image: jobs.checkSchedules.image, .video: jobs.checkSchedules.video, .text: jobs.checkSchedules.text,
            ],
            maxCheckFailures: jobs.maxCheckFailures, checkConcurrency: jobs.checkConcurrency,
            checkBatch: jobs.checkBatch,
            maxHandlerFailures: jobs.maxHandlerFailures, eventRetentionSeconds: store.eventRetentionDays * 86_400,
            idempotencyWindowSeconds: http.idempotencyWindowSeconds, circuitThreshold: jobs.circuitThreshold,
            circuitCoolDownSeconds: jobs.circuitCoolDownSeconds)
    }
}
