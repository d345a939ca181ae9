import Foundation
import GenGateRuntime
import GenGateStore
import Logging

/// Voids the leases of service processes known to be gone, so their jobs move on in seconds
/// rather than when the leases run out: a child the supervisor saw exit, and, when `gengate up`
/// starts, any process of this host named in a lease that no longer runs (the whole stack was
/// killed). A lease period stays the bound only for a process that is alive but silent.
struct LeaseReaper: Sendable {
    let store: any GenerationStore
    let staleAfterSeconds: Double
    let logger: Logger

    /// A child of ours exited: nothing it held is held any more.
    func processEnded(_ instance: String) async {
        await release([instance], why: "its process exited")
    }

    /// Leases of this host's processes that are not running now.
    func reapGoneProcesses() async {
        guard let owners = try? await store.leaseOwners() else { return }
        let gone = owners.filter { owner in
            guard let (service, pid, host) = ServiceEnvironment.parseInstance(owner),
                host == ServiceEnvironment.hostName
            else {
                return false
            }
            return !Self.isRunning(pid: pid, service: service)
        }
        await release(gone, why: "its process is gone")
    }

    func release(_ owners: [String], why: String) async {
        guard !owners.isEmpty else { return }
        // Due since before the sweep's grace, so the next sweep re-drives them at once.
        let dueAt = Date().addingTimeInterval(-staleAfterSeconds - 1)
        do {
            let count = try await store.releaseLeases(owners: owners, dueAt: dueAt)
            if count > 0 {
                logger.notice(
                    "voided leases", metadata: ["owners": "\(owners)", "leases": "\(count)", "why": "\(why)"])
            }
        } catch {
            logger.error("cannot void leases", metadata: ["owners": "\(owners)", "error": "\(error)"])
        }
    }

    /// Whether `pid` is a running process of `service` (not some other process that was given
    /// the same pid since).
    static func isRunning(pid: Int32, service: String) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let name = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8) else { return true }
        return service.hasPrefix(name.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
