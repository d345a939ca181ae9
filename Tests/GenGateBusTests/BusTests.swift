import Foundation
import XCTest
@testable import GenGateBus
import GenGateCore

/// Bus tests use `inproc://` endpoints (one context per test) unless the case is about paths.
final class BusSocketTests: XCTestCase {
    var context: ZMQContext!

    override func setUp() async throws {
        context = try ZMQContext()
    }

    func endpoint(_ name: String = #function) -> String {
        "inproc://\(name.filter { $0.isLetter })-\(UUID().uuidString.prefix(8))"
    }

    func next(_ socket: BusSocket, timeout: Duration = .seconds(5)) async throws -> [Data] {
        try await withThrowingTaskGroup(of: [Data]?.self) { group in
            group.addTask {
                for await message in socket.messages { return message }
                return nil
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let message = try await group.next() ?? nil else {
                XCTFail("no message within \(timeout)")
                throw BusError.closed
            }
            return message
        }
    }

    func testPushPullCarriesMultipartMessages() async throws {
        let address = endpoint()
        let pull = try await BusSocket.open(context: context, type: .pull, name: "pull", endpoints: [.bind(address)])
        let push = try await BusSocket.open(context: context, type: .push, name: "push", endpoints: [.connect(address)])
        XCTAssertTrue(push.send([Data("a".utf8), Data(), Data("ccc".utf8)]))
        let message = try await next(pull)
        XCTAssertEqual(message, [Data("a".utf8), Data(), Data("ccc".utf8)])
        await push.close()
        await pull.close()
    }

    func testTCPWildcardBindReportsRealPort() async throws {
        let pull = try await BusSocket.open(
            context: context, type: .pull, name: "pull", endpoints: [.bind("tcp://127.0.0.1:*")])
        let bound = try XCTUnwrap(pull.boundEndpoints.first)
        XCTAssertTrue(bound.hasPrefix("tcp://127.0.0.1:"))
        XCTAssertNotEqual(bound, "tcp://127.0.0.1:*")
        let push = try await BusSocket.open(context: context, type: .push, name: "push", endpoints: [.connect(bound)])
        push.send([Data("over tcp".utf8)])
        let message = try await next(pull)
        XCTAssertEqual(message, [Data("over tcp".utf8)])
        await push.close()
        await pull.close()
    }

    func testBindFailureIsReportedNotCrashed() async throws {
        do {
            _ = try await BusSocket.open(context: context, type: .pull, name: "bad", endpoints: [.bind("nonsense://x")])
            XCTFail("binding a nonsense endpoint must fail")
        } catch let error as ZMQError {
            XCTAssertTrue(error.description.contains("zmq_bind"), "\(error)")
        }
    }

    func testOverlongIPCPathIsRefusedWithAClearError() async throws {
        let path = "ipc:///tmp/" + String(repeating: "x", count: 120) + ".sock"
        do {
            _ = try await BusSocket.open(context: context, type: .pull, name: "long", endpoints: [.bind(path)])
            XCTFail("a 130-byte ipc path must be refused")
        } catch let error as BusError {
            XCTAssertEqual(error, .endpointTooLong(endpoint: path, limit: 107))
        }
    }

    func testPushWithoutPeerDropsAfterHandOffTimeoutAndNeverBlocks() async throws {
        var options = BusSocketOptions()
        options.handOffTimeout = .milliseconds(100)
        let push = try await BusSocket.open(
            context: context, type: .push, name: "lonely",
            endpoints: [.bind(endpoint())], options: options)
        let start = ContinuousClock.now
        for _ in 0..<100 { XCTAssertTrue(push.send([Data("x".utf8)])) }
        XCTAssertLessThan(ContinuousClock.now - start, .milliseconds(100), "send must only queue")
        try await Task.sleep(for: .milliseconds(400))
        XCTAssertEqual(push.droppedMessages, 100, "messages nobody could take are dropped and counted")
        await push.close()
    }

    func testABusyPullConsumerStopsReadingSoTheSenderIsPushedBackNotTheConsumerDropping() async throws {
        let address = endpoint()
        var pullOptions = BusSocketOptions()
        pullOptions.inboxLimit = 5
        pullOptions.receiveHighWaterMark = 10
        let pull = try await BusSocket.open(
            context: context, type: .pull, name: "busy", endpoints: [.bind(address)], options: pullOptions)
        var pushOptions = BusSocketOptions()
        pushOptions.sendHighWaterMark = 10
        pushOptions.handOffTimeout = .milliseconds(300)
        let push = try await BusSocket.open(
            context: context, type: .push, name: "eager", endpoints: [.connect(address)], options: pushOptions)
        for number in 0..<200 { push.send([Data("\(number)".utf8)]) }
        try await Task.sleep(for: .milliseconds(800))
        XCTAssertEqual(pull.droppedMessages, 0, "the consumer never drops: it stops reading")
        XCTAssertGreaterThan(push.droppedMessages, 100, "the sender was pushed back, and counted what it gave up")
        let delivered = 200 - push.droppedMessages
        var received: [String] = []
        for _ in 0..<delivered {
            received.append(String(decoding: try await next(pull, timeout: .seconds(2))[0], as: UTF8.self))
        }
        XCTAssertEqual(
            received, (0..<delivered).map(String.init), "what was held arrives, in order, once there is room")
        XCTAssertEqual(BusStatistics.shared.dropped["eager"], push.droppedMessages, "drops are reported for /metrics")
        await push.close()
        await pull.close()
    }

    func testCloseIsPromptWithUnsentMessagesAndContextTerminates() async throws {
        let push = try await BusSocket.open(
            context: context, type: .push, name: "push",
            endpoints: [.connect("tcp://127.0.0.1:9")])  // nobody listens there
        for _ in 0..<1_000 { push.send([Data(repeating: 1, count: 100)]) }
        let start = ContinuousClock.now
        await push.close()
        XCTAssertFalse(push.send([Data()]), "a closed socket takes nothing")
        let context = self.context!
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            Thread {
                context.terminate()
                done.resume()
            }.start()
        }
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(2), "bounded linger keeps shutdown short")
    }
}

final class BusDeviceTests: XCTestCase {
    var context: ZMQContext!

    override func setUp() async throws {
        context = try ZMQContext()
    }

    func testQueueHoldsWorkUntilAConsumerConnectsThenBalances() async throws {
        let id = UUID().uuidString.prefix(8)
        let device = try await BusDevice.start(
            context: context, kind: .queue, name: "q",
            frontend: ["inproc://front-\(id)"], backend: ["inproc://back-\(id)"])
        let producer = try await WorkProducer.connect(
            context: context, queue: .poll, endpoint: "inproc://front-\(id)", source: "test")
        for i in 0..<20 { producer.send(generationID: "gen_\(i)", reason: "test") }
        try await Task.sleep(for: .milliseconds(200))  // no consumer yet: the device must keep them

        let first = try await WorkConsumer.connect(context: context, queue: .poll, endpoint: "inproc://back-\(id)")
        let second = try await WorkConsumer.connect(context: context, queue: .poll, endpoint: "inproc://back-\(id)")
        let received = try await withThrowingTaskGroup(of: [String].self) { group in
            for consumer in [first, second] {
                group.addTask {
                    var ids: [String] = []
                    let deadline = ContinuousClock.now + .seconds(2)
                    for await result in consumer.items {
                        ids.append(try result.get().generationID)
                        if ContinuousClock.now > deadline || ids.count == 20 { break }
                    }
                    return ids
                }
            }
            // Stop both readers once everything has arrived (or time is up).
            try await Task.sleep(for: .seconds(1))
            await first.close()
            await second.close()
            var all: [String] = []
            for try await ids in group { all += ids }
            return all
        }
        XCTAssertEqual(
            Set(received), Set((0..<20).map { "gen_\($0)" }),
            "every message held by the device must arrive exactly once")
        XCTAssertEqual(received.count, 20)
        await producer.close()
        await device.stop()
    }

    func testForwarderFiltersTopicsAndSurvivesASlowSubscriber() async throws {
        let id = UUID().uuidString.prefix(8)
        let device = try await BusDevice.start(
            context: context, kind: .forwarder, name: "events",
            frontend: ["inproc://ev-in-\(id)"], backend: ["inproc://ev-out-\(id)"],
            highWaterMark: 1_000)
        let publisher = try await EventPublisher.connect(
            context: context, endpoint: "inproc://ev-in-\(id)", source: "test")
        // The slow subscriber never reads and has a tiny receive queue.
        var slowOptions = BusSocketOptions()
        slowOptions.subscriptions = [""]
        slowOptions.receiveHighWaterMark = 10
        slowOptions.inboxLimit = 10
        let slow = try await BusSocket.open(
            context: context, type: .sub, name: "slow", endpoints: [.connect("inproc://ev-out-\(id)")],
            options: slowOptions)
        let fast = try await EventSubscriber.connect(
            context: context, endpoint: "inproc://ev-out-\(id)", topics: ["generation."])

        // Slow joiner: publish probes until the subscription has reached the publisher.
        let probe = Task { () -> ReceivedEvent? in
            for await result in fast.events { return try? result.get() }
            return nil
        }
        let prober = Task {
            while !Task.isCancelled {
                publisher.publish(Event(.generationProgress(.init(progress: 10)), generationID: "probe"))
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        let seen = await probe.value
        prober.cancel()
        _ = await prober.value
        XCTAssertEqual(seen?.event.generationID, "probe")
        XCTAssertEqual(seen?.source, "test")

        let start = ContinuousClock.now
        for i in 0..<20_000 {
            let payload: EventPayload =
                i % 2 == 0
                ? .serviceHeartbeat(
                    .init(service: "test", instance: "t", pid: 1, startedAt: Date(), stopping: false, busDropped: [:]))
                : .generationProgress(.init(progress: i % 100))
            publisher.publish(Event(payload, generationID: "gen_\(i)"))
        }
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(5), "publishing must not wait for the slow subscriber")

        let collector = Task { () -> (count: Int, sawLast: Bool, filtered: Bool) in
            var count = 0
            var filtered = true
            for await result in fast.events {
                guard let received = try? result.get() else { continue }
                if !received.event.type.rawValue.hasPrefix("generation.") { filtered = false }
                if received.event.generationID == "gen_19999" { return (count, true, filtered) }
                if received.event.generationID != "probe" { count += 1 }
            }
            return (count, false, filtered)
        }
        let timeout = Task {
            try? await Task.sleep(for: .seconds(10))
            collector.cancel()
        }
        let outcome = await collector.value
        timeout.cancel()
        XCTAssertTrue(outcome.sawLast, "the fast subscriber must get the last event despite the slow one")
        XCTAssertTrue(outcome.filtered, "heartbeats must be filtered out by topic")
        XCTAssertGreaterThan(outcome.count, 0)
        await slow.close()
        await fast.close()
        await publisher.close()
        await device.stop()
    }

}

final class EnvelopeTests: XCTestCase {
    func testRoundTrip() throws {
        let envelope = Envelope(
            type: "work.poll", source: "poller-1", payload: WorkItem(generationID: "gen_1", reason: "test"))
        let decoded = try Envelope<WorkItem>.decode(try envelope.encoded(), expectedType: "work.poll")
        XCTAssertEqual(decoded.payload, envelope.payload)
        XCTAssertEqual(decoded.v, 1)
        XCTAssertEqual(decoded.source, "poller-1")
        XCTAssertTrue(decoded.id.hasPrefix("msg_"))
    }

    func testUnknownVersionIsRejectedLoudly() throws {
        let text =
            #"{"v":2,"type":"work.poll","id":"m","at":"2026-01-01T00:00:00.000Z","source":"s","payload":{"generation_id":"g","reason":"r"}}"#
        XCTAssertThrowsError(try Envelope<WorkItem>.decode(Data(text.utf8), expectedType: "work.poll")) { error in
            XCTAssertEqual(error as? BusError, .unsupportedVersion(version: 2, type: "work.poll"))
        }
        // A later version's payload this build cannot read says the same, not "malformed".
        let later = #"{"v":2,"type":"work.poll","id":"m","at":"2026-01-01T00:00:00.000Z","source":"s","payload":[1]}"#
        XCTAssertThrowsError(try Envelope<WorkItem>.decode(Data(later.utf8), expectedType: "work.poll")) { error in
            XCTAssertEqual(error as? BusError, .unsupportedVersion(version: 2, type: "work.poll"))
        }
    }

    func testWrongTypeAndGarbageAreRejected() {
        let envelope = Envelope(type: "work.upload", source: "s", payload: WorkItem(generationID: "g", reason: "r"))
        XCTAssertThrowsError(try Envelope<WorkItem>.decode(try envelope.encoded(), expectedType: "work.poll"))
        XCTAssertThrowsError(try Envelope<WorkItem>.decode(Data("not json".utf8), expectedType: "work.poll")) { error in
            guard case .malformedMessage = error as? BusError else { return XCTFail("\(error)") }
        }
        let badPayload =
            #"{"v":1,"type":"work.poll","id":"m","at":"2026-01-01T00:00:00.000Z","source":"s","payload":{"x":1}}"#
        XCTAssertThrowsError(try Envelope<WorkItem>.decode(Data(badPayload.utf8), expectedType: "work.poll")) { error in
            guard case .malformedMessage = error as? BusError else { return XCTFail("\(error)") }
        }
    }
}
