import Foundation

/// Makes the ids GenGate hands out: a short type prefix, then 26 characters of Crockford base32
/// holding 48 bits of milliseconds and 80 random bits (ULID layout), so ids sort by creation time.
public enum Identifier {
    private static let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz")

    public static func make(_ prefix: String, at date: Date = Date()) -> String {
        var generator = SystemRandomNumberGenerator()
        let millis = UInt64(max(0, date.timeIntervalSince1970 * 1000))
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<6 { bytes[i] = UInt8((millis >> (8 * UInt64(5 - i))) & 0xff) }
        // Two draws of 64 bits (each a getrandom call), not one per byte.
        let high: UInt64 = generator.next()
        let low: UInt64 = generator.next()
        for i in 0..<8 { bytes[6 + i] = UInt8(truncatingIfNeeded: high >> (8 * UInt64(i))) }
        for i in 0..<2 { bytes[14 + i] = UInt8(truncatingIfNeeded: low >> (8 * UInt64(i))) }
        return prefix + "_" + base32(bytes)
    }

    /// Random lowercase base32 text of `count` characters, for secrets such as API keys.
    public static func randomToken(count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return String((0..<count).map { _ in alphabet[Int.random(in: 0..<32, using: &generator)] })
    }

    static func base32(_ bytes: [UInt8]) -> String {
        // 128 bits → 26 characters of 5 bits, most significant first (the first holds 3 bits).
        var out: [Character] = []
        out.reserveCapacity(26)
        var buffer: UInt32 = 0
        var bits = 2  // pad 2 zero bits in front so 130 bits split evenly into 26 groups
        for byte in bytes {
            buffer = (buffer << 8) | UInt32(byte)
            bits += 8
            while bits >= 5 {
                bits -= 5
                out.append(alphabet[Int((buffer >> UInt32(bits)) & 31)])
            }
            buffer &= (1 << UInt32(bits)) - 1
        }
        return String(out)
    }
}
