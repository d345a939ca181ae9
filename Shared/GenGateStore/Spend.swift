import Foundation
import GenGateCore

/// What keys spend, and the budgets that cap it.
///
/// Each key has a running total per UTC day and per UTC month (`key_spend`). A submission holds
/// back its job's `reservedCost` in the totals of the day and month it was submitted, in the same
/// transaction that makes the job, and only if that keeps both within the key's budgets; writes
/// are serialized (SQLite's writer lock, PostgreSQL's writer lock), so concurrent submitters in
/// any number of processes cannot pass a budget together. When the job ends, a trigger in the
/// store swaps its reservation for what its charged attempts cost (`Attempt.charged`), and an
/// attempt charged after its job ended (a task the sweep could not stop) is added then: the
/// totals are exact for ended jobs and hold the reservation for running ones.
public protocol SpendStore: Sendable {
    /// Sets or clears (`.some(nil)`) a key's budgets; nil leaves one as it is. Nil when there is
    /// no such key, or it is revoked.
    func updateAPIKey(id: String, budgets: BudgetChange) async throws -> APIKey?
    /// A key, revoked or not; nil if there is none.
    func apiKey(id: String) async throws -> APIKey?
    /// What a key has committed in the UTC day and month of `at`.
    func spend(keyID: String, at: Date) async throws -> KeySpend
    /// Spend by UTC day (of each attempt), key, model and provider, over attempts made in
    /// [`from`, `to`), of one key or of all.
    func usage(from: Date, to: Date, keyID: String?) async throws -> [UsageRow]
}

/// A key's budgets, in the price table's currency; nil: none.
public struct KeyBudgets: Codable, Sendable, Equatable {
    public var daily: Double?
    public var monthly: Double?

    public init(daily: Double? = nil, monthly: Double? = nil) {
        self.daily = daily
        self.monthly = monthly
    }
}

/// A change of a key's budgets: `.some(nil)` clears one, nil keeps it.
public struct BudgetChange: Sendable, Equatable {
    public var daily: Double??
    public var monthly: Double??

    public init(daily: Double?? = nil, monthly: Double?? = nil) {
        self.daily = daily
        self.monthly = monthly
    }
}

/// What a key has committed: the cost of its ended jobs' charged attempts and the reservations
/// of its running ones, submitted in one UTC day and one UTC month.
public struct KeySpend: Sendable, Equatable {
    public var day: Double
    public var month: Double

    public init(day: Double, month: Double) {
        self.day = day
        self.month = month
    }
}

/// Refused: the submission would take its key past a budget. Nothing was written.
public struct BudgetExceeded: Error, Sendable, Equatable {
    public enum Period: String, Sendable {
        case daily, monthly
    }

    public var period: Period
    public var budget: Double
    /// Committed already in the period.
    public var committed: Double
    /// What the submission would hold back.
    public var requested: Double

    public init(period: Period, budget: Double, committed: Double, requested: Double) {
        self.period = period
        self.budget = budget
        self.committed = committed
        self.requested = requested
    }
}

/// Refused: the job's route has a model without a price, and its key has a budget. Nothing was
/// written.
public struct UnpricedModel: Error, Sendable, Equatable {
    public var model: String

    public init(model: String) { self.model = model }
}

/// The names of a moment's spend periods, as `key_spend` keeps them and the stores' triggers
/// spell them: `day:2026-12-06` and `month:2026-12`, in UTC.
public enum SpendPeriod {
    public static func names(at date: Date) -> (day: String, month: String) {
        let day = day(of: date)
        return ("day:\(day)", "month:\(day.prefix(7))")
    }

    /// The UTC day of `date` as usage reports it: `2026-12-06`. Whole seconds, as the stores'
    /// SQL takes them (a moment a hair before midnight is the day it ends, in every spelling).
    public static func day(of date: Date) -> String {
        let second = Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.down))
        let parts = Calendar.utc.dateComponents([.year, .month, .day], from: second)
        return String(format: "%04d-%02d-%02d", parts.year ?? 1970, parts.month ?? 1, parts.day ?? 1)
    }

    /// A millionth: sums of floating-point amounts are not exact.
    public static let slack = 0.000_001

    /// Checks `amount` more against a key's budgets and what it committed; throws
    /// `BudgetExceeded` for the first budget it would pass. A request of nothing passes a budget
    /// already used up (it cannot take the key further past it).
    public static func check(_ amount: Double, budgets: KeyBudgets, committed: KeySpend) throws {
        if let daily = budgets.daily, amount > 0, committed.day + amount > daily + slack {
            throw BudgetExceeded(period: .daily, budget: daily, committed: committed.day, requested: amount)
        }
        if let monthly = budgets.monthly, amount > 0, committed.month + amount > monthly + slack {
            throw BudgetExceeded(period: .monthly, budget: monthly, committed: committed.month, requested: amount)
        }
    }

    /// When the UTC day and month of `date` began.
    public static func starts(of date: Date) -> (day: Date, month: Date) {
        let calendar = Calendar.utc
        let day = calendar.startOfDay(for: date)
        let month = calendar.date(from: calendar.dateComponents([.year, .month], from: date)) ?? day
        return (day, month)
    }
}

extension Calendar {
    /// The Gregorian calendar in UTC, as spend periods and usage days count.
    public static let utc: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }()
}

/// Spend of one UTC day, key, model and provider.
public struct UsageRow: Sendable, Equatable {
    /// `2026-12-06`.
    public var day: String
    public var keyID: String
    public var model: String
    public var provider: String
    /// Jobs with an attempt that day.
    public var jobs: Int
    public var attempts: Int
    public var chargedAttempts: Int
    /// The cost of the charged attempts.
    public var amount: Double
    /// The part of `amount` paid for attempts that delivered nothing.
    public var wasted: Double
    public var doubleCharges: Int
    /// What providers reported, summed.
    public var reported: ProviderCharge

    public init(
        day: String, keyID: String, model: String, provider: String, jobs: Int, attempts: Int, chargedAttempts: Int,
        amount: Double, wasted: Double, doubleCharges: Int, reported: ProviderCharge
    ) {
        self.day = day
        self.keyID = keyID
        self.model = model
        self.provider = provider
        self.jobs = jobs
        self.attempts = attempts
        self.chargedAttempts = chargedAttempts
        self.amount = amount
        self.wasted = wasted
        self.doubleCharges = doubleCharges
        self.reported = reported
    }
}

/// `Attempt.charged` as SQL, over the attempts row `a` (`NEW`, `OLD`, an alias); `boolean`: flags
/// are SQL booleans (PostgreSQL), else integers 0 and 1 (SQLite).
public enum ChargedSQL {
    public static func charged(_ a: String, boolean: Bool) -> String {
        let yes = boolean ? "" : " = 1"
        return "(\(a).state = 'succeeded' OR \(a).possible_double_charge\(yes) OR \(a).charge IS NOT NULL"
            + " OR (\(a).charges_on_acceptance\(yes) AND \(a).provider_task_id IS NOT NULL))"
    }
}
