import Foundation

/// What an application asked for, after validation: the model, the prompt and the knobs GenGate
/// understands itself. Provider-specific extras travel in `params` untouched.
public struct GenerationRequest: Codable, Sendable, Equatable {
    public var model: String
    public var prompt: String
    /// Number of outputs wanted (1...10).
    public var n: Int
    public var seed: Int?
    public var width: Int?
    public var height: Int?
    public var params: [String: JSONValue]
    /// Seconds from creation after which the generation fails with `task_timeout`.
    public var deadlineSeconds: Int?
    /// Free-form data the application attaches and gets back untouched.
    public var metadata: [String: JSONValue]
    /// Where to deliver the job's events (`webhookEvents` of them), signed.
    public var webhook: String?
    public var webhookEvents: [WebhookEvent]?
    /// Input images, in order (nil: none).
    public var images: [ImageInput]?
    /// How to prepare them, instead of the provider's own preprocessing (nil: the provider's).
    public var preprocess: ImagePipeline?

    public init(
        model: String, prompt: String, n: Int = 1, seed: Int? = nil, width: Int? = nil, height: Int? = nil,
        params: [String: JSONValue] = [:], deadlineSeconds: Int? = nil, metadata: [String: JSONValue] = [:],
        webhook: String? = nil, webhookEvents: [WebhookEvent]? = nil, images: [ImageInput]? = nil,
        preprocess: ImagePipeline? = nil
    ) {
        self.images = images
        self.preprocess = preprocess
        self.webhook = webhook
        self.webhookEvents = webhookEvents
        self.model = model
        self.prompt = prompt
        self.n = n
        self.seed = seed
        self.width = width
        self.height = height
        self.params = params
        self.deadlineSeconds = deadlineSeconds
        self.metadata = metadata
    }

    enum CodingKeys: String, CodingKey {
        case model, prompt, n, seed, width, height, params, metadata, webhook, images, preprocess
        case deadlineSeconds = "deadline_seconds"
        case webhookEvents = "webhook_events"
    }
}
