import Foundation
import GenGateCore
import XCTest

@testable import GenGateObjects

/// Content types come from an output's bytes, not from the provider's label.
final class ContentSnifferTests: XCTestCase {
    func bytes(_ values: [UInt8], _ text: String = "") -> [UInt8] { values + Array(text.utf8) }

    func testFormatsAreToldByTheirSignatures() throws {
        let samples: [([UInt8], String)] = [
            (bytes([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13]), "image/png"),
            (bytes([0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]), "image/jpeg"),
            (bytes([], "GIF89a\u{1}\u{0}"), "image/gif"),
            (bytes([], "RIFF\u{0}\u{0}\u{0}\u{0}WEBPVP8 "), "image/webp"),
            (bytes([0, 0, 0, 0x20], "ftypisom\u{0}\u{0}\u{2}\u{0}"), "video/mp4"),
            (bytes([0, 0, 0, 0x1C], "ftypavif"), "image/avif"),
            (bytes([0, 0, 0, 0x14], "ftypqt  "), "video/quicktime"),
            (bytes([0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x82, 0x84], "webm"), "video/webm"),
            (bytes([], "%PDF-1.7"), "application/pdf"),
        ]
        for (head, type) in samples {
            // Whatever the provider called it.
            XCTAssertEqual(try ContentSniffer.contentType(head: head, claimed: "application/octet-stream"), type)
            XCTAssertEqual(try ContentSniffer.contentType(head: head, claimed: "image/png"), type)
        }
    }

    func testTextStaysTextAndUnknownBytesAreOctetStreams() throws {
        let text = Array("Once upon a time".utf8)
        XCTAssertEqual(
            try ContentSniffer.contentType(head: text, claimed: "text/plain; charset=utf-8"),
            "text/plain; charset=utf-8")
        XCTAssertEqual(
            try ContentSniffer.contentType(head: [1, 2, 3, 4], claimed: "image/png"), "application/octet-stream")
        // Text that begins like a format stays text; a PNG called text is a PNG.
        for story in ["ID3 tags name the songs", "%PDF-1.7 is a version", "GIF89a was a year", "OggS and ends"] {
            XCTAssertEqual(try ContentSniffer.contentType(head: Array(story.utf8), claimed: "text/plain"), "text/plain")
        }
        XCTAssertEqual(
            try ContentSniffer.contentType(head: Array("«ключ»".utf8).dropLast(1), claimed: "text/plain"), "text/plain",
            "a character cut off by the head's end")
        XCTAssertEqual(
            try ContentSniffer.contentType(
                head: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0], claimed: "text/plain"),
            "image/png")
        XCTAssertEqual(
            try ContentSniffer.contentType(head: Array("<svg xmlns=…".utf8), claimed: "image/svg+xml"), "image/svg+xml")
        // An SVG whose <svg> comes after an XML declaration, a doctype and a comment.
        let prologue =
            #"<?xml version="1.0" encoding="UTF-8" standalone="no"?>"# + "\n"
            + #"<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">"#
            + "\n<!-- made by a model -->\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"16\" height=\"16\"/>"
        XCTAssertEqual(
            try ContentSniffer.contentType(head: Array(prologue.utf8), claimed: "image/svg+xml"), "image/svg+xml")
    }

    func testAnErrorPageWhereMediaWasPromisedIsRefused() {
        for page in ["<!DOCTYPE html><html>", "  <?xml version=\"1.0\"?><Error>", "{\"error\": \"expired\"}"] {
            XCTAssertThrowsError(try ContentSniffer.contentType(head: Array(page.utf8), claimed: "video/mp4")) {
                error in
                let failure = error as? GenGateError
                XCTAssertEqual(failure?.code, .providerError)
                XCTAssertEqual(failure?.retryable, true)
            }
        }
    }

    func testOutputsAreStoredUnderTheTypeTheirBytesSay() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("sniff-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let objects = try LocalObjectStore(root: root)
        let jpeg = Data([0xFF, 0xD8, 0xFF, 0xDB] + Array(repeating: 7, count: 100))
        let file = try objects.scratchFile()
        try jpeg.write(to: file)
        let stored = try await objects.putOutput(file: file, claimed: "image/png") {
            "outputs/a." + ObjectKey.fileExtension(for: $0)
        }
        XCTAssertEqual(stored.contentType, "image/jpeg")
        XCTAssertEqual(stored.key, "outputs/a.jpg")
        let fromMemory = try await objects.putOutput(data: jpeg, claimed: "application/octet-stream") {
            "outputs/b." + ObjectKey.fileExtension(for: $0)
        }
        XCTAssertEqual(fromMemory.key, "outputs/b.jpg")
        let page = try objects.scratchFile()
        try Data("<html>gone</html>".utf8).write(to: page)
        do {
            _ = try await objects.putOutput(file: page, claimed: "image/png") { _ in "outputs/c.png" }
            XCTFail("an HTML page was stored as an image")
        } catch let error as GenGateError {
            XCTAssertEqual(error.code, .providerError, "\(error)")
            XCTAssertTrue(error.retryable, "a stale link's page is downloaded again")
        }
        XCTAssertTrue(
            FileManager.default.fileExists(atPath: page.path),
            "a file not stored stays the caller's, to try again or remove")
    }
}
