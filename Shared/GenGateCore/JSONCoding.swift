import Foundation

/// The JSON conventions of every GenGate message, record and response: snake_case keys are
/// spelled out in CodingKeys, dates are ISO 8601 with milliseconds in UTC.
public enum JSONCoding {
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(Timestamp.format(date))
        }
        encoder.outputFormatting =
            pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = Timestamp.parse(text) else {
                throw DecodingError.dataCorruptedError(
                    in: container, debugDescription: "not an ISO 8601 timestamp: \(text)")
            }
            return date
        }
        return decoder
    }

    /// Encodes a value that cannot fail to encode (plain Codable data) to bytes.
    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        try encoder().encode(value)
    }
}

/// ISO 8601 timestamps with millisecond precision, always in UTC.
public enum Timestamp {
    public static func format(_ date: Date) -> String {
        // Round to whole milliseconds first: formatting the fraction directly truncates, so
        // x.123 stored as x.12299… would print as .122.
        let milliseconds = Int64((date.timeIntervalSince1970 * 1_000).rounded())
        let (seconds, fraction) = milliseconds.quotientAndRemainder(dividingBy: 1_000)
        let (wholeSeconds, millis) = fraction < 0 ? (seconds - 1, fraction + 1_000) : (seconds, fraction)
        let base = Date(timeIntervalSince1970: Double(wholeSeconds))
            .formatted(
                .iso8601.year().month().day().time(includingFractionalSeconds: false).timeZone(separator: .omitted))
        return base.dropLast() + String(format: ".%03dZ", Int(millis))
    }

    public static func parse(_ text: String) -> Date? {
        if let date = try? Date(
            text,
            strategy: .iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted)
        ) {
            return date
        }
        return try? Date(text, strategy: .iso8601)
    }
}
