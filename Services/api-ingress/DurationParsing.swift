import Foundation

extension Duration {
    /// Seconds in a duration written as Go and Replicate write them: a bare number of seconds
    /// (`90`), or numbers with units `h`, `m`, `s`, `ms` in that order (`1h30m`, `2.5s`,
    /// `500ms`). Nil for anything else, or a negative, empty or absurdly long text. Hand-written:
    /// Foundation parses no such format.
    static func seconds(parsing text: String) -> Double? {
        let text = text.trimmingCharacters(in: .whitespaces)
        guard !text.isEmpty, text.count <= 32 else { return nil }
        if let plain = Double(text) { return plain.isFinite && plain >= 0 ? plain : nil }
        let units: [(String, Double)] = [("h", 3_600), ("ms", 0.001), ("m", 60), ("s", 1)]
        var rest = Substring(text)
        var total = 0.0
        var lastScale = Double.infinity
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isNumber || $0 == "." }
            guard !digits.isEmpty, let value = Double(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            guard let (unit, scale) = units.first(where: { rest.hasPrefix($0.0) }), scale < lastScale else {
                return nil
            }
            rest = rest.dropFirst(unit.count)
            total += value * scale
            lastScale = scale
        }
        return total
    }
}
