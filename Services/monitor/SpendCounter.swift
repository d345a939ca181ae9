import Foundation
import GenGateCore
import GenGateStore
import Metrics

/// `gengate_spend_total` and `gengate_spend_wasted_total`: what charged attempts cost, by
/// provider and model, read from the store at each scrape (never from events, which may be
/// lost). Each scrape reads yesterday's and today's attempts (UTC, by index) and adds what grew
/// since the last one; a change to an older attempt's cost is not counted. A monitor that
/// starts counts today's and yesterday's spend at its first scrape, as a counter reset.
actor SpendCounter {
    private struct Key: Hashable {
        var day: String
        var provider: String
        var model: String
    }

    private var seen: [Key: (amount: Double, wasted: Double)] = [:]
    let store: any GenerationStore
    let currency: String

    init(store: any GenerationStore, currency: String) {
        self.store = store
        self.currency = currency
    }

    func refresh(now: Date = Date()) async throws {
        let yesterday = SpendPeriod.starts(of: now).day.addingTimeInterval(-86_400)
        let rows = try await store.usage(from: yesterday, to: now.addingTimeInterval(86_400), keyID: nil)
        var totals: [Key: (amount: Double, wasted: Double)] = [:]
        for row in rows {
            let key = Key(day: row.day, provider: row.provider, model: row.model)
            let sum = totals[key] ?? (0, 0)
            totals[key] = (sum.amount + row.amount, sum.wasted + row.wasted)
        }
        for (key, total) in totals {
            let before = seen[key] ?? (0, 0)
            let dimensions = [("provider", key.provider), ("model", key.model), ("currency", currency)]
            if total.amount > before.amount {
                FloatingPointCounter(label: "gengate_spend_total", dimensions: dimensions).increment(
                    by: total.amount - before.amount)
            }
            if total.wasted > before.wasted {
                FloatingPointCounter(label: "gengate_spend_wasted_total", dimensions: dimensions).increment(
                    by: total.wasted - before.wasted)
            }
        }
        seen = totals
    }
}
