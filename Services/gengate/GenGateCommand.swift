import ArgumentParser

/// `gengate`: runs the whole system on one host, or some of its services (`up`), the message bus
/// alone (`bus`), prepares a store (`migrate`), and is the
/// command-line client of a running GenGate (`submit`, `status`, `watch`, `cancel`).
@main
struct GenGateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gengate",
        abstract: "A self-hosted gateway for AI generation jobs.",
        subcommands: [
            UpCommand.self, BusCommand.self, MigrateCommand.self, ConfigCommand.self, SubmitCommand.self,
            StatusCommand.self,
            WatchCommand.self,
            CancelCommand.self,
        ])
}
