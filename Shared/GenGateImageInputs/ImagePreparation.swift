import Foundation
import GenGateCore
import GenGateImages
import GenGateJobs
import GenGateObjects
import GenGateProviders
import GenGateStore

/// Prepares a job's input images for the provider about to be called, in the process that
/// submits: each is found (an upload, or fetched from its URL), checked (its bytes sniffed and
/// decoded whole), run through the request's pipeline or the model's, checked against the
/// model's limits as it will be sent, and put in the form the provider takes. Nothing here
/// calls a provider: an image that fails fails the job before any provider is paid.
///
/// A stop here costs nothing: no attempt is on record yet, so the job is prepared again by
/// whoever takes it next (the same bytes make the same objects).
public struct ImagePreparation: InputImagePreparer {
    public let processor: ImageProcessor
    public let fetcher: ImageFetcher
    public let inputs: InputObjects
    /// Signs GenGate links to input objects, for providers that take URLs when objects are local;
    /// nil when GenGate has no public URL.
    public let links: InputLinks?

    public init(processor: ImageProcessor, fetcher: ImageFetcher, inputs: InputObjects, links: InputLinks?) {
        self.processor = processor
        self.fetcher = fetcher
        self.inputs = inputs
        self.links = links
    }

    var objects: any ObjectStore { inputs.objects }

    /// The images of `generation` as `model` takes them, and what was done to each.
    public func prepare(_ generation: Generation, model: ModelInfo) async throws -> (
        images: [ProviderImage], records: [PreparedInput]
    ) {
        let now = Date()
        let sources = generation.request.images ?? []
        guard !sources.isEmpty else { return ([], []) }
        guard let intake = model.images else {
            throw GenGateError(.invalidImage, "\(model.id) takes no input images", retryable: false)
        }
        guard sources.count <= intake.maxImages else {
            throw GenGateError(
                .invalidImage, "\(model.id) takes at most \(intake.maxImages) input images, got \(sources.count)",
                retryable: false)
        }
        let pipeline = generation.request.preprocess ?? intake.pipeline
        var images: [ProviderImage] = []
        var records: [PreparedInput] = []
        for (index, source) in sources.enumerated() {
            do {
                let (image, record) = try await prepare(
                    source, index: index, generation: generation, model: model, intake: intake, pipeline: pipeline,
                    now: now)
                images.append(image)
                records.append(record)
            } catch let error as GenGateError {
                var error = error
                error.message = "images[\(index)]: \(error.message)"
                throw error
            }
        }
        return (images, records)
    }

    func prepare(
        _ source: ImageInput, index: Int, generation: Generation, model: ModelInfo, intake: ImageIntake,
        pipeline: ImagePipeline, now: Date
    ) async throws -> (ProviderImage, PreparedInput) {
        let (file, scratch, original) = try await original(source, owner: generation.ownerKeyID, now: now)
        defer { if scratch { try? FileManager.default.removeItem(at: file) } }
        // In a format the provider takes, and no larger than the model's largest side (the bound
        // on what one prepared image holds in memory).
        let pipeline = try intake.fitted(pipeline, input: original).get()
        let made = try await processor.process(file: file, input: original.format, pipeline: pipeline)
        let problems = intake.limits.problems(made.info)
        guard problems.isEmpty else {
            throw GenGateError(
                .invalidImage,
                "as prepared for \(model.id) (\(made.info.format.rawValue), \(made.info.width)×\(made.info.height) px, \(made.info.bytes) bytes) it "
                    + problems.joined(separator: "; "), retryable: false)
        }
        let type = made.info.format.contentType
        let fitsInline = intake.inlineLimitBytes.map { made.data.count <= $0 } ?? true
        let canLink =
            objects.publicURL(key: "k") != nil || objects.temporaryURL(key: "k", now: now) != nil
            || links != nil
        // Inline forms unless the image is over the model's inline size and a URL can be given.
        let inline = fitsInline || !intake.delivery.contains(.url) || !canLink
        let chosen = intake.delivery.first { $0 == .url ? canLink : inline }
        guard let delivery = chosen else {
            throw GenGateError(
                .invalidImage,
                "\(model.provider) takes images only as URLs, and this deployment has none to give: configure S3 storage or http.public_url",
                retryable: false)
        }
        let image: ProviderImage
        switch delivery {
        case .base64:
            image = ProviderImage(delivery: .base64, contentType: type, text: made.data.base64EncodedString())
        case .dataURL:
            image = ProviderImage(
                delivery: .dataURL, contentType: type, text: "data:\(type);base64,\(made.data.base64EncodedString())")
        case .multipart:
            image = ProviderImage(delivery: .multipart, contentType: type, text: "", data: made.data)
        case .url:
            let (key, expiresAt) = try await inputs.put(
                data: made.data, sha256: made.info.sha256, format: made.info.format, now: now)
            let url =
                objects.publicURL(key: key) ?? objects.temporaryURL(key: key, now: now)
                ?? links!.link(key: key, until: min(expiresAt, now.addingTimeInterval(links!.lifetime)))
            image = ProviderImage(delivery: .url, contentType: type, text: url)
        }
        let record = PreparedInput(
            index: index, source: source, original: original, processed: made.info, pipeline: pipeline,
            delivery: delivery, provider: model.provider)
        return (image, record)
    }

    /// The input's original bytes in a local file (and whether it is a scratch copy to remove),
    /// checked whole.
    func original(_ source: ImageInput, owner: String, now: Date) async throws -> (URL, Bool, ImageInfo) {
        switch source {
        case .upload(let id):
            guard let upload = try await inputs.store.upload(id: id, now: now), upload.ownerKeyID == owner else {
                throw GenGateError(.invalidImage, "upload \(id) is gone (uploads are kept \(inputs.keepDays) days)")
            }
            guard let (file, scratch) = try await inputs.localCopy(key: upload.objectKey) else {
                throw GenGateError(.invalidImage, "upload \(id) is gone from object storage")
            }
            return (file, scratch, upload.info)
        case .url(let url):
            let file = try objects.scratchFile()
            do {
                let (bytes, sha256) = try await fetcher.fetch(url, to: file)
                let info = try await processor.inspect(file: file, bytes: bytes, sha256: sha256)
                return (file, true, info)
            } catch {
                try? FileManager.default.removeItem(at: file)
                throw error
            }
        case .output(let parentID, let index):
            // A chain: another job's output, there once that job completed.
            guard let parent = try await inputs.store.generation(id: parentID), parent.ownerKeyID == owner,
                parent.status == .completed,
                let output = parent.outputs.first(where: { $0.index == index && $0.isStored }),
                let key = output.objectKey
            else {
                throw GenGateError(
                    .inputUnavailable, "output \(index) of \(parentID) is not there", retryable: false)
            }
            guard let (file, scratch) = try await inputs.localCopy(key: key) else {
                throw GenGateError(.inputUnavailable, "output \(index) of \(parentID) is gone from object storage")
            }
            do {
                // Its size and hash as stored with the output.
                let info = try await processor.inspect(
                    file: file, bytes: output.bytes ?? 0, sha256: output.sha256 ?? "")
                return (file, scratch, info)
            } catch {
                if scratch { try? FileManager.default.removeItem(at: file) }
                throw error
            }
        }
    }
}

/// Signed, short-lived GenGate links to input objects (`/inputs/<day>/<name>`), for providers that
/// fetch images by URL when objects are stored locally: an HMAC of the key and the expiry under a
/// key derived from the master key, checked by api-ingress.
public struct InputLinks: Sendable {
    public let box: SecretBox
    public let baseURL: String
    public let lifetime: TimeInterval

    public init(box: SecretBox, baseURL: String, lifetime: TimeInterval) {
        self.box = box
        self.baseURL = baseURL
        self.lifetime = lifetime
    }

    public func link(key: String, until: Date) -> String {
        let expires = Int(until.timeIntervalSince1970)
        return "\(baseURL)/\(key)?expires=\(expires)&signature=\(signature(key, expires))"
    }

    func signature(_ key: String, _ expires: Int) -> String {
        SignedLink.signature(box: box, purpose: "input links", message: "\(key)/\(expires)")
    }

    /// Whether a link's parts are one this deployment made and it has not expired.
    public func isValid(key: String, expires: String?, signature given: String?, now: Date = Date()) -> Bool {
        guard let expires = expires.flatMap(Int.init), let given, Double(expires) >= now.timeIntervalSince1970 else {
            return false
        }
        return Digest.constantTimeEqual(given, signature(key, expires))
    }
}
