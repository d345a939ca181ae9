import GenGateCore
import GenGateProviders

/// What prepares a job's input images for the provider about to be called (`ImagePreparation`,
/// in GenGateImageInputs, with libvips): the processes that submit jobs with images have one,
/// and the others do not link libvips at all.
public protocol InputImagePreparer: Sendable {
    /// The images of `generation` as `model` takes them, and what was done to each. Throws
    /// `GenGateError` (`invalid_image`, …) for an image that cannot be used.
    func prepare(_ generation: Generation, model: ModelInfo) async throws -> (
        images: [ProviderImage], records: [PreparedInput]
    )
}
