import AsyncHTTPClient
import Foundation
import GenGateCore
import NIOCore
import NIOHTTP1
import Synchronization

/// The load generator: submissions over keep-alive connections, closed loop (N clients, each
/// sending its next request when the last is answered) or open loop (a fixed rate, latency
/// measured from when each request was due, so a slow server cannot hide its queueing).
enum HTTPLoad {
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    static func get(_ url: String) async throws -> Int {
        let response = try await client.execute(HTTPClientRequest(url: url), timeout: .seconds(5))
        _ = try await response.body.collect(upTo: 1 << 20)
        return Int(response.status.code)
    }

    struct Result {
        var latencies: [Double] = []  // seconds, answered 2xx
        var failures = 0
        var ids: [String] = []
        var elapsed: Double = 0
        var rate: Double { Double(latencies.count) / max(elapsed, 1e-9) }
    }

    /// A submission with `bearer`'s key (the admin key by default).
    static func submit(_ system: SystemUnderTest, body: String, bearer: String? = nil) async -> (ok: Bool, id: String?)
    {
        var request = HTTPClientRequest(url: system.baseURL + "/v1/generations")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(bearer ?? system.adminKey)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: body))
        do {
            let response = try await client.execute(request, timeout: .seconds(30))
            let bytes = try await response.body.collect(upTo: 1 << 16)
            guard response.status == .accepted else { return (false, nil) }
            let object = try JSONSerialization.jsonObject(with: Data(bytes.readableBytesView)) as? [String: Any]
            return (true, object?["id"] as? String)
        } catch {
            return (false, nil)
        }
    }

    /// A POST of `body` (JSON) to `url`; whether it was answered 200, its body read whole.
    static func post(_ url: String, bearer: String?, body: String) async -> Bool {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: body))
        do {
            let response = try await client.execute(request, timeout: .seconds(30))
            _ = try await response.body.collect(upTo: 1 << 20)
            return response.status == .ok
        } catch {
            return false
        }
    }

    /// `clients` clients submitting back to back until `count` submissions or `duration`.
    static func closedLoop(
        _ system: SystemUnderTest, clients: Int, duration: Duration, count: Int = .max,
        body: @escaping @Sendable (Int) -> String
    ) async -> Result {
        await closedLoop(clients: clients, duration: duration, count: count) { await submit(system, body: body($0)) }
    }

    /// `clients` clients each sending its next request (`send`, given the request's number) when
    /// the last is answered, until `count` requests or `duration`.
    static func closedLoop(
        clients: Int, duration: Duration, count: Int = .max,
        send: @escaping @Sendable (Int) async -> (ok: Bool, id: String?)
    ) async -> Result {
        let taken = Counter()
        let started = ContinuousClock.now
        let parts = await withTaskGroup(of: Result.self) { group in
            for _ in 0..<clients {
                group.addTask {
                    var mine = Result()
                    while ContinuousClock.now - started < duration {
                        let number = taken.value.withLock { value -> Int in
                            value += 1
                            return value
                        }
                        if number > count { break }
                        let sent = ContinuousClock.now
                        let (ok, id) = await send(number)
                        if ok {
                            mine.latencies.append(seconds(ContinuousClock.now - sent))
                            if let id { mine.ids.append(id) }
                        } else {
                            mine.failures += 1
                        }
                    }
                    return mine
                }
            }
            return await group.reduce(into: [Result]()) { $0.append($1) }
        }
        var total = Result()
        for part in parts {
            total.latencies += part.latencies
            total.failures += part.failures
            total.ids += part.ids
        }
        total.elapsed = seconds(ContinuousClock.now - started)
        return total
    }

    /// Submissions offered at `rate` per second for `duration`.
    static func openLoop(
        _ system: SystemUnderTest, rate: Double, duration: Duration,
        body: @escaping @Sendable (Int) -> String
    ) async -> Result {
        let total = Int(rate * seconds(duration))
        let started = ContinuousClock.now
        let parts = await withTaskGroup(of: (Double?, String?).self) { group in
            for number in 0..<total {
                let due = started + .nanoseconds(Int64(Double(number) / rate * 1e9))
                try? await Task.sleep(until: due, clock: .continuous)
                group.addTask {
                    let (ok, id) = await submit(system, body: body(number))
                    return ok ? (seconds(ContinuousClock.now - due), id) : (nil, nil)
                }
            }
            return await group.reduce(into: [(Double?, String?)]()) { $0.append($1) }
        }
        var result = Result()
        for (latency, id) in parts {
            if let latency { result.latencies.append(latency) } else { result.failures += 1 }
            if let id { result.ids.append(id) }
        }
        result.elapsed = seconds(ContinuousClock.now - started)
        return result
    }

    static func seconds(_ duration: Duration) -> Double { duration.inSeconds }
}

extension Array where Element == Double {
    /// The q-quantile (0...1), nearest rank.
    func quantile(_ q: Double) -> Double {
        guard !isEmpty else { return .nan }
        let sorted = self.sorted()
        return sorted[Swift.min(sorted.count - 1, Swift.max(0, Int((q * Double(sorted.count)).rounded(.up)) - 1))]
    }
}

final class Counter: Sendable {
    let value = Mutex(0)
}
