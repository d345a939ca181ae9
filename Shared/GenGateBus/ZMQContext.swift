import CZeroMQ
import Foundation

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
        let done = ThreadCompletion()
        let thread = Thread {
            self.terminate()
            done.markDone()
        }
        thread.name = "zmq-terminate"
        thread.start()
        let ended = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await done.wait()
                return true
            }
            group.addTask {
                try? await Task.sleep(for: limit)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
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
