import Foundation
import GenGateCore
import XCTest

final class PricingTests: XCTestCase {
    func testEstimatesAddUpByWhatEachModelIsPricedBy() {
        let table = PriceTable(
            currency: "EUR",
            configured: [
                "flux/flux-pro-1.1": Price(perImage: 0.05),
                "x/mp": Price(perMegapixel: 0.02),
                "x/chat": Price(perThousandInputTokens: 1, perThousandOutputTokens: 2),
            ])
        // The configuration's price, not the default.
        let flux = table.estimate(
            model: "flux/flux-pro-1.1", n: 4, width: nil, height: nil, prompt: "a fox", params: [:])
        XCTAssertEqual(flux.amount, 0.2, accuracy: 1e-9)
        XCTAssertEqual([flux.currency, flux.basis], ["EUR", "4 × 0.05 an image"])
        XCTAssertFalse(flux.defaultPrice)
        // Megapixels from the size asked for (1 MP when unsaid).
        XCTAssertEqual(
            table.estimate(model: "x/mp", n: 2, width: 2_000, height: 1_000, prompt: "", params: [:]).amount, 0.08,
            accuracy: 1e-9)
        // Video seconds from `duration`, as Kling's string or a number; 5 when unsaid.
        let kling = table.estimate(
            model: "kling/kling-v1-6", n: 1, width: nil, height: nil, prompt: "", params: ["duration": .string("10")])
        XCTAssertEqual(kling.amount, 0.56, accuracy: 1e-9)
        XCTAssertTrue(kling.defaultPrice, "a shipped default, and said so")
        XCTAssertEqual(
            table.estimate(model: "kling/kling-v1-6", n: 2, width: nil, height: nil, prompt: "", params: [:]).amount,
            0.56, accuracy: 1e-9)
        // Tokens: the prompt at about four bytes a token, the answer's max_tokens.
        let chat = table.estimate(
            model: "x/chat", n: 1, width: nil, height: nil, prompt: String(repeating: "a", count: 4_000),
            params: ["max_tokens": .number(500)])
        XCTAssertEqual(chat.amount, 1 + 1, accuracy: 1e-9)
        // A request's own figures never lower an estimate: negative, infinite or not numbers at
        // all, they are taken as unsaid.
        for odd: JSONValue in [.number(-1e6), .string("-inf"), .string("nan"), .string("inf"), .number(-0.5)] {
            let video = table.estimate(
                model: "kling/kling-v1-6", n: 1, width: nil, height: nil, prompt: "", params: ["duration": odd])
            XCTAssertEqual(video.amount, 0.28, accuracy: 1e-9, "\(odd)")
            let text = table.estimate(
                model: "x/chat", n: 1, width: nil, height: nil, prompt: "", params: ["max_tokens": odd])
            XCTAssertEqual(text.amount, 2, accuracy: 1e-9, "\(odd)")
        }
        XCTAssertEqual(
            table.estimate(
                model: "kling/kling-v1-6", n: 1, width: nil, height: nil, prompt: "",
                params: ["duration": .number(1e300)]
            ).amount, PriceTable.largestQuantity * 0.056, accuracy: 1e-3, "bounded")
        // Where a quantity may be said twice, the larger counts: a zero duration beside a length
        // does not make a video free, nor do small top-level sizes hide large ones in params.
        XCTAssertEqual(
            table.estimate(
                model: "kling/kling-v1-6", n: 1, width: nil, height: nil, prompt: "",
                params: ["duration": .number(0), "length": .number(10)]
            ).amount, 0.56, accuracy: 1e-9)
        XCTAssertEqual(
            table.estimate(
                model: "x/mp", n: 1, width: 100, height: 100, prompt: "",
                params: ["width": .number(4_000), "height": .string("4000")]
            ).amount, 16 * 0.02, accuracy: 1e-9)
        // A model with no price says so.
        let none = table.estimate(model: "x/unknown", n: 1, width: nil, height: nil, prompt: "", params: [:])
        XCTAssertFalse(none.priced)
        XCTAssertEqual(none.amount, 0)
    }

    func testAJobCostsItsChargedAttemptsAndWhatTheProviderReportedStandsBeside() {
        func attempt(
            _ number: Int, _ state: Attempt.State, cost: Double?, task: String? = nil, onAcceptance: Bool = false,
            double: Bool = false, charge: ProviderCharge? = nil
        ) -> Attempt {
            Attempt(
                generationID: "gen_1", number: number, provider: "p", clientReference: "r\(number)",
                providerTaskID: task, outputIndexes: [0], state: state, error: nil, createdAt: Date(), finishedAt: nil,
                possibleDoubleCharge: double, cost: cost, charge: charge, chargesOnAcceptance: onAcceptance)
        }
        let attempts = [
            attempt(1, .failed, cost: 0.1),  // refused before the provider took it: free
            attempt(2, .failed, cost: 0.1, task: "t2", onAcceptance: true),  // taken, then failed: paid
            attempt(3, .abandoned, cost: 0.1, double: true),  // may have been paid: counted
            attempt(4, .failed, cost: 0.1, task: "t4"),  // taken and failed, provider bills delivery only
            attempt(5, .succeeded, cost: 0.1, task: "t5", charge: ProviderCharge(credits: 4)),
            attempt(6, .succeeded, cost: nil, task: "t6"),  // recorded before costs were
        ]
        XCTAssertEqual(attempts.map(\.charged), [false, true, true, false, true, true])
        let cost = JobCost(attempts, currency: "USD")
        XCTAssertEqual(cost.amount, 0.3, accuracy: 1e-9)
        XCTAssertEqual(cost.wasted, 0.2, accuracy: 1e-9)
        XCTAssertEqual([cost.chargedAttempts, cost.doubleCharges, cost.unknown], [4, 1, 1])
        XCTAssertEqual(cost.reported, ProviderCharge(credits: 4))
        XCTAssertEqual(cost.json["amount"], .number(0.3))
        XCTAssertEqual(cost.json["reported"]?["credits"], .number(4))
    }

    func testTokensReportedPriceAModelPricedByTokensAndOthersKeepTheirEstimate() {
        let table = PriceTable(
            configured: ["x/chat": Price(perThousandInputTokens: 1, perThousandOutputTokens: 2, perCall: 0.5)])
        let used = ProviderCharge(inputTokens: 1_500, outputTokens: 250)
        XCTAssertEqual(try XCTUnwrap(table.actual(model: "x/chat", charge: used)), 1.5 + 0.5 + 0.5, accuracy: 1e-9)
        XCTAssertNil(table.actual(model: "openai/gpt-image-1", charge: used), "priced by image: the estimate stands")
        XCTAssertNil(table.actual(model: "x/chat", charge: ProviderCharge(credits: 3)))
        XCTAssertNil(table.actual(model: "x/chat", charge: nil))
        // A budget holds back the most any model of the route may cost.
        let reservation = table.reservation(
            models: ["flux/flux-dev", "flux/flux-pro-1.1-ultra"], n: 2, width: nil, height: nil, prompt: "",
            params: [:])
        XCTAssertEqual(reservation, 0.12, accuracy: 1e-9)
        // Later reports of a call win field by field.
        XCTAssertEqual(
            ProviderCharge(credits: 1, inputTokens: 5).merged(with: ProviderCharge(credits: 2)),
            ProviderCharge(credits: 2, inputTokens: 5))
    }

    func testEveryShippedPriceIsValid() {
        for (model, price) in PriceTable.defaults { XCTAssertNil(price.problem, model) }
        XCTAssertNotNil(Price().problem)
        XCTAssertNotNil(Price(perImage: -1).problem)
    }
}
