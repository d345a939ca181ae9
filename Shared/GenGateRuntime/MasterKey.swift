import Foundation
import GenGateCore

#if canImport(Glibc)
    import Glibc
#endif

/// The key that seals the secrets GenGate keeps in its store (webhook signing secrets), so the
/// store alone reveals none. From `GENGATE_MASTER_KEY` (32 bytes in base64; the same on every host
/// that shares a store), else the data dir's `master.key` (mode 0600), made on first use.
public enum MasterKey {
    public static let variable = "GENGATE_MASTER_KEY"

    public static func load(config: GenGateConfig, environment: [String: String] = ProcessInfo.processInfo.environment)
        throws -> SecretBox
    {
        if let text = environment[variable], !text.isEmpty {
            guard let data = Data(base64Encoded: text.trimmingCharacters(in: .whitespacesAndNewlines)),
                data.count == 32
            else {
                throw ConfigError("\(variable) must be 32 bytes in base64 (openssl rand -base64 32)")
            }
            return try SecretBox(key: Array(data))
        }
        let path = config.dataDirectory.appendingPathComponent("master.key").path
        try FileManager.default.createDirectory(at: config.dataDirectory, withIntermediateDirectories: true)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        if fd >= 0 {
            defer { close(fd) }
            let bytes = Array((Data(SecretBox.newKey()).base64EncodedString() + "\n").utf8)
            guard write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else {
                throw ConfigError("cannot write \(path): errno \(errno)")
            }
        } else if errno != EEXIST {
            throw ConfigError("cannot create \(path): errno \(errno)")
        }
        // Another process may be writing it this moment: give it a little time.
        for _ in 0..<50 {
            if let text = try? String(contentsOfFile: path, encoding: .utf8),
                let data = Data(base64Encoded: text.trimmingCharacters(in: .whitespacesAndNewlines)), data.count == 32
            {
                return try SecretBox(key: Array(data))
            }
            usleep(20_000)
        }
        throw ConfigError("\(path) does not hold a master key (32 bytes in base64); restore it or set \(variable)")
    }
}
