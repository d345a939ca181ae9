import ArgumentParser

/// `gengate`: runs the whole system on one host (`up`), prepares a store (`migrate`), and is the
/// command-line client of a running GenGate (`submit`, `status`, `watch`, `cancel`).
@main
struct GenGateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gengate",
        abstract: "A self-hosted gateway for AI generation jobs.",
        subcommands: [
            UpCommand.self, MigrateCommand.self, ConfigCommand.self, SubmitCommand.self, StatusCommand.self,
            WatchCommand.self,
            CancelCommand.self,
        ])
}
