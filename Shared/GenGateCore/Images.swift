import Foundation

/// The image formats GenGate takes as inputs (told by their bytes, never by a declared type).
public enum ImageFormat: String, Codable, Sendable, CaseIterable {
    case jpeg, png, webp, gif

    public var contentType: String {
        switch self {
        case .jpeg: "image/jpeg"
        case .png: "image/png"
        case .webp: "image/webp"
        case .gif: "image/gif"
        }
    }

    public init?(contentType: String) {
        guard let format = Self.allCases.first(where: { $0.contentType == contentType }) else { return nil }
        self = format
    }

    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// What an image is: its format, its size as shown (EXIF orientation applied), its bytes and
/// their SHA-256.
public struct ImageInfo: Codable, Sendable, Equatable {
    public var format: ImageFormat
    public var width: Int
    public var height: Int
    public var bytes: Int
    public var sha256: String
    /// Frames of an animated image (GIF, WebP); only the first is used.
    public var frames: Int

    public init(format: ImageFormat, width: Int, height: Int, bytes: Int, sha256: String, frames: Int = 1) {
        self.format = format
        self.width = width
        self.height = height
        self.bytes = bytes
        self.sha256 = sha256
        self.frames = frames
    }
}

/// What a model takes as an input image. Nil bounds are not checked.
public struct ImageLimits: Codable, Sendable, Equatable {
    public var maxBytes: Int?
    public var minSide: Int?
    public var maxSide: Int?
    /// Width over height: at least `minAspect`, at most `maxAspect`.
    public var minAspect: Double?
    public var maxAspect: Double?
    public var maxPixels: Int?

    public init(
        maxBytes: Int? = nil, minSide: Int? = nil, maxSide: Int? = nil, minAspect: Double? = nil,
        maxAspect: Double? = nil, maxPixels: Int? = nil
    ) {
        self.maxBytes = maxBytes
        self.minSide = minSide
        self.maxSide = maxSide
        self.minAspect = minAspect
        self.maxAspect = maxAspect
        self.maxPixels = maxPixels
    }

    enum CodingKeys: String, CodingKey {
        case maxBytes = "max_bytes"
        case minSide = "min_side"
        case maxSide = "max_side"
        case minAspect = "min_aspect"
        case maxAspect = "max_aspect"
        case maxPixels = "max_pixels"
    }

    /// Each limit `info` breaks, saying which and by how much; `what` names the image and model.
    public func problems(_ info: ImageInfo) -> [String] {
        var found: [String] = []
        if let maxBytes, info.bytes > maxBytes {
            found.append("is \(info.bytes) bytes, \(info.bytes - maxBytes) over the limit of \(maxBytes)")
        }
        let short = min(info.width, info.height)
        let long = max(info.width, info.height)
        if let minSide, short < minSide {
            found.append(
                "is \(info.width)×\(info.height) px: its shorter side is \(minSide - short) px under the minimum of \(minSide)"
            )
        }
        if let maxSide, long > maxSide {
            found.append(
                "is \(info.width)×\(info.height) px: its longer side is \(long - maxSide) px over the maximum of \(maxSide)"
            )
        }
        if let maxPixels, info.width * info.height > maxPixels {
            found.append(
                "has \(info.width * info.height) pixels, \(info.width * info.height - maxPixels) over the limit of \(maxPixels)"
            )
        }
        let aspect = Double(info.width) / Double(max(1, info.height))
        if let minAspect, aspect < minAspect - 1e-9 {
            found.append(
                "has an aspect ratio (width/height) of \(Self.ratio(aspect)), under the minimum of \(Self.ratio(minAspect))"
            )
        }
        if let maxAspect, aspect > maxAspect + 1e-9 {
            found.append(
                "has an aspect ratio (width/height) of \(Self.ratio(aspect)), over the maximum of \(Self.ratio(maxAspect))"
            )
        }
        return found
    }

    static func ratio(_ value: Double) -> String { String(format: "%.3g", value) }

    /// The tighter of two sets of limits.
    public func merged(with other: ImageLimits) -> ImageLimits {
        func least<T: Comparable>(_ a: T?, _ b: T?) -> T? { [a, b].compactMap { $0 }.min() }
        func most<T: Comparable>(_ a: T?, _ b: T?) -> T? { [a, b].compactMap { $0 }.max() }
        return ImageLimits(
            maxBytes: least(maxBytes, other.maxBytes), minSide: most(minSide, other.minSide),
            maxSide: least(maxSide, other.maxSide), minAspect: most(minAspect, other.minAspect),
            maxAspect: least(maxAspect, other.maxAspect), maxPixels: least(maxPixels, other.maxPixels))
    }
}

/// An image a request hands in: an upload of this key's, a URL GenGate fetches (`https`, public
/// addresses only), or an output of another generation (a chain).
public enum ImageInput: Codable, Sendable, Equatable, Hashable {
    case upload(String)
    case url(String)
    case output(generation: String, index: Int)

    enum CodingKeys: String, CodingKey {
        case upload, url, generation, output
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let id = try container.decodeIfPresent(String.self, forKey: .upload) {
            self = .upload(id)
        } else if let url = try container.decodeIfPresent(String.self, forKey: .url) {
            self = .url(url)
        } else {
            self = .output(
                generation: try container.decode(String.self, forKey: .generation),
                index: try container.decode(Int.self, forKey: .output))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .upload(let id): try container.encode(id, forKey: .upload)
        case .url(let url): try container.encode(url, forKey: .url)
        case .output(let generation, let index):
            try container.encode(generation, forKey: .generation)
            try container.encode(index, forKey: .output)
        }
    }
}

/// How an adapter wants an image handed to its provider.
public enum ImageDelivery: String, Codable, Sendable, CaseIterable {
    /// Raw base64 of the bytes, no `data:` prefix (Kling).
    case base64
    /// A `data:<type>;base64,…` URL.
    case dataURL = "data_url"
    /// The bytes themselves, as a part of a multipart body (OpenAI's edits).
    case multipart
    /// A URL the provider fetches: presigned from object storage, or a signed, short-lived
    /// GenGate URL with local storage.
    case url
}

/// How images are resized.
public enum ResizeMode: String, Codable, Sendable, CaseIterable {
    /// Within width × height, the aspect ratio kept, never enlarged.
    case fit
    /// Exactly width × height, stretched.
    case fill
    /// Exactly width × height: scaled to cover it, the overflow cropped at the centre.
    case cover
    /// Exactly width × height: scaled to fit inside it, the rest padded (black, or transparent).
    case contain
}

/// One step of a preprocessing pipeline. The EXIF orientation is always applied and metadata
/// (EXIF, XMP, ICC) always stripped; these are what may be asked on top.
public enum ImageStep: Sendable, Equatable, Hashable {
    /// The output's format; nil keeps the input's (a GIF becomes a PNG: only its first frame is used).
    case format(ImageFormat?)
    case resize(ResizeMode, width: Int?, height: Int?)
    /// JPEG and WebP quality, 1…100 (PNG is lossless and ignores it).
    case quality(Int)
    /// The most the output may weigh: quality is lowered, then the image scaled down, until it fits.
    case maxKilobytes(Int)
    case sharpen
    case autoContrast
}

/// A list of steps, and what they add up to. Steps are values and a pipeline a list of them;
/// they run in one fixed order (orient, resize, auto-contrast, sharpen, encode), a later step of
/// a kind replacing an earlier one.
public struct ImagePipeline: Sendable, Equatable, Hashable {
    public var steps: [ImageStep]

    public init(_ steps: [ImageStep]) {
        self.steps = steps
    }

    /// What the steps add up to.
    public struct Settings: Sendable, Equatable {
        public var format: ImageFormat?
        public var resize: (mode: ResizeMode, width: Int?, height: Int?)?
        public var quality = 85
        public var maxKilobytes: Int?
        public var sharpen = false
        public var autoContrast = false

        public static func == (a: Settings, b: Settings) -> Bool {
            a.format == b.format && a.resize?.mode == b.resize?.mode && a.resize?.width == b.resize?.width
                && a.resize?.height == b.resize?.height && a.quality == b.quality
                && a.maxKilobytes == b.maxKilobytes && a.sharpen == b.sharpen && a.autoContrast == b.autoContrast
        }

        /// The size an image of `width` × `height` comes out at (to a pixel: libvips rounds).
        public func size(width: Int, height: Int) -> (width: Int, height: Int) {
            guard let resize else { return (width, height) }
            switch resize.mode {
            case .fit:
                let scale = min(
                    1, resize.width.map { Double($0) / Double(width) } ?? 1,
                    resize.height.map { Double($0) / Double(height) } ?? 1)
                return (
                    max(1, Int((Double(width) * scale).rounded())), max(1, Int((Double(height) * scale).rounded()))
                )
            case .fill, .cover, .contain:
                return (resize.width ?? width, resize.height ?? height)
            }
        }

        /// The format an input of `input`'s format comes out in.
        public func output(for input: ImageFormat) -> ImageFormat {
            format ?? (input == .gif ? .png : input)
        }
    }

    public var settings: Settings {
        var settings = Settings()
        for step in steps {
            switch step {
            case .format(let format): settings.format = format
            case .resize(let mode, let width, let height): settings.resize = (mode, width, height)
            case .quality(let quality): settings.quality = quality
            case .maxKilobytes(let limit): settings.maxKilobytes = limit
            case .sharpen: settings.sharpen = true
            case .autoContrast: settings.autoContrast = true
            }
        }
        return settings
    }

    /// The presets: `fast` (small JPEG previews), `standard` (within 1024 px, quality 85, the
    /// format kept), `high` (within 2048 px, PNG) and `pollo-optimized` (1920×1080 covered, a JPEG
    /// of at most 5000 KB).
    public static let presets: [String: ImagePipeline] = [
        "fast": ImagePipeline([.resize(.fit, width: 512, height: 512), .quality(70), .format(.jpeg)]),
        "standard": ImagePipeline([.resize(.fit, width: 1024, height: 1024), .quality(85), .format(nil)]),
        "high": ImagePipeline([.resize(.fit, width: 2048, height: 2048), .quality(95), .format(.png)]),
        "pollo-optimized": ImagePipeline([
            .resize(.cover, width: 1920, height: 1080), .quality(90), .maxKilobytes(5000), .format(.jpeg),
        ]),
    ]

    /// The largest side `resize` may ask for.
    public static let maxDimension = 8_192

    /// A pipeline from a request: a preset's name, or a list of steps such as
    /// `[{"resize": {"mode": "fit", "width": 1024, "height": 1024}}, {"format": "webp"}, {"quality": 80}]`.
    /// Problems come back as (path, message), the path under `path`.
    public static func parse(_ value: JSONValue, path: String) -> (ImagePipeline?, [(String, String)]) {
        switch value {
        case .string(let name):
            if let preset = presets[name] { return (preset, []) }
            return (
                nil, [(path, "unknown preset \"\(name)\"; presets: \(presets.keys.sorted().joined(separator: ", "))")]
            )
        case .array(let items):
            var steps: [ImageStep] = []
            var problems: [(String, String)] = []
            for (index, item) in items.enumerated() {
                let here = "\(path)[\(index)]"
                guard case .object(let fields) = item, fields.count == 1, let (name, argument) = fields.first else {
                    problems.append((here, "must be an object with one step, such as {\"quality\": 85}"))
                    continue
                }
                switch parseStep(name, argument) {
                case .success(let step): steps.append(step)
                case .failure(let problem): problems.append(("\(here).\(name)", problem.message))
                }
            }
            return (problems.isEmpty ? ImagePipeline(steps) : nil, problems)
        default:
            return (nil, [(path, "must be a preset's name or a list of steps, got \(value.typeName)")])
        }
    }

    struct StepProblem: Error {
        var message: String
    }

    static func parseStep(_ name: String, _ argument: JSONValue) -> Result<ImageStep, StepProblem> {
        func whole(_ value: JSONValue?, _ range: ClosedRange<Int>, _ what: String) -> Result<Int, StepProblem> {
            guard let number = value?.intValue, range.contains(number) else {
                return .failure(
                    StepProblem(message: "\(what) must be an integer from \(range.lowerBound) to \(range.upperBound)"))
            }
            return .success(number)
        }
        func flag() -> Result<ImageStep, StepProblem>? {
            guard case .bool(let on) = argument else { return .failure(StepProblem(message: "must be true")) }
            return on ? nil : .failure(StepProblem(message: "must be true (leave the step out to skip it)"))
        }
        switch name {
        case "format":
            if argument.stringValue == "keep" { return .success(.format(nil)) }
            guard let text = argument.stringValue, let format = ImageFormat(rawValue: text), format != .gif else {
                return .failure(StepProblem(message: "must be one of jpeg, png, webp, keep"))
            }
            return .success(.format(format))
        case "quality":
            return whole(argument, 1...100, "quality").map { .quality($0) }
        case "max_kb":
            return whole(argument, 10...102_400, "max_kb").map { .maxKilobytes($0) }
        case "sharpen":
            return flag() ?? .success(.sharpen)
        case "auto_contrast":
            return flag() ?? .success(.autoContrast)
        case "resize":
            guard case .object(let fields) = argument else {
                return .failure(
                    StepProblem(message: "must be an object: {\"mode\": \"fit\", \"width\": …, \"height\": …}"))
            }
            let modes = ResizeMode.allCases.map(\.rawValue).joined(separator: ", ")
            guard let mode = fields["mode"]?.stringValue.flatMap(ResizeMode.init(rawValue:)) else {
                return .failure(StepProblem(message: "mode must be one of \(modes)"))
            }
            if let unknown = fields.keys.sorted().first(where: { !["mode", "width", "height"].contains($0) }) {
                return .failure(StepProblem(message: "unknown field \(unknown)"))
            }
            var sides: [Int?] = []
            for side in ["width", "height"] {
                guard let value = fields[side], value != .null else {
                    sides.append(nil)
                    continue
                }
                switch whole(value, 1...maxDimension, side) {
                case .success(let number): sides.append(number)
                case .failure(let problem): return .failure(problem)
                }
            }
            if mode != .fit, sides.contains(where: { $0 == nil }) {
                return .failure(StepProblem(message: "\(mode.rawValue) needs both width and height"))
            }
            if sides.allSatisfy({ $0 == nil }) {
                return .failure(StepProblem(message: "needs a width, a height or both"))
            }
            return .success(.resize(mode, width: sides[0], height: sides[1]))
        default:
            return .failure(
                StepProblem(message: "unknown step; steps: format, resize, quality, max_kb, sharpen, auto_contrast"))
        }
    }

    /// The steps as JSON, in the form `parse` reads.
    public var json: JSONValue {
        .array(steps.map(Self.json))
    }

    static func json(_ step: ImageStep) -> JSONValue {
        switch step {
        case .format(let format):
            return .object(["format": .string(format?.rawValue ?? "keep")])
        case .resize(let mode, let width, let height):
            var fields: [String: JSONValue] = ["mode": .string(mode.rawValue)]
            if let width { fields["width"] = .number(Double(width)) }
            if let height { fields["height"] = .number(Double(height)) }
            return .object(["resize": .object(fields)])
        case .quality(let quality):
            return .object(["quality": .number(Double(quality))])
        case .maxKilobytes(let limit):
            return .object(["max_kb": .number(Double(limit))])
        case .sharpen:
            return .object(["sharpen": .bool(true)])
        case .autoContrast:
            return .object(["auto_contrast": .bool(true)])
        }
    }
}

extension ImagePipeline: Codable {
    public init(from decoder: any Decoder) throws {
        let value = try JSONValue(from: decoder)
        let (pipeline, problems) = Self.parse(value, path: "preprocess")
        guard let pipeline else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: problems.map(\.1).joined(separator: "; ")))
        }
        self = pipeline
    }

    public func encode(to encoder: any Encoder) throws {
        try json.encode(to: encoder)
    }
}

/// What a model takes in images: how many, within which limits, how its provider wants them
/// handed over, and the preprocessing its adapter does unless a request says otherwise.
public struct ImageIntake: Sendable, Equatable {
    /// Most images a request may give.
    public var maxImages: Int
    /// Fewest: models that work only from an image (image-to-video without a text mode) say 1.
    public var minImages: Int
    public var limits: ImageLimits
    /// The forms the provider takes, the preferred first.
    public var delivery: [ImageDelivery]
    /// A data URL or base64 larger than this goes as a URL instead, where the provider takes one
    /// (Replicate advises data URLs only up to 256 KB).
    public var inlineLimitBytes: Int?
    public var pipeline: ImagePipeline
    /// What an image is for, said in `GET /v1/models` (e.g. "the first frame").
    public var purpose: String
    /// The formats the provider takes; an image a pipeline would make in another goes in the
    /// first of these.
    public var formats: [ImageFormat]

    public init(
        maxImages: Int, limits: ImageLimits, delivery: [ImageDelivery], inlineLimitBytes: Int? = nil,
        pipeline: ImagePipeline, purpose: String, formats: [ImageFormat] = [.jpeg, .png, .webp], minImages: Int = 0
    ) {
        self.minImages = minImages
        self.formats = formats
        self.maxImages = maxImages
        self.limits = limits
        self.delivery = delivery
        self.inlineLimitBytes = inlineLimitBytes
        self.pipeline = pipeline
        self.purpose = purpose
    }

    /// What every model of a fallback route takes (nil when one takes no images): the fewest
    /// images, the tightest limits, the formats all take; the first model's delivery and
    /// pipeline (each model's own are used when the job reaches it).
    public static func common(_ intakes: [ImageIntake?]) -> ImageIntake? {
        guard var common = intakes.first ?? nil else { return nil }
        for case let intake? in intakes.dropFirst() {
            common.maxImages = min(common.maxImages, intake.maxImages)
            common.minImages = max(common.minImages, intake.minImages)
            common.limits = common.limits.merged(with: intake.limits)
            common.formats = common.formats.filter(intake.formats.contains)
        }
        return intakes.contains { $0 == nil } || common.formats.isEmpty ? nil : common
    }

    /// The largest side GenGate prepares an image at when the model sets none: the bound on the
    /// memory one prepared image takes.
    public static let largestSide = 4_096

    /// `pipeline` as this model gets it: its output in a format the provider takes, and no larger
    /// than the model's largest side (or `largestSide`). Nil, with the reason, when the pipeline
    /// asks for a size larger than that.
    public func fitted(_ pipeline: ImagePipeline, input: ImageInfo) -> Result<ImagePipeline, GenGateError> {
        var steps = pipeline.steps
        let settings = pipeline.settings
        if !formats.contains(settings.output(for: input.format)), let first = formats.first {
            steps.append(.format(first))
        }
        let side = limits.maxSide ?? Self.largestSide
        let made = settings.size(width: input.width, height: input.height)
        if max(made.width, made.height) > side {
            guard settings.resize == nil else {
                return .failure(
                    GenGateError(
                        .invalidImage,
                        "the pipeline makes \(made.width)×\(made.height) px, over the largest side of \(side) px",
                        retryable: false))
            }
            steps.append(.resize(.fit, width: side, height: side))
        }
        return .success(ImagePipeline(steps))
    }
}

/// What was done to one input image before it went to a provider: where it came from, what it
/// was, what it became and how it was handed over. Shown on the job.
public struct PreparedInput: Codable, Sendable, Equatable {
    public var index: Int
    public var source: ImageInput
    public var original: ImageInfo
    /// What the pipeline made; nil when the original went as it was.
    public var processed: ImageInfo?
    public var pipeline: ImagePipeline
    public var delivery: ImageDelivery
    public var provider: String

    public init(
        index: Int, source: ImageInput, original: ImageInfo, processed: ImageInfo?, pipeline: ImagePipeline,
        delivery: ImageDelivery, provider: String
    ) {
        self.index = index
        self.source = source
        self.original = original
        self.processed = processed
        self.pipeline = pipeline
        self.delivery = delivery
        self.provider = provider
    }
}
