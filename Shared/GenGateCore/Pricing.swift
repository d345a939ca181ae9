import Foundation

/// How a model is priced: any of these, added up (most models have one).
public struct Price: Codable, Sendable, Equatable {
    public var perImage: Double?
    public var perVideoSecond: Double?
    public var perMegapixel: Double?
    public var perThousandInputTokens: Double?
    public var perThousandOutputTokens: Double?
    /// A flat price for each output's call.
    public var perCall: Double?

    public init(
        perImage: Double? = nil, perVideoSecond: Double? = nil, perMegapixel: Double? = nil,
        perThousandInputTokens: Double? = nil, perThousandOutputTokens: Double? = nil, perCall: Double? = nil
    ) {
        self.perImage = perImage
        self.perVideoSecond = perVideoSecond
        self.perMegapixel = perMegapixel
        self.perThousandInputTokens = perThousandInputTokens
        self.perThousandOutputTokens = perThousandOutputTokens
        self.perCall = perCall
    }

    /// Its fields as the API shows them (the configuration file spells them the same).
    public var json: JSONValue {
        var fields: [String: JSONValue] = [:]
        let named: [(String, Double?)] = [
            ("per_image", perImage), ("per_video_second", perVideoSecond), ("per_megapixel", perMegapixel),
            ("per_thousand_input_tokens", perThousandInputTokens),
            ("per_thousand_output_tokens", perThousandOutputTokens), ("per_call", perCall),
        ]
        for (name, value) in named { if let value { fields[name] = .number(value) } }
        return .object(fields)
    }

    /// What is wrong with it, or nil: prices are not negative, and a price has at least one.
    public var problem: String? {
        let all = [perImage, perVideoSecond, perMegapixel, perThousandInputTokens, perThousandOutputTokens, perCall]
        if all.allSatisfy({ $0 == nil }) {
            return
                "names no price (per_image, per_video_second, per_megapixel, per_thousand_input_tokens, per_thousand_output_tokens, per_call)"
        }
        if all.contains(where: { ($0 ?? 0) < 0 || !($0 ?? 0).isFinite }) { return "has a negative price" }
        return nil
    }
}

/// What a provider reported charging for one submission, in its own units: credits (Flux's
/// `cost`, Pollo's `credit`) or tokens (OpenAI's `usage`).
public struct ProviderCharge: Codable, Sendable, Equatable {
    public var credits: Double?
    public var inputTokens: Int?
    public var outputTokens: Int?

    public init(credits: Double? = nil, inputTokens: Int? = nil, outputTokens: Int? = nil) {
        self.credits = credits
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
    }

    /// Nothing reported.
    public var isEmpty: Bool { credits == nil && inputTokens == nil && outputTokens == nil }

    public var json: JSONValue {
        var fields: [String: JSONValue] = [:]
        if let credits { fields["credits"] = .number(credits) }
        if let inputTokens { fields["input_tokens"] = .number(Double(inputTokens)) }
        if let outputTokens { fields["output_tokens"] = .number(Double(outputTokens)) }
        return .object(fields)
    }

    /// This and another call's report, summed field by field.
    public func adding(_ other: ProviderCharge) -> ProviderCharge {
        func sum<T: AdditiveArithmetic>(_ a: T?, _ b: T?) -> T? {
            guard let b else { return a }
            return (a ?? .zero) + b
        }
        return ProviderCharge(
            credits: sum(credits, other.credits), inputTokens: sum(inputTokens, other.inputTokens),
            outputTokens: sum(outputTokens, other.outputTokens))
    }

    /// This and a later report of the same call: what the later one says wins.
    public func merged(with later: ProviderCharge) -> ProviderCharge {
        ProviderCharge(
            credits: later.credits ?? credits, inputTokens: later.inputTokens ?? inputTokens,
            outputTokens: later.outputTokens ?? outputTokens)
    }
}

/// What a job cost so far: the sum of its charged attempts (`Attempt.charged`), those that
/// delivered nothing (failed after the provider charged, or counted as possible double charges)
/// included, and what the providers reported beside it.
public struct JobCost: Sendable, Equatable {
    public var amount: Double
    public var currency: String
    /// Attempts counted as paid for.
    public var chargedAttempts: Int
    /// The part of `amount` paid for attempts that delivered nothing.
    public var wasted: Double
    /// Attempts counted as possible double charges.
    public var doubleCharges: Int
    /// Attempts recorded before costs were (not in `amount`).
    public var unknown: Int
    /// The providers' own reports, summed.
    public var reported: ProviderCharge

    public init(_ attempts: [Attempt], currency: String) {
        self.currency = currency
        amount = 0
        chargedAttempts = 0
        wasted = 0
        doubleCharges = 0
        unknown = 0
        reported = ProviderCharge()
        for attempt in attempts {
            if let charge = attempt.charge { reported = reported.adding(charge) }
            if attempt.possibleDoubleCharge { doubleCharges += 1 }
            guard attempt.charged else { continue }
            chargedAttempts += 1
            guard let cost = attempt.cost else {
                unknown += 1
                continue
            }
            amount += cost
            if attempt.state != .succeeded { wasted += cost }
        }
    }

    public var json: JSONValue {
        var fields: [String: JSONValue] = [
            "amount": .number(Money.rounded(amount)), "currency": .string(currency),
            "charged_attempts": .number(Double(chargedAttempts)), "wasted": .number(Money.rounded(wasted)),
            "double_charges": .number(Double(doubleCharges)),
        ]
        if unknown > 0 { fields["attempts_without_cost"] = .number(Double(unknown)) }
        if !reported.isEmpty { fields["reported"] = reported.json }
        return .object(fields)
    }
}

/// Amounts of money as the API shows them: to a millionth.
public enum Money {
    public static func rounded(_ amount: Double) -> Double { (amount * 1_000_000).rounded() / 1_000_000 }
}

/// What a request is expected to cost, before it is sent.
public struct CostEstimate: Sendable, Equatable {
    public var amount: Double
    public var currency: String
    /// How it was reached, e.g. "4 images × 0.04".
    public var basis: String
    /// The price is GenGate's shipped default (a list price when written, not the operator's
    /// contract), not one the configuration set.
    public var defaultPrice: Bool
    /// False when the model has no price at all (the amount is then 0).
    public var priced: Bool

    public var json: JSONValue {
        .object([
            "amount": .number(Money.rounded(amount)), "currency": .string(currency),
            "basis": .string(basis), "default_price": .bool(defaultPrice), "priced": .bool(priced),
        ])
    }
}

/// The prices of models: the configuration's (`pricing.models`), else GenGate's shipped
/// defaults, which are list prices when written and marked as defaults wherever shown.
public struct PriceTable: Sendable, Equatable {
    public var currency: String
    public var configured: [String: Price]

    public init(currency: String = "USD", configured: [String: Price] = [:]) {
        self.currency = currency
        self.configured = configured
    }

    /// A model's price, and whether it is a shipped default.
    public func price(of model: String) -> (price: Price, isDefault: Bool)? {
        if let price = configured[model] { return (price, false) }
        if let price = Self.defaults[model] { return (price, true) }
        return nil
    }

    /// What `n` outputs of `model` are expected to cost:
    /// images by count or megapixels (`width` × `height`, or `params.width` × `params.height`
    /// when larger; 1 MP when unsaid), video by seconds (the larger of `params.duration` and
    /// `params.length`, 5 when unsaid), text by tokens (the prompt's at about four bytes a token
    /// for each output's call, the answer's `params.max_tokens` or `max_completion_tokens`, else
    /// 1000). A request's figures count when they are numbers (or numeric strings) above 0, up to
    /// `largestQuantity`; others are taken as unsaid, so no request lowers its own estimate.
    public func estimate(
        model: String, n: Int, width: Int?, height: Int?, prompt: String, params: [String: JSONValue]
    ) -> CostEstimate {
        guard let (price, isDefault) = price(of: model) else {
            return CostEstimate(
                amount: 0, currency: currency, basis: "no price for \(model)", defaultPrice: false, priced: false)
        }
        var amount = 0.0
        var parts: [String] = []
        func add(_ value: Double, _ text: String) {
            amount += value
            parts.append(text)
        }
        // A request's own figures count only when they make sense (finite, not negative, within
        // reason): a negative or infinite duration must never lower an estimate, nor a budget's
        // reservation.
        func number(_ value: JSONValue?) -> Double? {
            guard let given = value?.doubleValue ?? value?.stringValue.flatMap(Double.init), given.isFinite,
                given > 0
            else { return nil }
            return min(given, Self.largestQuantity)
        }
        // Where a request may say a quantity in more than one field (adapters pass `params` on
        // whole, and providers read one or the other), the largest is taken.
        func largest(_ names: String...) -> Double? { names.compactMap { number(params[$0]) }.max() }
        let count = Double(n)
        if let each = price.perImage { add(count * each, "\(n) × \(each) an image") }
        if let each = price.perCall { add(count * each, "\(n) × \(each) a call") }
        if let each = price.perMegapixel {
            let wide = max(Double(width ?? 0), largest("width") ?? 0)
            let high = max(Double(height ?? 0), largest("height") ?? 0)
            let megapixels = (wide > 0 ? wide : 1_000) * (high > 0 ? high : 1_000) / 1_000_000
            add(count * megapixels * each, "\(n) × \(Self.short(megapixels)) MP × \(each)")
        }
        if let each = price.perVideoSecond {
            let seconds = largest("duration", "length") ?? 5
            add(count * seconds * each, "\(n) × \(Self.short(seconds)) s × \(each)")
        }
        if price.perThousandInputTokens != nil || price.perThousandOutputTokens != nil {
            let input = Double((prompt.utf8.count + 3) / 4)
            let output = largest("max_tokens", "max_completion_tokens") ?? 1_000
            // Each output's call sends the prompt.
            if let each = price.perThousandInputTokens {
                add(count * input / 1_000 * each, "\(n) × \(Int(input)) input tokens × \(each)/1k")
            }
            if let each = price.perThousandOutputTokens {
                add(count * output / 1_000 * each, "\(n) × \(Int(output)) output tokens × \(each)/1k")
            }
        }
        return CostEstimate(
            amount: amount, currency: currency, basis: parts.joined(separator: " + "), defaultPrice: isDefault,
            priced: true)
    }

    /// The most seconds or tokens an estimate takes from a request's params.
    public static let largestQuantity = 10_000_000.0

    /// What a call cost by what its provider reported, where the model is priced by tokens and
    /// the provider said how many it used (its `per_call` added); nil otherwise (the estimate stands).
    public func actual(model: String, charge: ProviderCharge?) -> Double? {
        guard let charge, charge.inputTokens != nil || charge.outputTokens != nil,
            let (price, _) = price(of: model),
            price.perThousandInputTokens != nil || price.perThousandOutputTokens != nil
        else { return nil }
        let input = Double(charge.inputTokens ?? 0) / 1_000 * (price.perThousandInputTokens ?? 0)
        let output = Double(charge.outputTokens ?? 0) / 1_000 * (price.perThousandOutputTokens ?? 0)
        return input + output + (price.perCall ?? 0)
    }

    /// The most a request can be expected to cost on any model of its route (the model itself
    /// when it has none): what a budget holds back for it.
    public func reservation(
        models: [String], n: Int, width: Int?, height: Int?, prompt: String, params: [String: JSONValue]
    ) -> Double {
        models.map {
            estimate(model: $0, n: n, width: width, height: height, prompt: prompt, params: params).amount
        }.max() ?? 0
    }

    static func short(_ value: Double) -> String { String(format: "%g", (value * 100).rounded() / 100) }

    /// GenGate's shipped prices, in US dollars: the providers' public list prices for a standard
    /// output when written (Kling and Pollo sell credits; these are their pay-as-you-go rates
    /// turned into dollars). Defaults only: set `pricing.models` to what your contract says.
    public static let defaults: [String: Price] = [
        "sim/image": Price(perImage: 0), "sim/video": Price(perVideoSecond: 0),
        "sim/text": Price(perThousandInputTokens: 0, perThousandOutputTokens: 0),
        "flux/flux-pro-1.1": Price(perImage: 0.04), "flux/flux-pro-1.1-ultra": Price(perImage: 0.06),
        "flux/flux-pro": Price(perImage: 0.05), "flux/flux-dev": Price(perImage: 0.025),
        "flux/flux-kontext-pro": Price(perImage: 0.04), "flux/flux-kontext-max": Price(perImage: 0.08),
        "flux/flux-2-pro": Price(perMegapixel: 0.03),
        "replicate/black-forest-labs/flux-schnell": Price(perImage: 0.003),
        "replicate/black-forest-labs/flux-dev": Price(perImage: 0.025),
        "replicate/black-forest-labs/flux-1.1-pro": Price(perImage: 0.04),
        "replicate/black-forest-labs/flux-kontext-pro": Price(perImage: 0.04),
        "replicate/minimax/video-01": Price(perCall: 0.5),
        "kling/kling-v1": Price(perVideoSecond: 0.028), "kling/kling-v1-6": Price(perVideoSecond: 0.056),
        "kling/kling-v2-master": Price(perVideoSecond: 0.28), "kling/kling-v2-1": Price(perVideoSecond: 0.056),
        "kling/kling-v2-1-master": Price(perVideoSecond: 0.28), "kling/kling-v2-5-turbo": Price(perVideoSecond: 0.07),
        "kling/image/kling-v1": Price(perImage: 0.0035), "kling/image/kling-v1-5": Price(perImage: 0.014),
        "kling/image/kling-v2": Price(perImage: 0.014), "kling/image/kling-v2-1": Price(perImage: 0.014),
        "pollo/pollo-v1-6": Price(perVideoSecond: 0.04), "pollo/pollo-v2-5": Price(perVideoSecond: 0.05),
        "pollo/pixverse/pixverse-v4-5": Price(perVideoSecond: 0.06),
        "pollo/minimax/minimax-hailuo-02": Price(perVideoSecond: 0.07),
        "openai/gpt-image-1": Price(perImage: 0.042), "openai/dall-e-3": Price(perImage: 0.04),
        "openai/dall-e-2": Price(perImage: 0.02),
        "openai/gpt-4o-mini": Price(perThousandInputTokens: 0.00015, perThousandOutputTokens: 0.0006),
        "openai/gpt-4o": Price(perThousandInputTokens: 0.0025, perThousandOutputTokens: 0.01),
        "openai/gpt-4.1-mini": Price(perThousandInputTokens: 0.0004, perThousandOutputTokens: 0.0016),
        "dashscope/wanx2.1-t2i-turbo": Price(perImage: 0.02), "dashscope/wanx2.1-t2i-plus": Price(perImage: 0.028),
        "dashscope/wan2.2-t2i-flash": Price(perImage: 0.02), "dashscope/wan2.2-t2i-plus": Price(perImage: 0.028),
        "dashscope/wanx-v1": Price(perImage: 0.02), "dashscope/wanx2.1-i2v-turbo": Price(perVideoSecond: 0.034),
        "dashscope/wanx2.1-i2v-plus": Price(perVideoSecond: 0.1),
        "dashscope/wan2.2-i2v-plus": Price(perVideoSecond: 0.1),
        "hunyuan/hunyuan-image": Price(perImage: 0.014),
    ]
}
