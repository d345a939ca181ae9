import Foundation

/// `multipart/form-data` bodies (RFC 7578), for the providers that take files that way (OpenAI's
/// image edits): built here, and read back by the simulators. Written by hand: no library this
/// package depends on builds or reads them.
public struct Multipart: Sendable {
    /// One part: a field's value, or a file with its name and type.
    public struct Part: Sendable, Equatable {
        public var name: String
        public var filename: String?
        public var contentType: String?
        public var data: Data

        public init(name: String, filename: String? = nil, contentType: String? = nil, data: Data) {
            self.name = name
            self.filename = filename
            self.contentType = contentType
            self.data = data
        }

        public var text: String { String(decoding: data, as: UTF8.self) }
    }

    public var parts: [Part]
    public let boundary: String

    public init(parts: [Part] = [], boundary: String = "gengate-" + UUID().uuidString) {
        self.parts = parts
        self.boundary = boundary
    }

    public var contentType: String { "multipart/form-data; boundary=\(boundary)" }

    /// Names and file names are quoted as browsers do: `"`, backslashes and line ends escaped.
    static func quoted(_ text: String) -> String {
        let escaped = text.replacingOccurrences(of: "\\", with: "%5C").replacingOccurrences(of: "\"", with: "%22")
            .replacingOccurrences(of: "\r", with: "%0D").replacingOccurrences(of: "\n", with: "%0A")
        return "\"" + escaped + "\""
    }

    public var body: Data {
        var data = Data()
        for part in parts {
            var head = "--\(boundary)\r\nContent-Disposition: form-data; name=\(Self.quoted(part.name))"
            if let filename = part.filename { head += "; filename=\(Self.quoted(filename))" }
            head += "\r\n"
            if let type = part.contentType { head += "Content-Type: \(type)\r\n" }
            data.append(contentsOf: Array((head + "\r\n").utf8))
            data.append(part.data)
            data.append(contentsOf: Array("\r\n".utf8))
        }
        data.append(contentsOf: Array("--\(boundary)--\r\n".utf8))
        return data
    }

    /// The parts of `body`, sent with `contentType`; nil when it is not a well-formed
    /// `multipart/form-data` body.
    public static func parse(_ body: Data, contentType: String) -> [Part]? {
        guard contentType.lowercased().hasPrefix("multipart/form-data"),
            let range = contentType.range(of: "boundary=")
        else { return nil }
        var boundary = String(contentType[range.upperBound...])
        if let semicolon = boundary.firstIndex(of: ";") { boundary = String(boundary[..<semicolon]) }
        boundary = boundary.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
        guard !boundary.isEmpty else { return nil }
        let delimiter = Data("--\(boundary)".utf8)
        let bytes = body
        var parts: [Part] = []
        guard var cursor = bytes.range(of: delimiter)?.upperBound else { return nil }
        while true {
            // After a delimiter: "--" ends the body, "\r\n" begins a part.
            if bytes[cursor...].starts(with: Data("--".utf8)) { return parts }
            guard bytes[cursor...].starts(with: Data("\r\n".utf8)) else { return nil }
            cursor += 2
            guard let headEnd = bytes.range(of: Data("\r\n\r\n".utf8), in: cursor..<bytes.endIndex) else { return nil }
            let head = String(decoding: bytes[cursor..<headEnd.lowerBound], as: UTF8.self)
            let contentStart = headEnd.upperBound
            guard
                let next = bytes.range(of: Data("\r\n".utf8) + delimiter, in: contentStart..<bytes.endIndex)
            else { return nil }
            var name: String?
            var filename: String?
            var type: String?
            for line in head.components(separatedBy: "\r\n") {
                let lower = line.lowercased()
                if lower.hasPrefix("content-disposition:") {
                    name = value(of: "name", in: line)
                    filename = value(of: "filename", in: line)
                } else if lower.hasPrefix("content-type:") {
                    type = line.dropFirst("content-type:".count).trimmingCharacters(in: .whitespaces)
                }
            }
            guard let name else { return nil }
            parts.append(
                Part(
                    name: name, filename: filename, contentType: type, data: Data(bytes[contentStart..<next.lowerBound])
                ))
            cursor = next.upperBound
        }
    }

    /// A quoted parameter of a header line (`name="image"`).
    static func value(of parameter: String, in line: String) -> String? {
        for piece in line.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            guard piece.lowercased().hasPrefix(parameter + "=") else { continue }
            return String(piece.dropFirst(parameter.count + 1)).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
        return nil
    }
}
