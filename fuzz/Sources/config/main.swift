import Foundation
import FuzzSupport
import ILADiff
import ILAMask
import ILAModel

// config.json: Architectures.load, then the BOS/EOS resolution that reads the same file.
let tokenizer = try! Tokenizer(path: Fuzz.fixture("tiny/base-A/tokenizer.json"))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let path = Fuzz.write(data, size, to: "model/config.json")
    if let spec = try? Architectures.load(configAt: path) {
        for kind in spec.kinds { _ = spec.shape(of: kind) }
        _ = (spec.qDim, spec.kvDim, spec.layers.map { $0.rope.tables(positions: 4) })
    }
    _ = try? SpecialTokens.resolve(directory: (path as NSString).deletingLastPathComponent, tokenizer: tokenizer)
    return 0
}

Fuzz.run(fuzz)
