import Foundation
import GenGateCore
import Metrics

/// The last heartbeat of every service instance, and what it says about health.
actor ServiceTable {
    struct Instance {
        var service: String
        var instance: String
        var pid: Int?
        var startedAt: String?
        var lastSeen: ContinuousClock.Instant
        var lastSeenDate: Date
    }

    /// The services a complete deployment runs (`monitor.expected_services`).
    let expected: [String]

    private var instances: [String: Instance] = [:]
    /// The last heartbeat of any instance of each service, a stopping one's included: a service
    /// restarted in place is not missing meanwhile.
    private var lastSeenByService: [String: ContinuousClock.Instant] = [:]
    private let started = ContinuousClock.now
    let staleAfter: Double

    init(staleAfter: Double, expected: [String]) {
        self.staleAfter = staleAfter
        self.expected = expected
    }

    func heartbeat(_ beat: EventPayload.Heartbeat) {
        lastSeenByService[beat.service] = .now
        if beat.stopping {
            instances[beat.instance] = nil
            return
        }
        instances[beat.instance] = Instance(
            service: beat.service, instance: beat.instance, pid: beat.pid,
            startedAt: Timestamp.format(beat.startedAt), lastSeen: .now, lastSeenDate: Date())
    }

    private func age(_ instance: Instance) -> Double {
        (ContinuousClock.now - instance.lastSeen).inSeconds
    }

    /// Each expected service and the seconds since any of its instances beat last (since this
    /// monitor started, for one never heard from: a monitor that just started gives every
    /// service time to be heard).
    func heartbeatAges() -> [(service: String, heartbeatAge: Double?)] {
        expected.map { service in
            (service, (ContinuousClock.now - (lastSeenByService[service] ?? started)).inSeconds)
        }
    }

    /// Sets `gengate_service_heartbeat_age_seconds` per service (its freshest instance) and
    /// `gengate_service_up`, just before a scrape.
    func recordAges() {
        for service in Set(expected + instances.values.map(\.service)) {
            let ages = instances.values.filter { $0.service == service }.map(age)
            let freshest = ages.min()
            Gauge(label: "gengate_service_heartbeat_age_seconds", dimensions: [("service", service)]).record(
                freshest ?? -1)
            Gauge(label: "gengate_service_up", dimensions: [("service", service)])
                .record(freshest.map { $0 <= staleAfter ? 1 : 0 } ?? 0)
        }
    }

    /// Health per service; healthy when every expected service has a fresh heartbeat.
    func report() -> (healthy: Bool, json: Data) {
        let (healthy, services) = statuses()
        let body: JSONValue = .object([
            "status": .string(healthy ? "ok" : "degraded"),
            "stale_after_seconds": .number(staleAfter),
            "services": .object(services),
        ])
        return (healthy, (try? JSONCoding.encode(body)) ?? Data())
    }

    /// Each service (`status`: ok, stale or missing, and its instances), and whether every
    /// expected one is ok.
    func statuses() -> (healthy: Bool, services: [String: JSONValue]) {
        var services: [String: JSONValue] = [:]
        var healthy = true
        for service in Set(expected + instances.values.map(\.service)).sorted() {
            let members = instances.values.filter { $0.service == service }.sorted { $0.instance < $1.instance }
            let rendered = members.map { member -> JSONValue in
                let age = age(member)
                return .object([
                    "instance": .string(member.instance),
                    "pid": member.pid.map { .number(Double($0)) } ?? .null,
                    "started_at": member.startedAt.map(JSONValue.string) ?? .null,
                    "last_heartbeat_at": .string(Timestamp.format(member.lastSeenDate)),
                    "heartbeat_age_seconds": .number((age * 1_000).rounded() / 1_000),
                    "status": .string(age <= staleAfter ? "ok" : "stale"),
                ])
            }
            let fresh = members.contains { age($0) <= staleAfter }
            if expected.contains(service) && !fresh { healthy = false }
            services[service] = .object([
                "status": .string(fresh ? "ok" : (members.isEmpty ? "missing" : "stale")),
                "instances": .array(rendered),
            ])
        }
        return (healthy, services)
    }
}
