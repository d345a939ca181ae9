import Foundation
import GenGateCore
import Synchronization

/// A circuit per provider, in one process: after `threshold` submissions in a row that found the
/// provider unreachable (`provider_unavailable`, `provider_timeout`), no submission goes to it for
/// `coolDown`; then one goes as a probe, and its outcome closes the circuit or opens it again (a
/// probe that never reports, say its job was cancelled first, is forgotten after `coolDown`).
/// Jobs meanwhile wait (a later change sends them to a fallback model) instead of each spending an
/// attempt, and the timeout it costs, on a provider that is down.
public final class ProviderCircuit: Sendable {
    public let threshold: Int
    public let coolDown: Double

    struct State {
        var failures = 0
        var openUntil: Date?
        /// When the probe under way was let through.
        var probeSince: Date?
    }

    let states = Mutex<[String: State]>([:])

    public init(threshold: Int = 5, coolDown: Double = 30) {
        self.threshold = threshold
        self.coolDown = coolDown
    }

    public enum Admission: Sendable, Equatable {
        case go
        /// The circuit is open: ask again at this time.
        case wait(until: Date)
    }

    /// Whether a submission to `provider` may go now. While open, none; once the cool-down is
    /// over, one probe at a time.
    public func admit(_ provider: String, now: Date = Date()) -> Admission {
        states.withLock { states in
            var state = states[provider] ?? State()
            defer { states[provider] = state }
            guard let until = state.openUntil else { return .go }
            if now < until { return .wait(until: until) }
            if let since = state.probeSince, now < since.addingTimeInterval(coolDown) {
                return .wait(until: since.addingTimeInterval(coolDown))
            }
            state.probeSince = now
            return .go
        }
    }

    /// How a submission's outcome bears on whether the provider is reachable.
    enum Kind { case answered, unreachable, neutral }

    static func kind(_ error: GenGateError?) -> Kind {
        guard let error else { return .answered }
        switch error.code {
        case .providerUnavailable, .providerTimeout:
            return .unreachable
        case .rateLimited, .authenticationFailed, .quotaExceeded, .contentPolicy, .providerError, .invalidRequest:
            return .answered  // the provider said so
        default:
            return .neutral  // a fault of ours, a stop, a deadline: says nothing of the provider
        }
    }

    /// Whether `admit` would let a submission go now, without taking the probe.
    public func wouldAdmit(_ provider: String, now: Date = Date()) -> Bool {
        states.withLock { states in
            guard let state = states[provider], let until = state.openUntil else { return true }
            if now < until { return false }
            if let since = state.probeSince, now < since.addingTimeInterval(coolDown) { return false }
            return true
        }
    }

    /// Records a submission's outcome; true when it opened the circuit (again).
    @discardableResult
    public func record(_ provider: String, error: GenGateError?, now: Date = Date()) -> Bool {
        states.withLock { states in
            var state = states[provider] ?? State()
            defer { states[provider] = state }
            switch Self.kind(error) {
            case .neutral:
                return false
            case .answered:
                state = State()  // the provider answered: closed
                return false
            case .unreachable:
                state.failures += 1
                let probeFailed = state.probeSince != nil
                guard probeFailed || (state.openUntil == nil && state.failures >= threshold) else { return false }
                state.openUntil = now.addingTimeInterval(coolDown)
                state.probeSince = nil
                return true
            }
        }
    }

    /// Whether the circuit of `provider` is open now (a probe may be under way).
    public func isOpen(_ provider: String) -> Bool {
        states.withLock { $0[provider]?.openUntil != nil }
    }
}
