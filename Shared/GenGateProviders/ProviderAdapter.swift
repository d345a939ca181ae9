import Foundation
import GenGateCore
import Synchronization

/// What a provider can do; shared code adapts to it (docs/ARCHITECTURE.md).
public struct ProviderCapabilities: Sendable, Equatable {
    /// Submissions return a task to poll (false: the answer comes in the submit response).
    public var asynchronous: Bool
    public var streaming: Bool
    public var cancel: Bool
    /// Outputs one submission can ask for.
    public var maxOutputsPerCall: Int
    /// The provider can find a submission by our client reference, so recovery can tell
    /// whether a crashed submission reached it before submitting again.
    public var findsSubmissionByReference: Bool
    /// The provider calls a URL of ours when a task ends (`ProviderRequest.callback`).
    public var callbacks: Bool
    /// How long after a submission the provider may still not list it by our reference (a task
    /// being created, an index that lags): a lookup that finds nothing sooner is asked again.
    public var referenceSettleSeconds: Double
    /// The limits the provider publishes for an ordinary account, used unless configured.
    public var limits: ProviderLimits
    /// The provider charges for a task once it accepted it, however the task ends (see
    /// `Attempt.chargesOnAcceptance`); false: it charges for what it delivers.
    public var chargesOnAcceptance: Bool

    public init(
        asynchronous: Bool, streaming: Bool, cancel: Bool, maxOutputsPerCall: Int,
        findsSubmissionByReference: Bool, callbacks: Bool = false, referenceSettleSeconds: Double = 0,
        limits: ProviderLimits = ProviderLimits(), chargesOnAcceptance: Bool = false
    ) {
        self.chargesOnAcceptance = chargesOnAcceptance
        self.limits = limits
        self.asynchronous = asynchronous
        self.streaming = streaming
        self.cancel = cancel
        self.maxOutputsPerCall = maxOutputsPerCall
        self.findsSubmissionByReference = findsSubmissionByReference
        self.callbacks = callbacks
        self.referenceSettleSeconds = referenceSettleSeconds
    }
}

/// A model GenGate offers, and which provider serves it.
public struct ModelInfo: Sendable, Equatable {
    public enum Kind: String, Sendable, Codable {
        case image, video, text
    }

    /// The public model name, e.g. `sim/image`.
    public var id: String
    public var provider: String
    public var kind: Kind
    /// Most outputs one generation may ask for.
    public var maxOutputs: Int
    /// Most outputs one call may ask for, where this model allows fewer than its provider
    /// (OpenAI's dall-e-3 makes one image a call).
    public var maxOutputsPerCall: Int?
    /// What the model takes in input images; nil: none.
    public var images: ImageIntake?

    public init(
        id: String, provider: String, kind: Kind, maxOutputs: Int, maxOutputsPerCall: Int? = nil,
        images: ImageIntake? = nil
    ) {
        self.images = images
        self.id = id
        self.provider = provider
        self.kind = kind
        self.maxOutputs = maxOutputs
        self.maxOutputsPerCall = maxOutputsPerCall
    }
}

/// One submission as the adapter sees it.
public struct ProviderRequest: Sendable, Equatable {
    public var generationID: String
    /// Our id for this submission; adapters send it where the provider accepts one.
    public var clientReference: String
    public var model: String
    public var prompt: String
    /// Output indexes of the generation this call is for (their count is the number asked).
    public var outputIndexes: [Int]
    public var seed: Int?
    public var width: Int?
    public var height: Int?
    public var params: [String: JSONValue]
    /// Where the provider should say that the task ended, when GenGate is reachable and the
    /// provider calls back; nil otherwise.
    public var callback: ProviderCallback?
    /// When the job gives up: providers that can stop a task by themselves (Replicate's
    /// `Cancel-After`) are told, so a task GenGate no longer follows is not paid for past it.
    public var deadline: Date?
    /// The input images, prepared and in the form the model's `ImageIntake` asked (given to
    /// submissions only).
    public var images: [ProviderImage]
    /// How many input images the job has (also when checking status, where `images` is empty).
    public var inputImageCount: Int
    /// Where the adapter says what the provider reported charging for this call, if it does.
    public var charges = ChargeReport()

    public init(
        generationID: String, clientReference: String, model: String, prompt: String, outputIndexes: [Int],
        seed: Int?, width: Int?, height: Int?, params: [String: JSONValue], callback: ProviderCallback? = nil,
        deadline: Date? = nil, images: [ProviderImage] = [], inputImageCount: Int? = nil
    ) {
        self.images = images
        self.inputImageCount = inputImageCount ?? images.count
        self.generationID = generationID
        self.clientReference = clientReference
        self.model = model
        self.prompt = prompt
        self.outputIndexes = outputIndexes
        self.seed = seed
        self.width = width
        self.height = height
        self.params = params
        self.callback = callback
        self.deadline = deadline
    }

    /// The seed for this call: the generation's plus the first output index it is for, so the
    /// calls of one generation paint different images; kept within 0…2³¹−1, the range providers
    /// take. Nil without a seed.
    public var callSeed: Int? {
        seed.map { ($0 + (outputIndexes.first ?? 0)) % 2_147_483_648 }
    }

    public init(generation: Generation, clientReference: String, outputIndexes: [Int]) {
        let request = generation.request
        self.init(
            generationID: generation.id, clientReference: clientReference, model: generation.model,
            prompt: request.prompt,
            outputIndexes: outputIndexes, seed: request.seed, width: request.width, height: request.height,
            params: request.params, deadline: generation.deadlineAt, inputImageCount: request.images?.count ?? 0)
    }
}

/// What a provider reported charging for a call (Flux's `cost` at submission, Pollo's `credit`
/// in its status, OpenAI's `usage`), handed back beside the call's answer. Not part of what a
/// request is: two requests are equal whatever their reports.
public final class ChargeReport: Sendable, Equatable {
    private let value = Mutex<ProviderCharge?>(nil)

    public init() {}

    /// Says what the provider reported; a later report of the same call adds to or replaces it.
    public func report(_ charge: ProviderCharge) {
        guard !charge.isEmpty else { return }
        value.withLock { $0 = $0.map { $0.merged(with: charge) } ?? charge }
    }

    public var reported: ProviderCharge? { value.withLock { $0 } }

    public static func == (lhs: ChargeReport, rhs: ChargeReport) -> Bool { true }
}

/// One input image as an adapter hands it to its provider.
public struct ProviderImage: Sendable, Equatable {
    public var delivery: ImageDelivery
    public var contentType: String
    /// Raw base64 (`base64`), a `data:` URL (`data_url`) or a URL (`url`); empty for `multipart`.
    public var text: String
    /// The bytes, for `multipart`.
    public var data: Data?

    public init(delivery: ImageDelivery, contentType: String, text: String, data: Data? = nil) {
        self.delivery = delivery
        self.contentType = contentType
        self.text = text
        self.data = data
    }
}

/// A callback asked of a provider: our URL (which carries a token only GenGate can make) and,
/// for providers that echo a shared secret back (Flux), that token again.
public struct ProviderCallback: Sendable, Equatable {
    public var url: String
    public var secret: String

    public init(url: String, secret: String) {
        self.url = url
        self.secret = secret
    }
}

/// A provider task as last seen.
public enum ProviderTaskState: Sendable, Equatable {
    case queued
    /// Working. `eta`: the provider's estimate of the seconds left, where it gives one; the next
    /// status check is made then instead of on the back-off schedule.
    case running(progress: Int?, eta: Double? = nil)
    /// Finished; `outputs` carry the generation's output indexes.
    case succeeded(outputs: [Output])
    case failed(GenGateError)
    case cancelled
}

/// One output a synchronous call made, in a scratch file the engine gave it.
public struct GeneratedOutput: Sendable, Equatable {
    public var index: Int
    public var file: URL
    public var contentType: String

    public init(index: Int, file: URL, contentType: String) {
        self.index = index
        self.file = file
        self.contentType = contentType
    }
}

/// What a synchronous call writes to: scratch files (the engine stores and removes them), and
/// the text it streams, in order, as it arrives.
public struct GenerationSink: Sendable {
    public var scratchFile: @Sendable () throws -> URL
    public var chunk: @Sendable (String) -> Void

    public init(scratchFile: @escaping @Sendable () throws -> URL, chunk: @escaping @Sendable (String) -> Void) {
        self.scratchFile = scratchFile
        self.chunk = chunk
    }
}

/// A provider adapter does only three things: submit, check status, cancel; plus
/// fetching an output's bytes where the provider needs its own way (auth headers, references).
/// Polling, retries, uploads and validation are shared and live elsewhere. Adapters know nothing
/// of the store or the bus. Errors they throw are `GenGateError`s, classified once, here.
public protocol ProviderAdapter: Sendable {
    var name: String { get }
    var capabilities: ProviderCapabilities { get }
    var models: [ModelInfo] { get }

    /// Submits and returns the provider's task id.
    func submit(_ request: ProviderRequest) async throws -> String
    /// The task's state now.
    func status(taskID: String, request: ProviderRequest) async throws -> ProviderTaskState
    /// Asks the provider to stop the task (only where `capabilities.cancel`).
    func cancel(taskID: String) async throws
    /// The task id of an earlier submission with this client reference, if the provider has one.
    func findSubmission(clientReference: String, request: ProviderRequest) async throws -> String?
    /// The bytes and content type of an output the provider reported (small outputs).
    func fetch(_ output: Output) async throws -> (data: Data, contentType: String)
    /// Streams an output into `file` (which it creates) and returns its content type, without
    /// holding it whole in memory; nil if this adapter only fetches whole (then `fetch` is used).
    func download(_ output: Output, to file: URL) async throws -> String?
    /// Lets go of connections; the last thing a process does with its adapters.
    func shutdown() async
    /// Checks a callback's own proof of origin, where the provider gives one beyond our URL's
    /// token (Replicate signs its webhooks; Flux echoes `secret`); throws an
    /// `authentication_failed` error when it fails. `headers` by lowercase name.
    func verifyCallback(headers: [String: String], body: Data, secret: String, now: Date) async throws
    /// Synchronous providers (`capabilities.asynchronous` false) answer with the outputs
    /// themselves: makes them in one call, each streamed into a scratch file of `sink`, text
    /// passed to `sink.chunk` as it arrives. Used instead of `submit` and `status`.
    func generate(_ request: ProviderRequest, into sink: GenerationSink) async throws -> [GeneratedOutput]
}

/// Thrown by `cancel` when the provider says the task had already ended (succeeded or failed),
/// or gone past the point where it can be stopped: whatever it costs is spent.
public struct TaskAlreadyEnded: Error, CustomStringConvertible {
    public var status: String
    public init(status: String) { self.status = status }
    public var description: String { "the task had already ended (\(status))" }
}

extension ProviderAdapter {
    public func cancel(taskID: String) async throws {
        throw GenGateError(.invalidRequest, "\(name) cannot cancel a task", retryable: false)
    }

    public func findSubmission(clientReference: String, request: ProviderRequest) async throws -> String? { nil }

    public func download(_ output: Output, to file: URL) async throws -> String? { nil }

    public func shutdown() async {}

    public func verifyCallback(headers: [String: String], body: Data, secret: String, now: Date) async throws {}

    public func generate(_ request: ProviderRequest, into sink: GenerationSink) async throws -> [GeneratedOutput] {
        throw GenGateError(.internalError, "\(name) answers with a task, not with its outputs", retryable: false)
    }
}
