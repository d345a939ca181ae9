import Foundation
import GenGateCore
import NIOCore
import NIOPosix
import NIOSSL

/// Where alert email goes: `smtp://user:password@host:port` (STARTTLS when the server offers
/// it), `smtps://…` (TLS from the first byte, port 465 by default). Query options:
/// `starttls=required` refuses a server that does not offer it, `starttls=never` sends in the
/// clear; `ca_file=/path.pem` trusts a private certificate authority besides the system's.
public struct SMTPSettings: Sendable, Equatable, CustomStringConvertible {
    public enum StartTLS: String, Sendable { case auto, required, never }

    public var host: String
    public var port: Int
    public var implicitTLS: Bool
    public var startTLS: StartTLS
    public var user: String?
    public var password: String?
    public var caFile: String?

    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    public init(url text: String) throws {
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(),
            ["smtp", "smtps"].contains(scheme), let host = url.host, !host.isEmpty
        else {
            throw Invalid(description: "must be smtp://user:password@host:port or smtps://…")
        }
        self.host = host
        implicitTLS = scheme == "smtps"
        port = url.port ?? (implicitTLS ? 465 : 25)
        guard (1...65_535).contains(port) else { throw Invalid(description: "port must be in 1...65535") }
        user = url.user.flatMap { $0.removingPercentEncoding ?? $0 }
        password = url.password.flatMap { $0.removingPercentEncoding ?? $0 }
        startTLS = .auto
        for item in url.queryItems ?? [] {
            switch item.name {
            case "starttls":
                guard let value = item.value.flatMap(StartTLS.init(rawValue:)) else {
                    throw Invalid(description: "starttls must be auto, required or never")
                }
                startTLS = value
            case "ca_file":
                guard let value = item.value, !value.isEmpty else { throw Invalid(description: "ca_file is empty") }
                caFile = value
            default:
                throw Invalid(description: "unknown option \(item.name); known: starttls, ca_file")
            }
        }
    }

    /// Without the password.
    public var description: String {
        "\(implicitTLS ? "smtps" : "smtp")://\(user.map { "\($0)@" } ?? "")\(host):\(port)"
    }
}

/// An email as sent: plain text, UTF-8.
public struct EmailMessage: Sendable, Equatable {
    public var from: String
    public var to: [String]
    public var subject: String
    public var body: String

    public init(from: String, to: [String], subject: String, body: String) {
        self.from = from
        self.to = to
        self.subject = subject
        self.body = body
    }

    /// The message in RFC 5322 form for DATA: lines ending CRLF, the text in base64 (so any
    /// server takes it, 8BITMIME or not, and no line of it starts with a dot), the subject at
    /// most 200 characters, folded.
    func rendered(id: String, date: Date) -> String {
        let header = [
            "From: \(from)", "To: \(to.joined(separator: ", "))", "Subject: \(Self.encodedWords(subject))",
            "Date: \(Self.dateFormatter.string(from: date))", "Message-ID: <\(id)@gengate>", "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: base64",
        ]
        let text = body.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
            .replacingOccurrences(of: "\n", with: "\r\n")
        let encoded = Data(text.utf8).base64EncodedString(options: [
            .lineLength76Characters, .endLineWithCarriageReturn, .endLineWithLineFeed,
        ])
        return (header + [""]).joined(separator: "\r\n") + "\r\n" + encoded + "\r\n"
    }

    /// A header value, on one line: plain when it is short ASCII, otherwise RFC 2047 encoded
    /// words of at most 75 characters each, on folded lines.
    static func encodedWords(_ text: String) -> String {
        var clean = text.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
        if clean.count > 200 { clean = String(clean.prefix(199)) + "…" }
        if clean.unicodeScalars.allSatisfy({ $0.isASCII && $0.value >= 32 }) && clean.utf8.count <= 900 { return clean }
        // 42 bytes of UTF-8 make 56 of base64: with "=?utf-8?B?" and "?=", 68 a word, and the
        // first line, after "Subject: ", 77.
        var words: [String] = []
        var chunk = ""
        for character in clean {
            if chunk.utf8.count + String(character).utf8.count > 42 {
                words.append(chunk)
                chunk = ""
            }
            chunk.append(character)
        }
        if !chunk.isEmpty { words.append(chunk) }
        return words.map { "=?utf-8?B?\(Data($0.utf8).base64EncodedString())?=" }.joined(separator: "\r\n ")
    }

    static let dateFormatter: DateFormatter = {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss '+0000'"
        return formatter
    }()
}

/// A failure to send, with the server's reply where it gave one.
public struct SMTPError: Error, CustomStringConvertible, Equatable {
    public var description: String
}

/// Sends one message per connection over SMTP (RFC 5321): EHLO, STARTTLS (RFC 3207) when
/// offered, AUTH PLAIN (RFC 4954) when credentials are given, MAIL, RCPT, DATA, QUIT. Written
/// here because none of the Swift packages available to GenGate speaks SMTP; it is the small
/// client side only, on SwiftNIO and NIOSSL.
public enum SMTPClient {
    public static func send(
        _ message: EmailMessage, via settings: SMTPSettings, timeout: Duration = .seconds(30),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws {
        guard !message.to.isEmpty else { throw SMTPError(description: "no recipients") }
        for address in [message.from] + message.to where !isPlainAddress(address) {
            throw SMTPError(description: "not an email address: \(address)")
        }
        let tls = try makeTLSContext(settings)
        switch await withDeadline(timeout, { try await converse(message, settings: settings, tls: tls, group: group) })
        {
        case .success: return
        case .failure(is DeadlinePassed):
            throw SMTPError(description: "no answer from \(settings.host):\(settings.port) within \(timeout)")
        case .failure(let error): throw error
        }
    }

    static func isPlainAddress(_ address: String) -> Bool {
        let parts = address.split(separator: "@", omittingEmptySubsequences: false)
        return parts.count == 2 && !parts[0].isEmpty && !parts[1].isEmpty
            && !address.contains(where: { $0.isWhitespace || "<>\r\n,;".contains($0) })
    }

    static func makeTLSContext(_ settings: SMTPSettings) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        if let caFile = settings.caFile {
            configuration.additionalTrustRoots = [.file(caFile)]
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw SMTPError(description: "TLS setup failed (ca_file \(settings.caFile ?? "none")): \(error)")
        }
    }

    static func converse(
        _ message: EmailMessage, settings: SMTPSettings, tls: NIOSSLContext, group: any EventLoopGroup
    ) async throws {
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(10))
                .connect(host: settings.host, port: settings.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if settings.implicitTLS {
                            try channel.pipeline.syncOperations.addHandler(
                                try NIOSSLClientHandler(context: tls, serverHostname: serverName(settings.host)))
                        }
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw SMTPError(description: "cannot connect to \(settings.host):\(settings.port): \(error)")
        }
        try await channel.executeThenClose { inbound, outbound in
            var replies = ReplyReader(inbound.makeAsyncIterator())
            func command(_ line: String, expect codes: Set<Int>, redacted: String? = nil) async throws -> Reply {
                try await outbound.write(ByteBuffer(string: line + "\r\n"))
                let reply = try await replies.next()
                guard codes.contains(reply.code) else {
                    throw SMTPError(
                        description:
                            "\(redacted ?? line) was answered \(reply.code) \(reply.lines.joined(separator: " "))")
                }
                return reply
            }
            let greeting = try await replies.next()
            guard greeting.code == 220 else {
                throw SMTPError(
                    description: "the server greeted with \(greeting.code) \(greeting.lines.joined(separator: " "))")
            }
            var capabilities = try await command("EHLO \(localName)", expect: [250]).lines
            var secured = settings.implicitTLS
            let offered = capabilities.contains { $0.uppercased() == "STARTTLS" }
            if !secured && settings.startTLS != .never && offered {
                _ = try await command("STARTTLS", expect: [220])
                // Anything after the 220 came before TLS, from anyone on the way: refused, or it
                // would be read as the server's answers once encrypted.
                guard replies.buffer.isEmpty else {
                    throw SMTPError(description: "\(settings.host) sent more after agreeing to STARTTLS; refused")
                }
                let handler = try NIOSSLClientHandler(context: tls, serverHostname: serverName(settings.host))
                try await channel.channel.pipeline.addHandler(handler, position: .first)
                secured = true
                capabilities = try await command("EHLO \(localName)", expect: [250]).lines
            } else if !secured && settings.startTLS == .required {
                throw SMTPError(description: "\(settings.host) does not offer STARTTLS, and starttls=required")
            }
            if let user = settings.user {
                guard secured || settings.startTLS == .never else {
                    throw SMTPError(
                        description:
                            "\(settings.host) offers no TLS: the password is not sent in the clear (add starttls=never to allow it)"
                    )
                }
                let token = Data("\u{0}\(user)\u{0}\(settings.password ?? "")".utf8).base64EncodedString()
                _ = try await command("AUTH PLAIN \(token)", expect: [235], redacted: "AUTH PLAIN")
            }
            _ = try await command("MAIL FROM:<\(message.from)>", expect: [250])
            for recipient in message.to {
                _ = try await command("RCPT TO:<\(recipient)>", expect: [250, 251])
            }
            _ = try await command("DATA", expect: [354])
            let rendered = message.rendered(id: UUID().uuidString.lowercased(), date: Date())
            _ = try await command(rendered + ".", expect: [250], redacted: "the message")
            // Accepted: sent. QUIT's answer is not waited for (a server that stalls now must
            // not turn a delivered message into a failure, and a second copy).
            try? await outbound.write(ByteBuffer(string: "QUIT\r\n"))
        }
    }

    /// This host's name for EHLO, looked up once.
    static let localName: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "localhost" }
        let name = String(cString: buffer)
        return name.isEmpty || name.contains(where: { $0.isWhitespace || $0 == "@" }) ? "localhost" : name
    }()

    /// The name TLS checks the certificate against; none for an address (SNI takes names only).
    static func serverName(_ host: String) -> String? {
        host.contains(":") || host.allSatisfy({ $0.isNumber || $0 == "." }) ? nil : host
    }

    struct Reply {
        var code: Int
        /// The text of each line, after the code.
        var lines: [String]
    }

    /// Reads replies (`250-first`, `250 last`) from the byte stream, a line at a time.
    struct ReplyReader {
        var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
        var buffer: [UInt8] = []

        init(_ iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator) {
            self.iterator = iterator
        }

        mutating func line() async throws -> String {
            while true {
                if let end = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    var line = Array(buffer[..<end])
                    buffer.removeSubrange(...end)
                    if line.last == UInt8(ascii: "\r") { line.removeLast() }
                    return String(decoding: line, as: UTF8.self)
                }
                guard buffer.count < 65_536 else { throw SMTPError(description: "a reply line over 64 KiB") }
                guard let chunk = try await iterator.next() else {
                    throw SMTPError(description: "the server closed the connection")
                }
                buffer += chunk.readableBytesView
            }
        }

        mutating func next() async throws -> Reply {
            var lines: [String] = []
            while true {
                let line = try await line()
                let bytes = Array(line.utf8)
                guard bytes.count >= 3, let code = Int(String(decoding: bytes[0..<3], as: UTF8.self)) else {
                    throw SMTPError(description: "not an SMTP reply: \(line.prefix(100))")
                }
                lines.append(bytes.count > 4 ? String(decoding: bytes[4...], as: UTF8.self) : "")
                if bytes.count == 3 || bytes[3] != UInt8(ascii: "-") { return Reply(code: code, lines: lines) }
                guard lines.count < 1_000 else { throw SMTPError(description: "a reply of over 1000 lines") }
            }
        }
    }
}
