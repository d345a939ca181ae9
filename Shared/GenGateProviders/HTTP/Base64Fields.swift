import Foundation
import GenGateCore

/// Takes the base64 string values of one field name (OpenAI's `b64_json`) out of a JSON answer
/// kept in a file, decoding each into a file of its own as it reads, so images of many
/// megabytes are never held whole; what is left of the answer (a few hundred bytes) is parsed
/// as usual, each taken value replaced by the number of its file. Written by hand: no library
/// this package depends on parses JSON as a stream.
public enum Base64Fields {
    static let chunk = 1 << 16

    public struct Extracted: Sendable {
        /// The answer without the taken values; each one is now a number, its index in `files`.
        public var skeleton: JSONValue
        public var files: [URL]
    }

    /// Reads `answer`, writing each decoded value of `field` into a new file from `newFile`; at
    /// most `maxValues` of them. An empty value is taken for none (`null`).
    public static func extract(field: String, from answer: URL, maxValues: Int = 16, newFile: () throws -> URL) throws
        -> Extracted
    {
        guard let input = InputStream(url: answer) else {
            throw GenGateError(.internalError, "cannot read the provider's answer")
        }
        input.open()
        defer { input.close() }
        var scanner = Scanner(key: Array("\"\(field)\"".utf8))
        var buffer = [UInt8](repeating: 0, count: chunk)
        var files: [URL] = []
        var writer: Base64FileWriter?
        /// Where the skeleton holds the value being taken.
        var mark = 0
        do {
            while true {
                let count = input.read(&buffer, maxLength: buffer.count)
                if count < 0 { throw GenGateError(.internalError, "reading the provider's answer failed") }
                if count == 0 { break }
                for byte in buffer[..<count] {
                    switch scanner.feed(byte) {
                    case .skeleton(let byte):
                        scanner.skeleton.append(byte)
                    case .nothing:
                        break
                    case .valueStarts:
                        guard files.count < maxValues else {
                            throw GenGateError(.providerError, "the provider's answer has more outputs than asked for")
                        }
                        let file = try newFile()
                        writer = try Base64FileWriter(file: file)
                        files.append(file)
                        mark = scanner.skeleton.count
                        scanner.skeleton.append(contentsOf: Array(String(files.count - 1).utf8))
                    case .valueByte(let byte):
                        try writer?.append(byte)
                    case .valueEnds:
                        let written = try writer?.finish() ?? 0
                        writer = nil
                        if written == 0, let empty = files.popLast() {
                            // `"b64_json": ""` beside a `url` (some compatible servers): absent.
                            try? FileManager.default.removeItem(at: empty)
                            scanner.skeleton.removeSubrange(mark...)
                            scanner.skeleton.append(contentsOf: Array("null".utf8))
                        }
                    }
                }
                if scanner.skeleton.count > 8 << 20 {
                    throw GenGateError(.providerError, "the provider's answer is too large outside its images")
                }
            }
            guard writer == nil, scanner.state == .outside || scanner.state == .inString(escaped: false) else {
                throw GenGateError(.providerError, "the provider's answer ends in the middle", retryable: true)
            }
            let skeleton = try JSONCoding.decode(JSONValue.self, from: Data(scanner.skeleton))
            return Extracted(skeleton: skeleton, files: files)
        } catch {
            _ = try? writer?.finish()
            for file in files { try? FileManager.default.removeItem(at: file) }
            if let error = error as? GenGateError { throw error }
            throw GenGateError(.providerError, "the provider's answer is not JSON", retryable: true)
        }
    }

    /// A byte-at-a-time JSON scanner that knows strings (and their escapes) from the rest, and
    /// spots the key whose string value it takes out.
    struct Scanner {
        enum State: Equatable {
            case outside
            case inString(escaped: Bool)
            /// After the key: waiting for `:` then the value's opening quote.
            case afterKey(colon: Bool)
            case inValue(escaped: Bool)
        }

        enum Output {
            case skeleton(UInt8)
            case nothing
            case valueStarts
            case valueByte(UInt8)
            case valueEnds
        }

        let key: [UInt8]
        var state = State.outside
        /// The bytes of the string being read, while they may still be the key.
        var candidate: [UInt8] = []
        var skeleton: [UInt8] = []

        init(key: [UInt8]) { self.key = key }

        mutating func feed(_ byte: UInt8) -> Output {
            let quote = UInt8(ascii: "\"")
            let backslash = UInt8(ascii: "\\")
            switch state {
            case .outside:
                if byte == quote {
                    state = .inString(escaped: false)
                    candidate = [byte]
                }
                return .skeleton(byte)
            case .inString(let escaped):
                if candidate.count <= key.count { candidate.append(byte) }
                if escaped {
                    state = .inString(escaped: false)
                } else if byte == backslash {
                    state = .inString(escaped: true)
                } else if byte == quote {
                    state = candidate == key ? .afterKey(colon: false) : .outside
                }
                return .skeleton(byte)
            case .afterKey(let colon):
                if byte == UInt8(ascii: ":") && !colon {
                    state = .afterKey(colon: true)
                    return .skeleton(byte)
                }
                if colon && byte == quote {
                    state = .inValue(escaped: false)
                    return .valueStarts
                }
                if [0x20, 0x09, 0x0A, 0x0D].contains(byte) { return .skeleton(byte) }
                // Not a string after all (null, say): plain JSON again.
                state = .outside
                return .skeleton(byte)
            case .inValue(let escaped):
                if escaped {
                    state = .inValue(escaped: false)
                    return .valueByte(byte)  // `\/`: JSON may escape the slash of base64
                }
                if byte == backslash {
                    state = .inValue(escaped: true)
                    return .nothing
                }
                if byte == quote {
                    state = .outside
                    return .valueEnds
                }
                return .valueByte(byte)
            }
        }
    }

    /// Decodes base64 as it comes, four characters at a time, into a file.
    struct Base64FileWriter {
        let handle: FileHandle
        var pending: [UInt8] = []
        var written = 0

        init(file: URL) throws {
            guard FileManager.default.createFile(atPath: file.path, contents: nil) else {
                throw GenGateError(.internalError, "cannot create a scratch file")
            }
            handle = try FileHandle(forWritingTo: file)
        }

        mutating func append(_ byte: UInt8) throws {
            if [0x20, 0x09, 0x0A, 0x0D].contains(byte) { return }
            pending.append(byte)
            if pending.count >= Base64Fields.chunk { try flush(final: false) }
        }

        mutating func flush(final: Bool) throws {
            let whole = final ? pending.count : pending.count - pending.count % 4
            guard whole > 0 else { return }
            guard let decoded = Data(base64Encoded: Data(pending[..<whole])) else {
                throw GenGateError(.providerError, "an output is not valid base64", retryable: true)
            }
            try handle.write(contentsOf: decoded)
            written += decoded.count
            pending.removeFirst(whole)
        }

        /// Writes what is left and closes the file; the bytes written in all.
        @discardableResult
        mutating func finish() throws -> Int {
            defer { try? handle.close() }
            try flush(final: true)
            return written
        }
    }
}
