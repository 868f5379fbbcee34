import Foundation
import FuzzSupport
import ILAMask

// JSONL rows (instruction/output, messages, prompt/response, input_ids/labels) under every
// template, tokenized with the fixture tokenizer.
let tokenizer = try! Tokenizer(path: Fuzz.fixture("tiny/base-A/tokenizer.json"))
let special = SpecialTokens(bos: 1, eos: 2)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let path = Fuzz.write(data, size, to: "data/rows.jsonl")
    for template in PromptTemplate.allCases {
        guard let rows = try? loadInstructionRows(path: path, template: template, tokenizer: tokenizer,
                                                  special: special, seqLen: 128, limit: nil) else { continue }
        for r in rows where r.ids.count != r.labels.count || r.ids.count > 128 { fatalError("bad row \(r)") }
    }
    return 0
}

Fuzz.run(fuzz)
