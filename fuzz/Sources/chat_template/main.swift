import Foundation
import FuzzSupport
import ILAMask

// A chat template (bytes up to the first NUL, lossy UTF-8) rendered with the variables after it:
// a JSON object whose "messages" and "tools" are passed as apply_chat_template passes them and
// whose other keys are extra variables (a fixed conversation when absent or invalid). Both
// add_generation_prompt values; small limits so that every input finishes fast.
nonisolated(unsafe) let fallback: [JValue] = [
    .dict(JDict([("role", .string("system")), ("content", .string("S"))])),
    .dict(JDict([("role", .string("user")), ("content", .string("Hi"))])),
    .dict(JDict([("role", .string("assistant")), ("content", .string("Hello"))])),
]
let limits = JinjaLimits(steps: 200_000, stringLength: 1_000_000, callDepth: 32)
let special = ["bos_token": "<s>", "eos_token": "</s>"]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let cut = bytes.firstIndex(of: 0) ?? bytes.count
    let source = String(decoding: bytes[..<cut], as: UTF8.self)
    var messages = fallback
    var tools: JValue? = nil
    var extra: [String: JValue] = [:]
    if cut < bytes.count, case .dict(let d)? = try? JValue.parseJSON(Array(bytes[(cut + 1)...])) {
        for (k, v) in d.pairs {
            switch k {
            case "messages": if case .list(let l) = v { messages = l }
            case "tools": tools = v
            default: extra[k] = v
            }
        }
    }
    guard let template = try? ChatTemplate(source: source, limits: limits) else { return 0 }
    for agp in [false, true] {
        _ = try? template.apply(messages: messages, tools: tools, addGenerationPrompt: agp, specialTokens: special,
                                kwargs: extra, now: Date(timeIntervalSince1970: 1_700_000_000))
    }
    return 0
}

Fuzz.run(fuzz)
