import Foundation
import GenGateCore
import GenGateImageInputs
import GenGateImages
import GenGateJobs
import GenGateObjects
import GenGateRuntime
import GenGateStore
import HTTPTypes
import Hummingbird
import NIOCore

/// Input images: `POST /v1/uploads` (the raw bytes as the body, streamed to a file and hashed as
/// they come, checked whole, stored once per content), and the signed links providers fetch
/// preprocessed images by when objects are local (`GET /inputs/<day>/<name>`). Data URLs in
/// submissions become uploads here too.
struct UploadRoutes: Sendable {
    let environment: ServiceEnvironment
    let processor: ImageProcessor
    let inputs: InputObjects
    let links: InputLinks?
    let fileIO = FileIO()

    var config: GenGateConfig.Images { environment.config.images }

    func register(on group: RouterGroup<GateContext>, router: Router<GateContext>) {
        group.post("uploads") { request, context in try await upload(request, context) }
        router.get("inputs/:day/:name") { request, context in try await linked(request, context) }
    }

    /// 201 `{id, format, width, height, bytes, sha256, expires_at}`; 413 past
    /// `images.max_upload_bytes` (told as soon as the body goes past it); 400 `invalid_image` for
    /// bytes that are not a whole PNG, JPEG, WebP or GIF, whatever the declared type.
    func upload(_ request: Request, _ context: GateContext) async throws -> Response {
        let key = try context.requireKey()
        let limit = config.maxUploadBytes
        context.body.markRead()
        var iterator = request.body.makeAsyncIterator()
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            try await RequestBodyReader.drainIfClosing(request, &iterator)
            throw APIError.payloadTooLarge(limit: limit)
        }
        let writer = try StreamedFile(file: try environment.objects.scratchFile(), limit: limit)
        let bytes: Int
        let sha256: String
        do {
            while let chunk = try await iterator.next() { try await writer.append(chunk) }
            (bytes, sha256) = try await writer.finish()
        } catch is StreamedFile.TooLarge {
            writer.discard()
            try await RequestBodyReader.drainIfClosing(request, &iterator)
            throw APIError.payloadTooLarge(limit: limit)
        } catch {
            writer.discard()
            throw error
        }
        guard bytes > 0 else {
            try? FileManager.default.removeItem(at: writer.file)
            throw APIError(.invalidImage, "the upload is empty; send the image's bytes as the body")
        }
        let upload = try await store(file: writer.file, bytes: bytes, sha256: sha256, owner: key.id, path: "body")
        return JSONResponse.make(status: .created, Self.view(upload))
    }

    /// Checks the image in `file` (consumed) and keeps it as an upload of `owner`. `path` names the
    /// image in errors.
    func store(file: URL, bytes: Int, sha256: String, owner: String, path: String) async throws -> Upload {
        let info: ImageInfo
        do {
            info = try await processor.inspect(file: file, bytes: bytes, sha256: sha256)
        } catch let error as GenGateError {
            try? FileManager.default.removeItem(at: file)
            throw APIError(error.code, error.message, details: [.init(path: path, message: error.message)])
        } catch {
            try? FileManager.default.removeItem(at: file)  // cancelled (the client went away), or I/O
            throw error
        }
        let now = Date()
        let placed: (key: String, expiresAt: Date)
        do {
            placed = try await inputs.put(file: file, sha256: sha256, format: info.format, now: now)
        } catch {
            try? FileManager.default.removeItem(at: file)
            throw error
        }
        let upload = Upload(
            id: Identifier.make("upl", at: now), ownerKeyID: owner, objectKey: placed.key, info: info,
            createdAt: now, expiresAt: placed.expiresAt)
        try await environment.store.insertUpload(upload)
        return upload
    }

    static func view(_ upload: Upload) -> [String: JSONValue] {
        [
            "id": .string(upload.id), "format": .string(upload.info.format.rawValue),
            "content_type": .string(upload.info.format.contentType), "width": .number(Double(upload.info.width)),
            "height": .number(Double(upload.info.height)), "frames": .number(Double(upload.info.frames)),
            "bytes": .number(Double(upload.info.bytes)), "sha256": .string(upload.info.sha256),
            "created_at": .string(Timestamp.format(upload.createdAt)),
            "expires_at": .string(Timestamp.format(upload.expiresAt)),
        ]
    }

    /// A preprocessed input image, for the provider a signed link was handed to.
    func linked(_ request: Request, _ context: GateContext) async throws -> Response {
        let query = request.uri.queryParameters
        guard let links, let day = context.parameters.get("day"), let name = context.parameters.get("name"),
            day.count == 10, name.count <= 80, !name.hasPrefix("."),
            links.isValid(
                key: "inputs/\(day)/\(name)", expires: query.get("expires"), signature: query.get("signature"))
        else {
            throw APIError(.forbidden, "this link is not valid, or it expired")
        }
        let key = "inputs/\(day)/\(name)"
        guard let file = try await environment.objects.localFile(key: key),
            let format = ImageFormat.allCases.first(where: {
                name.hasSuffix(".\(ObjectKey.fileExtension(for: $0.contentType))")
            })
        else {
            throw APIError.notFound("no such input image (it may have expired)")
        }
        return Response(
            status: .ok,
            headers: [
                .contentType: format.contentType, .contentLength: "\(file.size)", .cacheControl: "private, max-age=300",
            ],
            body: try await fileIO.loadFile(path: file.path, context: context))
    }
}
