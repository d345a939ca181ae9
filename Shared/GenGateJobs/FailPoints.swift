import Foundation

/// Places in the engine where a test can make this process die (SIGKILL) or be asked to stop
/// (SIGTERM), to prove that no job is lost and no submission paid twice whatever step a process
/// stops at. Armed only by `GENGATE_FAILPOINTS` (`name=kill,name=term`), which the services read
/// once at start; each fires at most once per data directory (a marker file remembers it), so
/// a restarted process goes on past it. Off, every check is one dictionary look-up.
public struct FailPoints: Sendable {
    public enum Action: String, Sendable {
        case kill
        case term
    }

    /// Every point the engine has, in the order a job meets them.
    public enum Point: String, Sendable, CaseIterable {
        /// The attempt is on record; the provider has not been called.
        case beforeSubmit = "submit.before_call"
        /// The provider accepted the submission; its answer is not recorded yet.
        case afterSubmit = "submit.after_call"
        /// The submission's outcome and the move to `running` are committed.
        case afterRecord = "submit.after_record"
        /// A status check was made; its outcome is not recorded yet.
        case afterCheck = "check.after_call"
        /// An output was written to object storage; its checkpoint is not recorded yet.
        case afterStore = "upload.after_put"
    }

    let armed: [Point: Action]
    let markerDirectory: URL?

    public static let none = FailPoints(armed: [:], markerDirectory: nil)

    /// Parses `spec` (`submit.after_call=kill,check.after_call=term`); throws on unknown names.
    public init(spec: String, markerDirectory: URL) throws {
        var armed: [Point: Action] = [:]
        for part in spec.split(separator: ",") where !part.trimmingCharacters(in: .whitespaces).isEmpty {
            let pieces = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard let point = Point(rawValue: pieces[0]) else {
                throw FailPointError(
                    "unknown fail point \(pieces[0]); known: \(Point.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let action = pieces.count > 1 ? Action(rawValue: pieces[1]) : .kill
            guard let action else { throw FailPointError("fail point \(pieces[0]): action must be kill or term") }
            armed[point] = action
        }
        self.init(armed: armed, markerDirectory: markerDirectory)
    }

    init(armed: [Point: Action], markerDirectory: URL?) {
        self.armed = armed
        self.markerDirectory = markerDirectory
    }

    /// Reached `point`: if armed and not yet fired, SIGKILL (never returns) or SIGTERM to self
    /// (returns: the process goes on and drains).
    public func reached(_ point: Point) {
        guard let action = armed[point], let markerDirectory else { return }
        let marker = markerDirectory.appendingPathComponent("failpoint.\(point.rawValue)").path
        let fd = open(marker, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { return }  // fired before
        close(fd)
        FileHandle.standardError.write(Data("fail point \(point.rawValue): \(action.rawValue)\n".utf8))
        kill(getpid(), action == .kill ? SIGKILL : SIGTERM)
    }
}

public struct FailPointError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
