import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// URLs that API callers hand GenGate to reach out to (webhooks now, image inputs later): only
/// `http`/`https` to public addresses, so a caller cannot make GenGate call into the network it
/// runs in (server-side request forgery). A name is checked when given (an address literal, or a
/// name like `localhost`) and again after DNS resolution, right before each call, so a name
/// that resolves to a private address is refused too.
public struct OutboundURLPolicy: Sendable, Equatable {
    /// Private, loopback and link-local targets allowed (tests, private networks).
    public var allowPrivate: Bool

    public static let maxLength = 2_048

    public init(allowPrivate: Bool) {
        self.allowPrivate = allowPrivate
    }

    /// Why `text` may not be used, or nil when it may (as far as can be told without DNS).
    public func problem(with text: String) -> String? {
        guard text.utf8.count <= Self.maxLength else { return "must be at most \(Self.maxLength) bytes" }
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            scheme == "http" || scheme == "https"
        else { return "must be an http or https URL" }
        guard let host = components.host, !host.isEmpty else { return "must name a host" }
        guard components.user == nil, components.password == nil else {
            return "must not carry credentials (user:password@)"
        }
        if let port = components.port, !(1...65_535).contains(port) { return "has an invalid port" }
        if allowPrivate { return nil }
        let bare = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")).lowercased()
        if let address = IPAddress(bare) {
            return address.isPublic ? nil : "must not point to a private, loopback or link-local address (\(bare))"
        }
        let name = bare.hasSuffix(".") ? String(bare.dropLast()) : bare
        if name == "localhost" || name.hasSuffix(".localhost") || name.hasSuffix(".local")
            || name.hasSuffix(".internal") || !name.contains(".")
        {
            return "must be a public host name, not \(name)"
        }
        return nil
    }

    /// Resolves `host` and throws unless every address it has is allowed; returns the address
    /// to connect to (the caller connects to it, not to the name, which could resolve elsewhere
    /// the next time), or nil when private targets are allowed. Runs the blocking resolver on a
    /// thread of its own, never on the cooperative pool.
    public func checkResolved(host: String) async throws -> IPAddress? {
        if allowPrivate { return nil }
        let bare = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        let addresses = try await Self.resolve(bare)
        guard let first = addresses.first else {
            throw OutboundURLRefused(reason: "\(bare) does not resolve", final: false)
        }
        if addresses.contains(where: { !$0.isPublic }) {
            // The address itself is not said: a caller could map the network it runs in by it.
            throw OutboundURLRefused(reason: "\(bare) resolves to a private, loopback or link-local address")
        }
        return first
    }

    /// The addresses `host` resolves to (getaddrinfo, on a thread of its own).
    public static func resolve(_ host: String) async throws -> [IPAddress] {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[IPAddress], Error>) in
            let thread = Thread {
                var hints = addrinfo()
                hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
                var list: UnsafeMutablePointer<addrinfo>?
                let status = getaddrinfo(host, nil, &hints, &list)
                guard status == 0 else {
                    // Perhaps for now only (a resolver that did not answer): not final.
                    continuation.resume(
                        throwing: OutboundURLRefused(
                            reason: "\(host) does not resolve (\(String(cString: gai_strerror(status))))", final: false)
                    )
                    return
                }
                defer { freeaddrinfo(list) }
                var found: [IPAddress] = []
                var node = list
                while let entry = node?.pointee {
                    if let address = entry.ai_addr, let parsed = IPAddress(socketAddress: address) {
                        found.append(parsed)
                    }
                    node = entry.ai_next
                }
                continuation.resume(returning: found)
            }
            thread.start()
        }
    }
}

/// A URL refused by `OutboundURLPolicy`.
public struct OutboundURLRefused: Error, CustomStringConvertible, Equatable {
    public var reason: String
    /// Trying again will not help (a private address); false for a name that did not resolve.
    public var final: Bool
    public init(reason: String, final: Bool = true) {
        self.reason = reason
        self.final = final
    }
    public var description: String { "refused: \(reason)" }
}

/// An IPv4 or IPv6 address, and whether it is on the public internet.
public enum IPAddress: Sendable, Equatable, CustomStringConvertible {
    case v4(UInt32)
    case v6([UInt8])

    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self = .v4(UInt32(bigEndian: v4.s_addr))
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self = .v6(withUnsafeBytes(of: &v6) { Array($0) })
            return
        }
        return nil
    }

    init?(socketAddress: UnsafeMutablePointer<sockaddr>) {
        switch Int32(socketAddress.pointee.sa_family) {
        case AF_INET:
            let address = socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
            self = .v4(UInt32(bigEndian: address.s_addr))
        case AF_INET6:
            var address = socketAddress.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
            self = .v6(withUnsafeBytes(of: &address) { Array($0) })
        default:
            return nil
        }
    }

    public var description: String {
        switch self {
        case .v4(let value):
            return [24, 16, 8, 0].map { String((value >> $0) & 0xff) }.joined(separator: ".")
        case .v6(let bytes):
            return stride(from: 0, to: 16, by: 2).map {
                String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16)
            }
            .joined(separator: ":")
        }
    }

    /// Not loopback, private (RFC 1918, unique local), link-local, carrier-grade NAT, multicast,
    /// reserved, documentation or unspecified.
    public var isPublic: Bool {
        switch self {
        case .v4(let value):
            func within(_ base: UInt32, _ bits: UInt32) -> Bool {
                let mask: UInt32 = bits == 0 ? 0 : ~UInt32(0) << (32 - bits)
                return value & mask == base & mask
            }
            let blocked: [(UInt32, UInt32)] = [
                (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
                (0x0A00_0000, 8),  // 10/8
                (0x6440_0000, 10),  // 100.64/10 carrier-grade NAT
                (0x7F00_0000, 8),  // 127/8 loopback
                (0xA9FE_0000, 16),  // 169.254/16 link-local (cloud metadata)
                (0xAC10_0000, 12),  // 172.16/12
                (0xC000_0000, 24),  // 192.0.0/24 protocol assignments
                (0xC000_0200, 24),  // 192.0.2/24 documentation
                (0xC0A8_0000, 16),  // 192.168/16
                (0xC612_0000, 15),  // 198.18/15 benchmarking
                (0xC633_6400, 24),  // 198.51.100/24 documentation
                (0xCB00_7100, 24),  // 203.0.113/24 documentation
                (0xE000_0000, 4),  // 224/4 multicast
                (0xF000_0000, 4),  // 240/4 reserved, broadcast
            ]
            return !blocked.contains { within($0.0, $0.1) }
        case .v6(let bytes):
            // An IPv4 address mapped (::ffff:a.b.c.d) or translated (64:ff9b::a.b.c.d): that address decides.
            let embedded =
                UInt32(bytes[12]) << 24 | UInt32(bytes[13]) << 16 | UInt32(bytes[14]) << 8 | UInt32(bytes[15])
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
                return IPAddress.v4(embedded).isPublic
            }
            if bytes[0..<12] == [0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] {
                return IPAddress.v4(embedded).isPublic
            }
            if bytes[0..<12].allSatisfy({ $0 == 0 }) { return false }  // ::/96: ::, ::1, IPv4-compatible
            if bytes[0] == 0x20 && bytes[1] == 0x02 {  // 2002::/16, 6to4: the IPv4 address inside decides
                return IPAddress.v4(
                    UInt32(bytes[2]) << 24 | UInt32(bytes[3]) << 16 | UInt32(bytes[4]) << 8 | UInt32(bytes[5])
                )
                .isPublic
            }
            if bytes[0] & 0xfe == 0xfc { return false }  // fc00::/7 unique local
            if bytes[0] == 0xfe && bytes[1] & 0xc0 == 0x80 { return false }  // fe80::/10 link-local
            if bytes[0] == 0xfe && bytes[1] & 0xc0 == 0xc0 { return false }  // fec0::/10 site-local (old)
            if bytes[0] == 0xff { return false }  // multicast
            // 2001:db8::/32, documentation
            if bytes[0] == 0x20 && bytes[1] == 0x01 && bytes[2] == 0x0d && bytes[3] == 0xb8 { return false }
            return true
        }
    }
}
