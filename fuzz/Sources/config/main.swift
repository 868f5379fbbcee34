import Foundation
import FuzzSupport
import ILADiff
import ILAMask

// config.json: LlamaConfig.load, then the BOS/EOS resolution that reads the same file.
let tokenizer = try! Tokenizer(path: Fuzz.fixture("tiny/base-A/tokenizer.json"))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let path = Fuzz.write(data, size, to: "model/config.json")
    if let cfg = try? LlamaConfig.load(path: path) {
        for kind in LayerKind.allCases { _ = cfg.shape(of: kind) }
        _ = (cfg.qDim, cfg.kvDim)
    }
    _ = try? SpecialTokens.resolve(directory: (path as NSString).deletingLastPathComponent, tokenizer: tokenizer)
    return 0
}

Fuzz.run(fuzz)
