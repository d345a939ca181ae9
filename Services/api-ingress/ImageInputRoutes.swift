import Foundation
import GenGateCore
import GenGateProviders
import GenGateStore
import NIOPosix

extension GenerationRoutes {
    /// The request's input images made into references the job can keep: a `data:` URL's bytes
    /// checked and stored as an upload of the caller's, an upload id checked to be the caller's
    /// and not expired. Each image whose size is known is checked against the model's limits as
    /// its pipeline will make it (bytes are checked by the dispatcher, on the image as prepared);
    /// errors name the image (`images[1]`) under `path`.
    func resolveImages(_ validated: SubmissionValidator.Validated, owner: String, path: String = "") async throws
        -> SubmissionValidator.Validated
    {
        guard !validated.images.isEmpty else { return validated }
        var resolved = validated
        var inputs: [ImageInput] = []
        var basis: [ImageInput] = []
        var details: [APIError.Detail] = []
        let now = Date()
        let intake = validated.model.images
        let pipeline = validated.request.preprocess ?? intake?.pipeline ?? ImagePipeline([])
        for (index, given) in validated.images.enumerated() {
            let here = "\(path)images[\(index)]"
            var info: ImageInfo?
            switch given {
            case .inline(let data):
                let file = try environment.objects.scratchFile()
                try await NIOThreadPool.singleton.runIfActive { try data.write(to: file) }
                let upload = try await uploads.store(
                    file: file, bytes: data.count, sha256: Digest.sha256Hex(data), owner: owner, path: here)
                inputs.append(.upload(upload.id))
                basis.append(.upload("sha256:\(upload.info.sha256)"))
                info = upload.info
            case .input(.upload(let id)):
                guard let upload = try await store.upload(id: id, now: now), upload.ownerKeyID == owner else {
                    details.append(
                        .init(
                            path: here,
                            message:
                                "no upload \(id) for this key (uploads are kept \(environment.config.images.keepDays) days)"
                        ))
                    continue
                }
                inputs.append(.upload(id))
                basis.append(.upload(id))
                info = upload.info
            case .input(let other):
                inputs.append(other)
                basis.append(other)
            }
            guard let info, let intake else { continue }
            let (width, height) = pipeline.settings.size(width: info.width, height: info.height)
            var sides = intake.limits
            sides.maxBytes = nil  // the bytes as prepared are known only once prepared
            let problems = sides.problems(
                ImageInfo(format: info.format, width: width, height: height, bytes: 0, sha256: ""))
            if !problems.isEmpty {
                let made = (width, height) == (info.width, info.height) ? "" : " once preprocessed"
                details.append(
                    .init(
                        path: here,
                        message: "as \(validated.model.id) would get it\(made) it " + problems.joined(separator: "; ")))
            }
        }
        guard details.isEmpty else {
            let summary = details.map { "\($0.path): \($0.message)" }.joined(separator: "; ")
            throw APIError(.invalidImage, "unusable input image: \(summary)", details: details)
        }
        resolved.request.images = inputs
        var hashed = resolved.request
        hashed.images = basis
        resolved.hashBasis = hashed
        return resolved
    }
}
