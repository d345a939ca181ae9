import Foundation
import GenGateCore

/// One simulated output, described fully by its source URL so any uploader can render it:
/// `sim://image/<width>x<height>/<seed>/<index>/<prompt, base64url>` or
/// `sim://text/0x0/<seed>/<index>/<prompt, base64url>`.
struct SimOutput: Equatable {
    enum Kind: String {
        case image, text
    }

    var kind: Kind
    var width: Int
    var height: Int
    var seed: Int
    var index: Int
    var prompt: String

    static let defaultSize = 64

    init(kind: Kind, request: ProviderRequest, index: Int) {
        self.kind = kind
        self.width = kind == .image ? (request.width ?? Self.defaultSize) : 0
        self.height = kind == .image ? (request.height ?? Self.defaultSize) : 0
        self.seed = request.seed ?? 0
        self.index = index
        self.prompt = request.prompt
    }

    init?(source: String) {
        guard source.hasPrefix("sim://") else { return nil }
        let parts = source.dropFirst("sim://".count).split(
            separator: "/", maxSplits: 4, omittingEmptySubsequences: false)
        guard parts.count == 5, let kind = Kind(rawValue: String(parts[0])) else { return nil }
        let size = parts[1].split(separator: "x")
        guard size.count == 2, let width = Int(size[0]), let height = Int(size[1]), let seed = Int(parts[2]),
            let index = Int(parts[3]), let prompt = Self.base64URLDecode(String(parts[4]))
        else { return nil }
        guard kind == .text || ((1...2048).contains(width) && (1...2048).contains(height)) else { return nil }
        self.kind = kind
        self.width = width
        self.height = height
        self.seed = seed
        self.index = index
        self.prompt = prompt
    }

    var source: String {
        "sim://\(kind.rawValue)/\(width)x\(height)/\(seed)/\(index)/\(Self.base64URLEncode(prompt))"
    }

    var contentType: String { kind == .image ? "image/png" : "text/plain; charset=utf-8" }

    func render() -> Data {
        let digest = Digest.sha256(Data("\(prompt)\u{0}\(seed)\u{0}\(index)".utf8))
        switch kind {
        case .image: return renderImage(digest)
        case .text: return renderText(digest)
        }
    }

    /// A diagonal gradient between two colours from the digest, crossed by stripes.
    private func renderImage(_ digest: [UInt8]) -> Data {
        let from = (Int(digest[0]), Int(digest[1]), Int(digest[2]))
        let to = (Int(digest[3]), Int(digest[4]), Int(digest[5]))
        let stripe = 4 + Int(digest[6] % 12)
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        let span = max(1, width + height - 2)
        for y in 0..<height {
            for x in 0..<width {
                let t = x + y
                var r = from.0 + (to.0 - from.0) * t / span
                var g = from.1 + (to.1 - from.1) * t / span
                var b = from.2 + (to.2 - from.2) * t / span
                if ((x - y + 4096) / stripe) % 2 == 0 {
                    r = 255 - r
                    g = 255 - g
                    b = 255 - b
                }
                let offset = (y * width + x) * 3
                pixels[offset] = UInt8(clamping: r)
                pixels[offset + 1] = UInt8(clamping: g)
                pixels[offset + 2] = UInt8(clamping: b)
            }
        }
        return PNGImage.encodeRGB(width: width, height: height, pixels: pixels)
    }

    private static let words = [
        "gate", "light", "river", "stone", "signal", "harbor", "quiet", "amber", "orbit",
        "lantern", "meadow", "circuit", "ember", "tide", "cedar", "prism",
    ]

    private func renderText(_ digest: [UInt8]) -> Data {
        let body = digest.prefix(24).map { Self.words[Int($0) % Self.words.count] }.joined(separator: " ")
        return Data("Simulated reply \(index + 1) to \"\(prompt)\": \(body).\n".utf8)
    }

    static func base64URLEncode(_ text: String) -> String {
        Data(text.utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func base64URLDecode(_ text: String) -> String? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64).flatMap { String(data: $0, encoding: .utf8) }
    }
}
