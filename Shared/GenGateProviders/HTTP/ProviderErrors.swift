import Foundation
import GenGateCore
import NIOHTTP1

/// HTTP error answers as GenGate's error classes: the part of every adapter's mapping table that
/// providers share. Adapters look at their own codes in the body first (a 400 that says
/// "balance" is `quota_exceeded`) and fall back to this.
public enum ProviderErrors {
    /// The class of an HTTP error status, with the provider's `Retry-After` where it gave one.
    public static func fromStatus(
        _ status: HTTPResponseStatus, provider: String, message: String, headers: HTTPHeaders,
        providerCode: String? = nil
    ) -> GenGateError {
        classify(status, provider: provider, message: message, headers: headers).withProviderCode(providerCode)
    }

    static func classify(
        _ status: HTTPResponseStatus, provider: String, message: String, headers: HTTPHeaders
    ) -> GenGateError {
        let text = "\(provider): \(message.isEmpty ? "HTTP \(status.code)" : message) (HTTP \(status.code))"
        switch status.code {
        case 429:
            return GenGateError(.rateLimited, text, retryAfter: retryAfter(headers))
        case 401, 403:
            return GenGateError(.authenticationFailed, text)
        case 402:
            return GenGateError(.quotaExceeded, text)
        case 408, 504:
            return GenGateError(.providerTimeout, text, retryAfter: retryAfter(headers))
        case 500...599:
            return GenGateError(.providerUnavailable, text, retryAfter: retryAfter(headers))
        case 100...399:
            // A success (or redirect) the adapter could not use: the body was unreadable or
            // incomplete, not a verdict on the request.
            return GenGateError(
                .providerError, "\(provider): an answer that could not be read (HTTP \(status.code))", retryable: true)
        default:
            return GenGateError(.invalidRequest, text)
        }
    }

    /// `Retry-After` in seconds: a number of seconds or an HTTP date (RFC 9110 §10.2.3); nil if
    /// absent or unreadable. Capped at an hour, so a confused provider cannot park a job forever.
    public static func retryAfter(_ headers: HTTPHeaders, now: Date = Date()) -> Double? {
        guard let value = headers.first(name: "Retry-After")?.trimmingCharacters(in: .whitespaces) else {
            return nil
        }
        if let seconds = Double(value), seconds.isFinite, seconds >= 0 { return min(seconds, 3_600) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        guard let date = formatter.date(from: value) else { return nil }
        return min(max(0, date.timeIntervalSince(now)), 3_600)
    }

    /// The provider's own code in a JSON error body: `code` (text or number; 0 is success, not a
    /// code), `error.code` or `error.type` (OpenAI), `Response.Error.Code` (Tencent).
    public static func code(_ body: JSONValue?) -> String? {
        guard let body else { return nil }
        if let text = body["code"]?.stringValue, !text.isEmpty { return text }
        if let number = body["code"]?.intValue, number != 0 { return String(number) }
        if let text = body["error"]?["code"]?.stringValue, !text.isEmpty { return text }
        if let text = body["error"]?["type"]?.stringValue, !text.isEmpty { return text }
        return body["Response"]?["Error"]?["Code"]?.stringValue
    }

    /// The human message of a JSON error body, from the fields providers use (`detail` as text
    /// or FastAPI's list, `message`, `error` as text or `{message}`, `title`), shortened.
    public static func message(_ body: JSONValue?) -> String {
        guard case .object(let fields)? = body else { return "" }
        var found: String?
        if case .string(let text)? = fields["detail"] {
            // RFC 7807 problems (Replicate) say what in `title` and why in `detail`.
            found = fields["title"]?.stringValue.map { "\($0): \(text)" } ?? text
        } else if case .array(let items)? = fields["detail"] {
            found = items.compactMap { $0["msg"]?.stringValue }.joined(separator: "; ")
        } else if let text = fields["message"]?.stringValue {
            found = text
        } else if case .string(let text)? = fields["error"] {
            found = text
        } else if let text = fields["error"]?["message"]?.stringValue {
            found = text
        } else if let text = fields["title"]?.stringValue {
            found = text
        }
        guard let found else { return "" }
        return found.count > 500 ? String(found.prefix(500)) + "…" : found
    }
}
