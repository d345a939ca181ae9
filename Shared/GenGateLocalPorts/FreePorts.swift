#if canImport(Glibc)
    import Glibc
#endif

/// Free TCP ports on 127.0.0.1, for what starts whole local systems (integration tests, the
/// benchmark tool): found by binding port 0 and reading what the kernel chose.
public enum FreePorts {
    /// A socket bound to a free port on 127.0.0.1, or nil; the caller closes it.
    public static func bound(listening: Bool = false) -> (fd: Int32, port: Int)? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0, !listening || listen(fd, 1) == 0 else {
            close(fd)
            return nil
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// The first of `count` consecutive free ports (a TCP bus takes eight in a row), or an error
    /// after 50 random tries.
    public static func consecutive(_ count: Int) throws -> Int {
        for _ in 0..<50 {
            let base = Int.random(in: 20_000...(60_000 - count))
            var sockets: [Int32] = []
            defer { sockets.forEach { close($0) } }
            for port in base..<base + count {
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                guard fd >= 0 else { break }
                sockets.append(fd)
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_addr.s_addr = inet_addr("127.0.0.1")
                address.sin_port = in_port_t(UInt16(port).bigEndian)
                let bound = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
                guard bound == 0 else { break }
                if port == base + count - 1 { return base }
            }
        }
        throw FreePortError()
    }

    /// `count` distinct free ports (held together while chosen, then released).
    public static func take(_ count: Int) throws -> [Int] {
        var taken: [(fd: Int32, port: Int)] = []
        defer { taken.forEach { close($0.fd) } }
        for _ in 0..<count {
            guard let socket = bound() else { throw FreePortError() }
            taken.append(socket)
        }
        return taken.map(\.port)
    }
}

/// No free port could be bound on 127.0.0.1.
public struct FreePortError: Error, CustomStringConvertible {
    public var description: String { "cannot bind a free port on 127.0.0.1" }
}
