import Foundation
import GenGateBus
import GenGateCore

/// The endpoints of every bus channel. Devices (run by `gengate up` or `gengate bus`) bind them;
/// services connect. By default they are `ipc://` sockets under `<data dir>/run`, or under a
/// short directory in /tmp when that path would pass the 107-byte Unix socket limit; with
/// `bus.host` set, TCP ports of that host, so services on other hosts reach them.
public struct BusTopology: Sendable, Equatable {
    /// Names usable in `bus.endpoints` of the configuration.
    public static let endpointNames = [
        "dispatch-in", "dispatch-out", "poll-in", "poll-out", "upload-in", "upload-out",
        "events-in", "events-out",
    ]

    /// Where services connect, by name.
    public var endpoints: [String: String]
    /// Where the devices bind, by name: the same, but for TCP ports of `bus.host`, bound on
    /// `bus.bind_host`.
    public var bindEndpoints: [String: String]
    /// The public event stream, bound in addition to `events-out`.
    public var eventsPublic: String

    public init(config: GenGateConfig) {
        let runDirectory = Self.socketDirectory(for: config)
        var endpoints: [String: String] = [:]
        var bindEndpoints: [String: String] = [:]
        for (offset, name) in Self.endpointNames.enumerated() {
            if let given = config.bus.endpoints[name] {
                endpoints[name] = given
                bindEndpoints[name] = given
            } else if let host = config.bus.host {
                endpoints[name] = "tcp://\(Self.bracketed(host)):\(config.bus.port + offset)"
                bindEndpoints[name] = "tcp://\(Self.bracketed(config.bus.bindHost)):\(config.bus.port + offset)"
            } else {
                endpoints[name] = "ipc://\(runDirectory)/\(name).sock"
                bindEndpoints[name] = endpoints[name]
            }
        }
        self.endpoints = endpoints
        self.bindEndpoints = bindEndpoints
        self.eventsPublic = "tcp://\(Self.bracketed(config.bus.eventsHost)):\(config.bus.eventsPort)"
    }

    /// An IPv6 address in brackets, as ZeroMQ's TCP endpoints want it.
    static func bracketed(_ host: String) -> String {
        host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
    }

    /// Where producers of `queue` connect (the device's frontend).
    public func producerEndpoint(_ queue: WorkQueue) -> String { endpoints["\(queue.rawValue)-in"]! }
    /// Where consumers of `queue` connect (the device's backend).
    public func consumerEndpoint(_ queue: WorkQueue) -> String { endpoints["\(queue.rawValue)-out"]! }
    public var eventsPublisherEndpoint: String { endpoints["events-in"]! }
    public var eventsSubscriberEndpoint: String { endpoints["events-out"]! }

    /// The directory for `ipc://` sockets: `<data dir>/run` when its socket paths fit.
    public static func socketDirectory(for config: GenGateConfig) -> String {
        let preferred = config.runDirectory.path
        let longestName = endpointNames.map(\.utf8.count).max()! + ".sock/".utf8.count
        if preferred.utf8.count + longestName <= 100 { return preferred }
        let digest = Digest.sha256Hex(config.dataDirectory.path).prefix(16)
        return "/tmp/gengate-\(digest)"
    }
}
