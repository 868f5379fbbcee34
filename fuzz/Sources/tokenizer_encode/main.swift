import Foundation
import FuzzSupport
import ILAMask

// Encoding arbitrary (lossily decoded) UTF-8 with the fixture tokenizer and small tokenizers of
// each pre-tokenizer family (fuzz/tokenizers/*.json).
let tokenizers: [Tokenizer] = {
    var list = [try! Tokenizer(path: Fuzz.fixture("tiny/base-A/tokenizer.json"))]
    let dir = URL(fileURLWithPath: Fuzz.fixtures).deletingLastPathComponent().appendingPathComponent("fuzz/tokenizers")
    for f in ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).sorted() where f.hasSuffix(".json") {
        list.append(try! Tokenizer(path: dir.appendingPathComponent(f).path))
    }
    return list
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard size > 0, let data else { return 0 }
    let tok = tokenizers[Int(data[0]) % tokenizers.count]
    let text = String(decoding: UnsafeBufferPointer(start: data + 1, count: size - 1), as: UTF8.self)
    for id in tok.encode(text) {
        guard id >= 0 && id < tok.vocabSize else { fatalError("id \(id) outside 0..<\(tok.vocabSize)") }
    }
    return 0
}

Fuzz.run(fuzz)
