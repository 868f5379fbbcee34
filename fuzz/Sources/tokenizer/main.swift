import Foundation
import FuzzSupport
import ILAMask

// tokenizer.json loading, then encoding: the input is `tokenizer.json [NUL text]`; without a NUL
// a fixed sample text is encoded.
let sample = "Hello, world! Define the word \"much\".\n  ### Instruction:\n<s>é e\u{301} 日本語 🙂 \t12345"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let cut = bytes.firstIndex(of: 0) ?? size
    let path = Fuzz.write(data, cut, to: "tok/tokenizer.json")
    guard let tok = try? Tokenizer(path: path) else { return 0 }
    let text = cut < size ? String(decoding: bytes[(cut + 1)...], as: UTF8.self) : sample
    for id in tok.encode(text) {
        guard id >= 0 && id < tok.vocabSize else { fatalError("id \(id) outside 0..<\(tok.vocabSize)") }
    }
    _ = tok.tokenID(for: "<s>")
    _ = tok.token(for: 0)
    return 0
}

Fuzz.run(fuzz)
