import Foundation
import GenGateCore

/// An output's content type, told by its first bytes rather than taken from the provider (whose
/// file host may label a JPEG `image/png`, everything `application/octet-stream`, or answer a
/// stale link with an HTML page and status 200). The signatures are the formats' own magic
/// numbers (PNG, JPEG, GIF, WebP, BMP, TIFF, the ISO media family, Matroska/WebM, Ogg, WAV,
/// MP3, FLAC, PDF), as in the WHATWG MIME Sniffing standard; written here because no library
/// this package depends on sniffs.
public enum ContentSniffer {
    /// How many leading bytes `contentType` looks at: binary formats say what they are in their
    /// first bytes; an SVG may open with an XML declaration, a doctype and comments first.
    public static let headLength = 1_024

    /// The type for an output whose bytes begin with `head`, which the provider called `claimed`.
    /// A recognised format wins; text the provider called text (or JSON) stays so; bytes that look
    /// like a web page or JSON where media was promised are refused (a retryable provider error:
    /// its file host answered with an error page); anything else is `application/octet-stream`.
    public static func contentType(head: some Collection<UInt8>, claimed: String) throws -> String {
        let head = Array(head.prefix(headLength))
        let claimedType =
            claimed.split(separator: ";").first.map {
                $0.trimmingCharacters(in: .whitespaces).lowercased()
            } ?? ""
        let textual = claimedType.hasPrefix("text/") || claimedType == "application/json"
        // Text that happens to begin like a format ("ID3 tags…", "%PDF-1.7 is…") stays text.
        if textual, isText(head) { return claimed }
        if let known = format(of: head) { return known }
        if textual { return claimed }
        if claimedType == "image/svg+xml", String(decoding: head, as: UTF8.self).contains("<svg") { return claimed }
        let media = ["image/", "video/", "audio/"].contains { claimedType.hasPrefix($0) }
        if media, let first = head.first(where: { ![0x20, 0x09, 0x0a, 0x0d, 0xef, 0xbb, 0xbf].contains($0) }),
            [UInt8(ascii: "<"), UInt8(ascii: "{"), UInt8(ascii: "[")].contains(first)
        {
            throw GenGateError(
                .providerError,
                "the output was to be \(claimedType) but its bytes are a \(first == UInt8(ascii: "<") ? "web page" : "JSON document") (the file host answered with an error page?)",
                retryable: true)
        }
        return "application/octet-stream"
    }

    /// Whether `head` reads as UTF-8 text without control characters but tab and line ends (a
    /// character cut off at its end allowed).
    static func isText(_ head: [UInt8]) -> Bool {
        guard !head.contains(where: { ($0 < 0x20 && ![0x09, 0x0A, 0x0D].contains($0)) || $0 == 0x7F }) else {
            return false
        }
        for cut in 0...min(3, head.count) where String(validating: head.dropLast(cut), as: UTF8.self) != nil {
            return true
        }
        return false
    }

    /// The format `head` begins with, if known.
    public static func format(of head: [UInt8]) -> String? {
        func starts(_ bytes: [UInt8], at offset: Int = 0) -> Bool {
            head.count >= offset + bytes.count && Array(head[offset..<offset + bytes.count]) == bytes
        }
        func ascii(_ text: String, at offset: Int = 0) -> Bool { starts(Array(text.utf8), at: offset) }

        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return "image/png" }
        if starts([0xFF, 0xD8, 0xFF]) { return "image/jpeg" }
        if ascii("GIF87a") || ascii("GIF89a") { return "image/gif" }
        if ascii("RIFF"), ascii("WEBPVP", at: 8) { return "image/webp" }
        if ascii("RIFF"), ascii("WAVE", at: 8) { return "audio/wav" }
        if ascii("BM"), head.count >= 14, head[6] == 0, head[7] == 0, head[8] == 0, head[9] == 0 { return "image/bmp" }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { return "image/tiff" }
        if starts([0x1A, 0x45, 0xDF, 0xA3]) {
            // Matroska; WebM names its doctype in the EBML header.
            return String(decoding: head, as: UTF8.self).contains("webm") ? "video/webm" : "video/x-matroska"
        }
        if ascii("OggS") { return "audio/ogg" }
        if ascii("fLaC") { return "audio/flac" }
        if ascii("ID3") || (head.count >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0 && head[1] & 0x06 != 0) {
            return "audio/mpeg"
        }
        if ascii("%PDF-") { return "application/pdf" }
        // The ISO base media file format: a box `ftyp` whose major brand says which.
        if ascii("ftyp", at: 4), head.count >= 12 {
            let brand = String(decoding: head[8..<12], as: UTF8.self)
            switch brand {
            case "avif", "avis": return "image/avif"
            case "heic", "heix", "heim", "heis", "mif1", "msf1": return "image/heic"
            case "qt  ": return "video/quicktime"
            case "M4A ", "M4B ": return "audio/mp4"
            default: return "video/mp4"
            }
        }
        return nil
    }
}
