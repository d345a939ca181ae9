import Foundation
import GenGateCore
import Logging

/// Sets up swift-log for a service: every line names the service and instance; `json` writes
/// one JSON object per line, `human` a readable line. Logs go to standard error.
public enum LogSetup {
    public static func bootstrap(config: GenGateConfig, service: String, instance: String) {
        let level = Logger.Level(rawValue: config.log.level) ?? .info
        let json = config.log.format == "json"
        LoggingSystem.bootstrap { label in
            var handler = LineLogHandler(label: label, service: service, instance: instance, json: json)
            handler.logLevel = level
            return handler
        }
    }
}

/// Writes one line per record to standard error, as JSON or as text.
/// Hand-written because swift-log ships no JSON handler and the available packages add none.
struct LineLogHandler: LogHandler {
    let label: String
    let service: String
    let instance: String
    let json: Bool
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let time = Timestamp.format(Date())
        let line: String
        if json {
            var object: [String: Any] = [
                "ts": time, "level": event.level.rawValue, "service": service, "instance": instance,
                "msg": event.message.description,
            ]
            for (key, value) in merged { object[key] = Self.plain(value) }
            let data =
                (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
                ?? Data()
            line = String(decoding: data, as: UTF8.self)
        } else {
            let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            line =
                "\(time) \(event.level.rawValue.uppercased()) \(instance): \(event.message)\(fields.isEmpty ? "" : " " + fields)"
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    static func plain(_ value: Logger.MetadataValue) -> Any {
        switch value {
        case .string(let text): return text
        case .stringConvertible(let convertible): return convertible.description
        case .array(let values): return values.map(plain)
        case .dictionary(let values): return values.mapValues(plain)
        }
    }
}
