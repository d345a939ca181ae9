import GenGateCore
import GenGateImages
import GenGateRuntime

extension ServiceEnvironment {
    /// The image work of a process that handles images (checking uploads, preparing inputs),
    /// bounded by `images.concurrency`. Each call makes a processor with its own threads and
    /// bound: a process makes one and shares it.
    public func makeImageProcessor() -> ImageProcessor {
        ImageProcessor(concurrency: config.images.concurrency, maxPixels: config.images.maxPixels)
    }

    /// Where input images are kept.
    public var inputObjects: InputObjects {
        InputObjects(store: store, objects: objects, keepDays: config.images.keepDays)
    }

    /// Signed GenGate links to input objects, with `box` (the master key's).
    public func inputLinks(box: SecretBox) -> InputLinks {
        InputLinks(box: box, baseURL: config.publicBaseURL, lifetime: config.images.linkLifetimeSeconds)
    }

    /// How this process prepares input images for providers, with `processor`. Providers that
    /// fetch images by URL get presigned object-store URLs, or, with local storage and a public
    /// URL configured, signed GenGate links (so the master key must load, as api-ingress needs
    /// it too: a dispatcher that cannot sign them says so at start rather than fail jobs).
    public func imagePreparation(processor: ImageProcessor) throws -> ImagePreparation {
        let links =
            config.http.publicUrl == nil
            ? nil
            : inputLinks(box: try MasterKey.load(config: config))
        return ImagePreparation(
            processor: processor,
            fetcher: ImageFetcher(
                policy: OutboundURLPolicy(allowPrivate: config.images.allowPrivateUrls),
                timeoutSeconds: config.images.fetchTimeoutSeconds, maxBytes: config.images.maxUploadBytes),
            inputs: inputObjects, links: links)
    }
}
