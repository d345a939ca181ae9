import Foundation

/// `body`'s result, or a `DeadlinePassed` failure after `limit`, or a `CancellationError` as
/// soon as the caller is cancelled. The body is cancelled then, and not waited for: a call that
/// ignores cancellation is left behind, not waited on.
public func withDeadline<T: Sendable>(
    _ limit: Duration, _ body: @escaping @Sendable () async throws -> T
) async -> Result<T, any Error> {
    let outcome = Locked<CheckedContinuation<Result<T, any Error>, Never>?>(nil)
    let tasks = Locked<[Task<Void, Never>]>([])
    @Sendable func finish(_ result: Result<T, any Error>) {
        let pending = outcome.withLock { pending -> CheckedContinuation<Result<T, any Error>, Never>? in
            defer { pending = nil }
            return pending
        }
        pending?.resume(returning: result)
        for task in tasks.withLock({ $0 }) { task.cancel() }
    }
    return await withTaskCancellationHandler {
        await withCheckedContinuation { continuation in
            outcome.withLock { $0 = continuation }
            let work = Task {
                let result: Result<T, any Error>
                do { result = .success(try await body()) } catch { result = .failure(error) }
                finish(result)
            }
            let timer = Task {
                try? await Task.sleep(for: limit)
                finish(.failure(DeadlinePassed(limit: limit)))
            }
            tasks.withLock { $0 = [work, timer] }
            // Finished before the tasks were known (so not cancelled by it), or cancelled before
            // the handler below could find anything to finish.
            if outcome.withLock({ $0 == nil }) {
                work.cancel()
                timer.cancel()
            }
            if Task.isCancelled { finish(.failure(CancellationError())) }
        }
    } onCancel: {
        finish(.failure(CancellationError()))
    }
}

/// A call that did not answer in time.
public struct DeadlinePassed: Error, CustomStringConvertible {
    public var limit: Duration
    public var description: String { "no answer within \(limit)" }
}
