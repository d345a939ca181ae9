import GenGateBus
import GenGateJobs

/// One producer per work queue, and the engine's `notify` wired to them: the step that works on
/// a job is told to look at it now.
public struct WorkProducers: Sendable {
    let producers: [WorkQueue: WorkProducer]

    public static func connect(_ environment: ServiceEnvironment) async throws -> WorkProducers {
        var producers: [WorkQueue: WorkProducer] = [:]
        for queue in WorkQueue.allCases {
            producers[queue] = try await WorkProducer.connect(
                context: environment.zmq, queue: queue,
                endpoint: environment.topology.producerEndpoint(queue),
                source: environment.instance)
        }
        return WorkProducers(producers: producers)
    }

    /// The queue each step reads.
    public static func queue(for step: Lifecycle.Step) -> WorkQueue {
        switch step {
        case .submit: return .dispatch
        case .check: return .poll
        case .upload: return .upload
        }
    }

    public var notify: @Sendable (Lifecycle.Step, String, String) -> Void {
        { [producers] step, id, reason in producers[Self.queue(for: step)]?.send(generationID: id, reason: reason) }
    }

    public func close() async {
        for producer in producers.values { await producer.close() }
    }
}
