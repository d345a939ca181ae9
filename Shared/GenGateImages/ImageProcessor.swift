import CGenGateVips
import Foundation
import GenGateCore
import GenGateObjects
import NIOPosix
import Synchronization

/// Checks and prepares input images with libvips. Every libvips call runs on threads of this
/// processor's own pool, never on Swift's cooperative pool, and at most `concurrency` images
/// are decoded at once (others wait their turn in arrival order), so memory stays bounded
/// whatever the load: libvips streams a file through in strips, shrinks JPEG and WebP while
/// loading, and holds only the (resized) result whole.
public final class ImageProcessor: Sendable {
    /// How many images are decoded at once (and threads in the pool).
    public let concurrency: Int
    /// The most pixels an input may have, checked from its header before any decoding (a small
    /// file may claim a huge canvas).
    public let maxPixels: Int
    private let pool: NIOThreadPool
    private let slots: Slots
    private let stopped = Mutex(false)

    public init(concurrency: Int = 2, maxPixels: Int = 50_000_000) {
        self.concurrency = max(1, concurrency)
        self.maxPixels = maxPixels
        Self.startLibrary()
        pool = NIOThreadPool(numberOfThreads: self.concurrency)
        pool.start()
        slots = Slots(limit: self.concurrency)
    }

    /// Lets the pool's threads go; the last thing its owner does with it.
    public func shutdown() async {
        guard
            stopped.withLock({ was in
                defer { was = true }
                return !was
            })
        else { return }
        try? await pool.shutdownGracefully()
    }

    /// libvips, once per process: one thread per image (the pool runs images side by side).
    private static let started: Bool = gg_vips_start(1) == 0

    static func startLibrary() {
        precondition(started, "libvips could not start: \(lastError())")
    }

    /// The bytes of `file` (`bytes` long, `sha256` its hash) as an image: its format told by
    /// its bytes, its header read, every pixel decoded once. Throws `invalid_image` saying why
    /// when it is not a PNG, JPEG, WebP or GIF, or cannot be read whole.
    public func inspect(file: URL, bytes: Int, sha256: String) async throws -> ImageInfo {
        let format = try await Self.sniff(file)
        let maxPixels = self.maxPixels
        return try await run {
            var header = gg_header()
            guard gg_vips_header(file.path, &header) == 0 else {
                throw GenGateError(.invalidImage, "the \(format.rawValue) image cannot be read (\(Self.lastError()))")
            }
            let rotated = header.orientation >= 5 && header.orientation <= 8
            let (width, height) = rotated ? (header.height, header.width) : (header.width, header.height)
            guard width > 0, height > 0 else {
                throw GenGateError(.invalidImage, "the \(format.rawValue) image has no pixels")
            }
            // A GIF's or WebP's height is one frame's; its pages are the frames.
            let frames = max(1, Int(header.pages))
            guard Int(width) * Int(height) <= maxPixels else {
                throw GenGateError(
                    .invalidImage,
                    "the image is \(width)×\(height) px, \(Int(width) * Int(height) - maxPixels) pixels over the limit of \(maxPixels)"
                )
            }
            guard gg_vips_decode_check(file.path) == 0 else {
                throw GenGateError(
                    .invalidImage,
                    "the \(format.rawValue) image cannot be decoded whole; it is truncated or corrupt (\(Self.lastError()))"
                )
            }
            return ImageInfo(
                format: format, width: Int(width), height: Int(height), bytes: bytes, sha256: sha256, frames: frames)
        }
    }

    /// An image as a pipeline made it.
    public struct Processed: Sendable {
        public var data: Data
        public var info: ImageInfo
    }

    /// Runs `pipeline` over the image in `file` (of format `input`). With a size limit
    /// (`max_kb`), quality is lowered in steps down to 40, then the image scaled down, until it
    /// fits; an image that cannot be brought under it is an `invalid_image` error.
    public func process(file: URL, input: ImageFormat, pipeline: ImagePipeline) async throws -> Processed {
        let settings = pipeline.settings
        let format = settings.output(for: input)
        let flatten = format == .jpeg  // JPEG has no alpha: transparent parts become white
        return try await run {
            var image: OpaquePointer?
            let mode: Int32
            switch settings.resize?.mode {
            case nil: mode = Int32(GG_RESIZE_NONE)
            case .fit?: mode = Int32(GG_RESIZE_FIT)
            case .fill?: mode = Int32(GG_RESIZE_FILL)
            case .cover?: mode = Int32(GG_RESIZE_COVER)
            case .contain?: mode = Int32(GG_RESIZE_CONTAIN)
            }
            guard
                gg_vips_prepare(
                    file.path, mode, Int32(settings.resize?.width ?? 0), Int32(settings.resize?.height ?? 0),
                    settings.sharpen ? 1 : 0, settings.autoContrast ? 1 : 0, flatten ? 1 : 0, &image) == 0,
                var current = image
            else {
                throw GenGateError(.invalidImage, "the image cannot be processed (\(Self.lastError()))")
            }
            defer { gg_vips_release(current) }
            var quality = settings.quality
            var data = try Self.encode(current, format: format, quality: quality)
            if let limit = settings.maxKilobytes.map({ $0 * 1024 }) {
                // Lossy formats: lower the quality first (in steps of 10, down to 40).
                while data.count > limit, format != .png, quality > 40 {
                    quality = max(40, quality - 10)
                    data = try Self.encode(current, format: format, quality: quality)
                }
                // Then fewer pixels: the area scaled by the overshoot, a little more each time.
                var rounds = 0
                while data.count > limit {
                    rounds += 1
                    let scale = (Double(limit) / Double(data.count)).squareRoot() * 0.95
                    var smaller: OpaquePointer?
                    guard rounds <= 8, gg_vips_width(current) > 16, gg_vips_scale(current, scale, &smaller) == 0,
                        let next = smaller
                    else {
                        throw GenGateError(
                            .invalidImage,
                            "the image cannot be brought under \(limit / 1024) KB (it is \(data.count / 1024) KB at its smallest)"
                        )
                    }
                    gg_vips_release(current)
                    current = next
                    data = try Self.encode(current, format: format, quality: quality)
                }
            }
            let info = ImageInfo(
                format: format, width: Int(gg_vips_width(current)), height: Int(gg_vips_height(current)),
                bytes: data.count, sha256: Digest.sha256Hex(data))
            return Processed(data: data, info: info)
        }
    }

    static func encode(_ image: OpaquePointer, format: ImageFormat, quality: Int) throws -> Data {
        let code: Int32
        switch format {
        case .jpeg: code = Int32(GG_FORMAT_JPEG)
        case .png, .gif: code = Int32(GG_FORMAT_PNG)
        case .webp: code = Int32(GG_FORMAT_WEBP)
        }
        var buffer: UnsafeMutableRawPointer?
        var length = 0
        guard gg_vips_encode(image, code, Int32(quality), &buffer, &length) == 0, let buffer else {
            throw GenGateError(.invalidImage, "the image cannot be encoded as \(format.rawValue) (\(lastError()))")
        }
        defer { gg_vips_free(buffer) }
        return Data(bytes: buffer, count: length)
    }

    /// The format `file`'s first bytes say it is; `invalid_image` when not one GenGate takes.
    public static func sniff(_ file: URL) async throws -> ImageFormat {
        let head: [UInt8] = try await NIOThreadPool.singleton.runIfActive {
            let handle = try FileHandle(forReadingFrom: file)
            defer { try? handle.close() }
            return Array(try handle.read(upToCount: ContentSniffer.headLength) ?? Data())
        }
        return try format(of: head)
    }

    /// The format bytes beginning with `head` are, if one GenGate takes.
    public static func format(of head: [UInt8]) throws -> ImageFormat {
        if head.isEmpty { throw GenGateError(.invalidImage, "the image is empty") }
        if let type = ContentSniffer.format(of: head), let format = ImageFormat(contentType: type) {
            return format
        }
        let seen = ContentSniffer.format(of: head).map { "its bytes are \($0)" } ?? "its bytes are no format it knows"
        throw GenGateError(.invalidImage, "not a PNG, JPEG, WebP or GIF image: \(seen)")
    }

    /// Runs `work` on the pool once a decoding slot is free.
    private func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        await slots.acquire("images")
        defer { slots.release("images") }
        try Task.checkCancellation()
        return try await pool.runIfActive(work)
    }

    /// What libvips last said went wrong, without file paths: its error buffer is one for the
    /// process, so with images processed side by side it may hold another image's words, and a
    /// path would name another caller's file.
    static func lastError() -> String {
        guard let text = gg_vips_error() else { return "no reason given" }
        defer { gg_vips_free(text) }
        let message = String(cString: text).split(separator: "\n").map {
            $0.split(separator: " ").map { $0.contains("/") ? "<file>" : String($0) }.joined(separator: " ")
                .trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }.prefix(2).joined(separator: "; ")
        return message.isEmpty ? "no reason given" : String(message.prefix(300))
    }
}
