import Foundation
import ILADiff

/// A tokenizer.json `normalizer`, applied as `tokenizers` applies it to each piece of text
/// between the added tokens that are matched on raw text.
indirect enum Normalizer {
    case sequence([Normalizer])
    case prepend([Unicode.Scalar])
    case replace(TextPattern, content: [Unicode.Scalar])
    case unicode(NormalizationForm)
    case lowercase
    case strip(left: Bool, right: Bool)
    case stripAccents
    case nmt
    case byteLevel

    func apply(_ p: inout TextPiece) {
        switch self {
        case .sequence(let list):
            for n in list { n.apply(&p) }
        case .prepend(let s):
            p.prepend(s)  // `Prepend` leaves empty text alone
        case .replace(let pattern, let content):
            p.replace(pattern.matches(p.scalars), with: content)
        case .unicode(let form):
            Self.normalize(&p, form)
        case .lowercase:
            // Rust's `char::to_lowercase` per scalar, without context.
            if p.scalars.allSatisfy({ $0.value < 0x80 && !($0.value >= 0x41 && $0.value <= 0x5A) }) { return }
            p.flatMap { x, out in rustLowercase(x, into: &out) }
        case .strip(let left, let right):
            let s = p.scalars
            var lo = 0, hi = s.count
            if left { while lo < hi && CharInfo.of(s[lo]) & CharInfo.space != 0 { lo += 1 } }
            if right { while hi > lo && CharInfo.of(s[hi - 1]) & CharInfo.space != 0 { hi -= 1 } }
            p.keep(lo..<hi)
        case .stripAccents:
            if p.scalars.allSatisfy({ $0.value < 0x80 }) { return }
            p.flatMap { x, out in if CharInfo.of(x) & CharInfo.combiningMark == 0 { out.append(x) } }
        case .nmt:
            p.flatMap { x, out in
                switch x.value {
                case 0x01...0x08, 0x0B, 0x0E...0x1F, 0x7F, 0x8F, 0x9F:
                    break  // removed
                case 0x09, 0x0A, 0x0C, 0x0D, 0x1680, 0x200B...0x200F, 0x2028, 0x2029, 0x2581, 0xFEFF, 0xFFFD:
                    out.append(" ")
                default:
                    out.append(x)
                }
            }
        case .byteLevel:
            p.flatMap { x, out in appendByteLevel(x, into: &out) }
        }
    }

    /// NFC/NFD/NFKC/NFKD, with `tokenizers`' own alignments when they are tracked.
    private static func normalize(_ p: inout TextPiece, _ form: NormalizationForm) {
        if p.scalars.allSatisfy({ $0.value < 0x80 }) { return }
        if let o = p.origins {
            (p.scalars, p.origins) = form.normalizeAligned(p.scalars, origins: o, shift: p.shift)
        } else {
            p.scalars = form.normalize(p.scalars)
        }
    }

    /// Parses a tokenizer.json `normalizer` object (nil for JSON null).
    static func parse(_ json: JSONValue?, file: String) throws -> Normalizer? {
        guard let o = json, !o.isNull else { return nil }
        guard let type = o["type"]?.string else {
            throw ILAError(file: file, "normalizer is not an object with a \"type\"")
        }
        let f = Fields(json: o, owner: "\(type) normalizer", file: file)
        switch type {
        case "Sequence":
            guard let list = o["normalizers"]?.array else {
                throw ILAError(file: file, "Sequence normalizer has no \"normalizers\" list")
            }
            return .sequence(try list.map { item in
                guard let n = try parse(item, file: file) else {
                    throw ILAError(file: file, "Sequence normalizer holds a null")
                }
                return n
            })
        case "Prepend":
            return .prepend(Array(try f.requiredString("prepend").unicodeScalars))
        case "Replace":
            let content = try f.requiredString("content")
            let pattern = try TextPattern.parse(o["pattern"], what: "Replace normalizer", file: file)
            return .replace(pattern, content: Array(content.unicodeScalars))
        case "NFC": return .unicode(.nfc)
        case "NFD": return .unicode(.nfd)
        case "NFKC": return .unicode(.nfkc)
        case "NFKD": return .unicode(.nfkd)
        case "Lowercase": return .lowercase
        case "Strip":
            return .strip(left: try f.bool("strip_left", default: true), right: try f.bool("strip_right", default: true))
        case "StripAccents": return .stripAccents
        case "Nmt": return .nmt
        case "ByteLevel": return .byteLevel
        default:
            throw ILAError(file: file, "normalizer type \(type) is not supported (supported: Sequence, Prepend, Replace, "
                           + "NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Nmt, ByteLevel)")
        }
    }
}

/// Appends the byte-level spelling of `x`: each UTF-8 byte as its printable scalar.
@inline(__always)
func appendByteLevel(_ x: Unicode.Scalar, into out: inout [Unicode.Scalar]) {
    let table = ByteLevelMap.scalars
    let v = x.value
    if v < 0x80 {
        out.append(table[Int(v)])
    } else if let bytes = UTF8.encode(x) {
        for b in bytes { out.append(table[Int(b)]) }
    }
}
