import Foundation
import GenGateCore
import GenGateProviders
import GenGateStore
import NIOPosix

extension GenerationRoutes {
    /// The other requests of a batch, for images that name one of their outputs: each one's id
    /// (assigned before the batch is committed) and what was asked.
    struct Siblings {
        var ids: [String]
        var requests: [SubmissionValidator.Validated]
    }

    /// The request's input images made into references the job can keep: a `data:` URL's bytes
    /// checked and stored as an upload of the caller's, an upload id checked to be the caller's
    /// and not expired, another job's output checked to be the caller's job's, one that makes
    /// images, and not failed (the job then waits for it if it has not completed). Each image
    /// whose size is known is held to the model's limits as its pipeline will make it (bytes are
    /// checked by the dispatcher, on the image as prepared). Errors name the image
    /// (`images[1]`) under `path`. `position`: the request's place in its batch (`siblings`).
    func resolveImages(
        _ validated: SubmissionValidator.Validated, owner: String, path: String = "", position: Int? = nil,
        siblings: Siblings? = nil
    ) async throws -> SubmissionValidator.Validated {
        guard !validated.images.isEmpty else { return validated }
        var resolved = validated
        var inputs: [ImageInput] = []
        var basis: [ImageInput] = []
        var details: [APIError.Detail] = []
        var unavailable: [APIError.Detail] = []
        var uploadsUsed: [(String, Upload)] = []
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
                uploadsUsed.append((here, upload))
                inputs.append(.upload(id))
                basis.append(.upload(id))
                info = upload.info
            case .input(.output(let parent, let output)):
                switch try await parentProblem(parent, output: output, owner: owner) {
                case .none:
                    break
                case .invalid(let message):
                    details.append(.init(path: here, message: message))
                    continue
                case .unavailable(let message):
                    unavailable.append(.init(path: here, message: message))
                    continue
                case .notYet(let parentDeadline):
                    if resolved.waitsFor == nil {
                        resolved.waitsFor = parent
                        resolved.waitingDeadline = parentDeadline.addingTimeInterval(
                            Double(validated.request.deadlineSeconds ?? 3_600))
                    }
                }
                inputs.append(.output(generation: parent, index: output))
                basis.append(.output(generation: parent, index: output))
            case .sibling(let request, let output):
                guard let siblings, let position else {
                    details.append(
                        .init(path: here, message: "{\"request\": i} names another request of a batch; use it in one"))
                    continue
                }
                guard request < position else {
                    details.append(
                        .init(
                            path: here,
                            message: "must name an earlier request of the batch (its position, below \(position))"))
                    continue
                }
                let sibling = siblings.requests[request]
                if let problem = Self.outputProblem(
                    kind: sibling.model.kind, n: sibling.request.n, output: output, what: "request \(request)")
                {
                    details.append(.init(path: here, message: problem))
                    continue
                }
                let parent = siblings.ids[request]
                inputs.append(.output(generation: parent, index: output))
                basis.append(.output(generation: "request \(request)", index: output))
                if resolved.waitsFor == nil { resolved.waitsFor = parent }
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
        // One job's outputs at most: a step waits for one job, and hears at once when it ends.
        let parents = Set(
            inputs.compactMap { input -> String? in
                if case .output(let parent, _) = input { return parent }
                return nil
            })
        if parents.count > 1 {
            details.append(
                .init(
                    path: "\(path)images", message: "may take outputs of one other job, not \(parents.count)"))
        }
        // Uploads must be kept past the job's deadline (and an hour more), counted from when it
        // can start (after the job it waits for), so they are there whenever it is prepared,
        // retries included; in a batch, whose jobs may wait their turn, a day more.
        let starts = resolved.waitingDeadline ?? now
        let waits = siblings == nil ? 3_600.0 : 86_400.0
        let needed = starts.addingTimeInterval(Double(validated.request.deadlineSeconds ?? 3_600) + waits)
        for (here, upload) in uploadsUsed where upload.expiresAt < needed {
            details.append(
                .init(
                    path: here,
                    message:
                        "upload \(upload.id) expires at \(Timestamp.format(upload.expiresAt)), before this job could end; upload the image again"
                ))
        }
        guard details.isEmpty else {
            let summary = details.map { "\($0.path): \($0.message)" }.joined(separator: "; ")
            throw APIError(.invalidImage, "unusable input image: \(summary)", details: details)
        }
        guard unavailable.isEmpty else {
            let summary = unavailable.map { "\($0.path): \($0.message)" }.joined(separator: "; ")
            throw APIError(.inputUnavailable, "input image not available: \(summary)", details: unavailable)
        }
        resolved.request.images = inputs
        var hashed = resolved.request
        hashed.images = basis
        resolved.hashBasis = hashed
        return resolved
    }

    enum ParentProblem {
        case none
        /// To come, by the job's deadline.
        case notYet(Date)
        case invalid(String)
        case unavailable(String)
    }

    /// Whether output `output` of the caller's job `parent` can be an input: there (`none`), to
    /// come (`notYet`), never (`unavailable`: the job failed, was cancelled, or completed without
    /// it), or not a job's image output at all (`invalid`).
    func parentProblem(_ parent: String, output: Int, owner: String) async throws -> ParentProblem {
        guard let job = try await store.generation(id: parent), job.ownerKeyID == owner else {
            return .invalid("no generation \(parent) for this key")
        }
        let kind = environment.providers.knownModel(job.model)?.kind ?? .image
        if let problem = Self.outputProblem(kind: kind, n: job.request.n, output: output, what: parent) {
            return .invalid(problem)
        }
        switch job.status {
        case .completed:
            guard job.outputs.contains(where: { $0.index == output && $0.isStored }) else {
                return .unavailable("\(parent) completed without output \(output)")
            }
            return .none
        case .failed, .cancelled:
            let why = job.error.map { ": \($0.code.rawValue), \($0.message)" } ?? ""
            return .unavailable("\(parent) \(job.status.rawValue)\(why)")
        default:
            return .notYet(job.deadlineAt)
        }
    }

    /// Why output `output` of a job of `kind` asking `n` outputs cannot be an input image, or nil.
    static func outputProblem(kind: ModelInfo.Kind, n: Int, output: Int, what: String) -> String? {
        guard kind == .image else { return "\(what) makes \(kind.rawValue), not images" }
        guard output < n else { return "\(what) makes \(n) output(s); there is no output \(output)" }
        return nil
    }
}
