import Foundation
import GenGateProviders

/// The output files simulators serve: real PNG images (8 × 8 unless `image_side` says, a colour
/// from the task and index), and MP4 containers (an `ftyp` box of brand `isom` and an `mdat` box) that file-type
/// sniffers recognise as ISO media, without a playable stream.
enum SimFiles {
    static func png(seed: String, index: Int, side: Int = 8) -> Data {
        var hash: UInt64 = 1_469_598_103_934_665_603
        for byte in "\(seed)/\(index)".utf8 { hash = (hash ^ UInt64(byte)) &* 1_099_511_628_211 }
        let colour = [
            UInt8(truncatingIfNeeded: hash), UInt8(truncatingIfNeeded: hash >> 8),
            UInt8(truncatingIfNeeded: hash >> 16),
        ]
        return PNGImage.encodeRGB(
            width: side, height: side, pixels: Array((0..<side * side).map { _ in colour }.joined()))
    }

    static func mp4(seed: Int) -> Data {
        func box(_ type: String, _ payload: [UInt8]) -> [UInt8] {
            let size = UInt32(8 + payload.count)
            return [UInt8(size >> 24), UInt8((size >> 16) & 0xff), UInt8((size >> 8) & 0xff), UInt8(size & 0xff)]
                + Array(type.utf8) + payload
        }
        let ftyp = box("ftyp", Array("isom".utf8) + [0, 0, 2, 0] + Array("isomiso2mp41".utf8))
        let payload = (0..<64).map { UInt8(truncatingIfNeeded: seed &+ $0) }
        return Data(ftyp + box("mdat", payload))
    }
}
