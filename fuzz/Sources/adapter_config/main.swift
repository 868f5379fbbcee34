import Foundation
import FuzzSupport
import ILADiff

// adapter_config.json of a LoRA adapter (with the fixture's weights): parsing, r/alpha patterns,
// and the factors of every layer, which check the weights against the config.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    Fuzz.install(fixture: "tiny/lora-define-001/adapter_model.safetensors", as: "adapter/adapter_model.safetensors")
    let path = Fuzz.write(data, size, to: "adapter/adapter_config.json")
    guard let adapter = try? LoRAAdapter(path: (path as NSString).deletingLastPathComponent) else { return 0 }
    for layer in adapter.layers {
        _ = try? adapter.factors(layer)
        _ = adapter.config.scale(for: layer.name)
    }
    return 0
}

Fuzz.run(fuzz)
