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
        // A model with no price says so.
        let none = table.estimate(model: "x/unknown", n: 1, width: nil, height: nil, prompt: "", params: [:])
        XCTAssertFalse(none.priced)
        XCTAssertEqual(none.amount, 0)
    }

    func testEveryShippedPriceIsValid() {
        for (model, price) in PriceTable.defaults { XCTAssertNil(price.problem, model) }
        XCTAssertNotNil(Price().problem)
        XCTAssertNotNil(Price(perImage: -1).problem)
    }
}
