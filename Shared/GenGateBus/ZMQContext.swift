import CZeroMQ
import Foundation
import Synchronization

/// A libzmq context. libzmq contexts are thread-safe, so one context is shared by every socket of
/// a process. `terminate()` waits for every socket of the context to be closed, which is bounded
/// because GenGate sockets always close with a bounded linger.
public final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    public init(ioThreads: Int32 = 1) throws {
        guard let handle = zmq_ctx_new() else { throw ZMQError.last("zmq_ctx_new") }
        zmq_ctx_set(handle, ZMQ_IO_THREADS, ioThreads)
        self.handle = handle
    }

    /// Ends the context; blocks until all its sockets are closed. Call once, from a thread that may block.
    public func terminate() {
        while zmq_ctx_term(handle) != 0 && zmq_errno() == EINTR {}
    }

    /// Ends the context without ever hanging the caller: waits up to `limit` for every socket to
    /// be closed; past it (a socket left open) says so and leaves the rest to process exit.
    /// Returns whether the context ended.
    @discardableResult
    public func terminate(within limit: Duration) async -> Bool {
        // Whichever comes first, the context ending or the time running out, answers; the
        // thread is not waited for.
        let answer = FirstAnswer()
        let ended = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            answer.set(continuation)
            let thread = Thread {
                self.terminate()
                answer.give(true)
            }
            thread.name = "zmq-terminate"
            thread.start()
            Task {
                try? await Task.sleep(for: limit)
                answer.give(false)
            }
        }
        if !ended {
            FileHandle.standardError.write(
                Data("zmq context still has open sockets after \(limit); not waiting\n".utf8))
        }
        return ended
    }

    /// The libzmq version this process runs against, e.g. "4.3.4".
    public static var libraryVersion: String {
        var major: Int32 = 0
        var minor: Int32 = 0
        var patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        return "\(major).\(minor).\(patch)"
    }
}

/// Resumes one continuation with the first answer given; later answers are ignored.
private final class FirstAnswer: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<Bool, Never>?, answer: Bool?)>((nil, nil))

    func set(_ continuation: CheckedContinuation<Bool, Never>) {
        let early = state.withLock { state -> Bool? in
            if let answer = state.answer { return answer }
            state.continuation = continuation
            return nil
        }
        if let early { continuation.resume(returning: early) }
    }

    func give(_ value: Bool) {
        let continuation = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            guard state.answer == nil else { return nil }
            state.answer = value
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(returning: value)
    }
}
