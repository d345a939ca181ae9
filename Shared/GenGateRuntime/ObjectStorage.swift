import Foundation
import GenGateCore
import GenGateObjects

extension GenGateConfig {
    /// The object store this configuration names: an S3-compatible service when
    /// `objects.s3.bucket` is set (credentials from `environment`), else the local directory.
    public func objectStore(environment: [String: String] = ProcessInfo.processInfo.environment) throws
        -> any ObjectStore
    {
        guard let settings = try s3Settings(environment: environment) else {
            return try LocalObjectStore(root: objectsDirectory)
        }
        do {
            return try S3ObjectStore(settings: settings, scratch: objectsDirectory.appendingPathComponent(".incoming"))
        } catch let error as GenGateError {
            throw ConfigError("objects.s3: \(error.message)")
        }
    }

    /// The S3 settings, or nil when outputs stay local.
    public func s3Settings(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> S3Settings? {
        let s3 = objects.s3
        guard let bucket = s3.bucket, !bucket.isEmpty else { return nil }
        guard let credentials = AWSCredentials.fromEnvironment(environment) else {
            throw ConfigError(
                "objects.s3.bucket (GENGATE_S3_BUCKET) is set, but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not")
        }
        let endpoint = s3.endpoint.flatMap { $0.isEmpty ? nil : $0 } ?? S3Settings.awsEndpoint(region: s3.region)
        return S3Settings(
            endpoint: endpoint, bucket: bucket, region: s3.region, pathStyle: s3.pathStyle,
            publicURL: s3.publicUrl.flatMap { $0.isEmpty ? nil : $0 },
            urlEndpoint: s3.urlEndpoint.flatMap { $0.isEmpty ? nil : $0 }, urlLifetime: s3.urlLifetimeSeconds,
            partSize: s3.partSizeMib << 20, requestTimeout: s3.requestTimeoutSeconds,
            memory: max(s3.memoryMib, s3.partSizeMib) << 20,
            credentials: credentials)
    }
}
