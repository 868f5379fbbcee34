import Foundation
import FuzzSupport
import ILADiff

// deltas.h5 as raw bytes: opening, validating and loading every layer.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let path = Fuzz.write(data, size, to: "deltas.h5")
    guard let store = try? DeltaStore(path: path) else { return 0 }
    for layer in store.layers { _ = try? store.delta(layer) }
    return 0
}

// The structure probe forks per open; its time limit must stay below libFuzzer's -timeout=1.
setenv("ILA_HDF5_PROBE_MS", "400", 1)
Fuzz.run(fuzz)
