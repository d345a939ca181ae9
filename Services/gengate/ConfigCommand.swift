import ArgumentParser
import Foundation
import GenGateRuntime

/// `gengate config`: prints the configuration as resolved from defaults, the file and the
/// environment, in the file format, so an operator sees exactly what the services will use.
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Print the resolved configuration.")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let config: GenGateConfig
        do {
            config = try options.load()
        } catch {
            throw ValidationError("\(error)")
        }
        // A password in the store's URL is not printed.
        let shown = config.withoutStorePassword().config
        print(String(decoding: try ConfigLoader.encoded(shown), as: UTF8.self))
    }
}
