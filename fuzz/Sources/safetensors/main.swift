import Foundation
import FuzzSupport
import ILADiff

// The safetensors header and offsets validator (DESIGN.md section 9), then everything that reads
// an opened file: decoding every tensor, a model checkpoint, and a LoRA adapter built on it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    Fuzz.install(fixture: "tiny/lora-define-001/adapter_config.json", as: "adapter/adapter_config.json")
    let path = Fuzz.write(data, size, to: "adapter/adapter_model.safetensors")
    guard let file = try? SafetensorsFile(path: path) else { return 0 }
    for t in file.tensors {
        _ = try? file.floats(t)
        _ = file.rawBytes(t).reduce(0, &+)
    }
    _ = try? ModelCheckpoint(path: path)
    if let adapter = try? LoRAAdapter(path: (path as NSString).deletingLastPathComponent) {
        for layer in adapter.layers { _ = try? adapter.factors(layer) }
    }
    return 0
}

Fuzz.run(fuzz)
