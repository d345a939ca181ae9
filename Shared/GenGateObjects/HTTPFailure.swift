import AsyncHTTPClient
import Foundation

/// Names a failure below HTTP (no answer at all) without quoting anything it was given:
/// AsyncHTTPClient's descriptions can quote header values, and headers hold credentials (a
/// provider's key, an S3 signature). Its kind says enough.
public enum HTTPFailure {
    public static func describe(_ error: any Error) -> String {
        guard let error = error as? HTTPClientError else { return String(describing: type(of: error)) }
        let known: [(HTTPClientError, String)] = [
            (.remoteConnectionClosed, "connection closed by the server"), (.cancelled, "cancelled"),
            (.connectTimeout, "connect timeout"), (.readTimeout, "read timeout"), (.writeTimeout, "write timeout"),
            (.deadlineExceeded, "deadline exceeded"), (.tlsHandshakeTimeout, "TLS handshake timeout"),
            (.alreadyShutdown, "client shut down"), (.emptyHost, "no host in the URL"),
            (.invalidURL, "invalid URL"), (.emptyScheme, "no scheme in the URL"),
        ]
        return known.first { $0.0 == error }?.1 ?? "HTTP client error"
    }
}
