import GenGateCore
import GenGateImages
import GenGateRuntime

extension ServiceEnvironment {
    /// The image work of a process that handles images (checking uploads, preparing inputs),
    /// bounded by `images.concurrency`: made once a process and shared.
    public func imageProcessor() -> ImageProcessor {
        ImageProcessor(concurrency: config.images.concurrency, maxPixels: config.images.maxPixels)
    }

    /// Where input images are kept.
    public var inputObjects: InputObjects {
        InputObjects(store: store, objects: objects, keepDays: config.images.keepDays)
    }

    /// How this process prepares input images for providers, with `processor`. Providers that
    /// fetch images by URL get presigned object-store URLs, or, with local storage and a public
    /// URL configured, signed GenGate links.
    public func imagePreparation(processor: ImageProcessor) -> ImagePreparation {
        let links =
            config.http.publicUrl == nil
            ? nil
            : (try? MasterKey.load(config: config)).map {
                InputLinks(box: $0, baseURL: config.publicBaseURL, lifetime: config.images.linkLifetimeSeconds)
            }
        return ImagePreparation(
            processor: processor,
            fetcher: ImageFetcher(
                policy: OutboundURLPolicy(allowPrivate: config.images.allowPrivateUrls),
                timeoutSeconds: config.images.fetchTimeoutSeconds, maxBytes: config.images.maxUploadBytes),
            inputs: inputObjects, links: links)
    }
}
