import CHDF5
import Foundation
import FuzzSupport
import ILADiff

// A deltas.h5 whose attributes, types and shapes are wrong: the input describes the file (every
// choice 0 is the valid option, so an empty input gives a valid two-layer file), libhdf5 writes
// it, and DeltaStore opens, validates and loads every layer. Byte-level corruption of the HDF5
// container itself is the deltas_raw harness.

let kinds = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

enum Value {
    case string(String), int(Int64), double(Double), ints([Int64]), doubles([Double]), strings([String])
    case missing, nullSpace
}

struct Builder {
    var p: FuzzedData

    /// `valid`, or (by the next choice) something wrong in its place.
    mutating func mutate(_ valid: Value) -> Value {
        switch p.choice(12) {
        case 1: return .missing
        case 2: return .int(p.interestingInt())
        case 3: return .double(p.interestingDouble())
        case 4: return .string(p.string())
        case 5: return .ints((0..<p.choice(4)).map { _ in p.interestingInt() })
        case 6: return .doubles((0..<p.choice(4)).map { _ in p.interestingDouble() })
        case 7: return .strings((0..<p.choice(3)).map { _ in p.string(max: 8) })
        case 8: return .nullSpace
        case 9:
            switch valid {
            case .int(let v): return .int(v &+ Int64(p.choice(3)) - 1)
            case .ints(let v): return .ints(v.map { $0 &+ Int64(p.choice(3)) - 1 })
            case .string(let s): return .string(s + p.string(max: 3))
            default: return valid
            }
        default: return valid
        }
    }

    mutating func attribute(_ obj: hid_t, _ name: String, _ valid: Value) {
        write(obj, name, mutate(valid))
    }

    func write(_ obj: hid_t, _ name: String, _ value: Value) {
        func put(_ type: hid_t, _ memType: hid_t, _ dims: [Int]?, _ bytes: UnsafeRawPointer?) {
            let space: hid_t
            if var d = dims?.map({ hsize_t($0) }) {
                space = H5Screate_simple(Int32(d.count), &d, nil)
            } else {
                space = H5Screate(H5S_SCALAR)
            }
            defer { _ = H5Sclose(space) }
            let a = H5Acreate2(obj, name, type, space, ila_H5P_DEFAULT(), ila_H5P_DEFAULT())
            guard a >= 0 else { return }
            if let bytes, (dims ?? [1]).reduce(1, *) > 0 { _ = H5Awrite(a, memType, bytes) }
            _ = H5Aclose(a)
        }
        let str = H5Tcopy(ila_H5T_C_S1())
        _ = H5Tset_size(str, ila_H5T_VARIABLE())
        _ = H5Tset_cset(str, H5T_CSET_UTF8)
        defer { _ = H5Tclose(str) }
        switch value {
        case .missing: return
        case .nullSpace:
            let space = H5Screate(H5S_NULL)
            let a = H5Acreate2(obj, name, ila_H5T_STD_I64LE(), space, ila_H5P_DEFAULT(), ila_H5P_DEFAULT())
            if a >= 0 { _ = H5Aclose(a) }
            _ = H5Sclose(space)
        case .string(let s):
            s.withCString { c in
                var ptr: UnsafePointer<CChar>? = c
                withUnsafeBytes(of: &ptr) { put(str, str, nil, $0.baseAddress) }
            }
        case .strings(let list):
            let cs: [UnsafeMutablePointer<CChar>?] = list.map { strdup($0) }
            cs.withUnsafeBytes { put(str, str, [list.count], $0.baseAddress) }
            cs.forEach { free($0) }
        case .int(var v):
            withUnsafeBytes(of: &v) { put(ila_H5T_STD_I64LE(), ila_H5T_NATIVE_INT64(), nil, $0.baseAddress) }
        case .double(var v):
            withUnsafeBytes(of: &v) { put(ila_H5T_IEEE_F64LE(), ila_H5T_NATIVE_DOUBLE(), nil, $0.baseAddress) }
        case .ints(let v):
            v.withUnsafeBytes { put(ila_H5T_STD_I64LE(), ila_H5T_NATIVE_INT64(), [v.count], $0.baseAddress) }
        case .doubles(let v):
            v.withUnsafeBytes { put(ila_H5T_IEEE_F64LE(), ila_H5T_NATIVE_DOUBLE(), [v.count], $0.baseAddress) }
        }
    }

    /// A float dataset of `valid` dims, or wrong dims / element type / storage.
    mutating func dataset(_ group: hid_t, _ name: String, valid: [Int]) {
        var dims = valid
        switch p.choice(8) {
        case 1: dims = [0] + valid.dropFirst()
        case 2: dims = (0..<p.choice(4)).map { _ in p.choice(10) }
        case 3: dims = Array(valid.reversed())
        case 4: dims = [p.pick([65536, 1 << 20, 1 << 31, 100_000]), p.pick([65536, 1 << 20, 4096, 1])]
        case 5: dims = valid.map { $0 + p.choice(3) - 1 }.map { max(0, $0) }
        default: break
        }
        let fileType: hid_t
        var owned: hid_t = -1
        switch p.choice(6) {
        case 1:  // float16 as ila-diff writes it
            owned = H5Tcopy(ila_H5T_IEEE_F32LE())
            _ = H5Tset_fields(owned, 15, 10, 5, 0, 10); _ = H5Tset_precision(owned, 16)
            _ = H5Tset_size(owned, 2); _ = H5Tset_ebias(owned, 15)
            fileType = owned
        case 2: fileType = ila_H5T_IEEE_F64LE()
        case 3: fileType = ila_H5T_STD_I64LE()
        case 4:
            owned = H5Tcopy(ila_H5T_C_S1()); _ = H5Tset_size(owned, 4)
            fileType = owned
        default: fileType = ila_H5T_IEEE_F32LE()
        }
        defer { if owned >= 0 { _ = H5Tclose(owned) } }
        var hd = dims.map { hsize_t($0) }
        let space = dims.isEmpty ? H5Screate(H5S_SCALAR) : H5Screate_simple(Int32(hd.count), &hd, nil)
        guard space >= 0 else { return }
        defer { _ = H5Sclose(space) }
        let count = dims.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
        let dcpl = H5Pcreate(ila_H5P_DATASET_CREATE())
        defer { _ = H5Pclose(dcpl) }
        let storage = p.choice(3)
        if storage > 0 && !dims.isEmpty && !dims.contains(0) {
            var chunk = dims.map { hsize_t(min($0, 64)) }
            _ = H5Pset_chunk(dcpl, Int32(chunk.count), &chunk)
            if storage == 2 { _ = H5Pset_shuffle(dcpl); _ = H5Pset_deflate(dcpl, 4) }
        }
        let d = H5Dcreate2(group, name, fileType, space, ila_H5P_DEFAULT(), dcpl, ila_H5P_DEFAULT())
        guard d >= 0 else { return }
        defer { _ = H5Dclose(d) }
        // Values only for small datasets; large declared shapes are left unwritten (fill value).
        if count <= 4096 && count > 0 && p.choice(8) != 7 && H5Tget_class(fileType) != H5T_STRING {
            let values = (0..<count).map { i -> Float in
                p.choice(16) == 0 ? Float(p.interestingDouble()) : Float(i % 7) * 0.25 - 0.5
            }
            _ = values.withUnsafeBytes { H5Dwrite(d, ila_H5T_NATIVE_FLOAT(), ila_H5S_ALL(), ila_H5S_ALL(), ila_H5P_DEFAULT(), $0.baseAddress) }
        }
    }

    mutating func layer(_ parent: hid_t, index: Int) {
        let block = index / kinds.count % 2
        let kind = kinds[index % kinds.count]
        var name = "model.layers.\(block).\(kind)"
        switch p.choice(10) {
        case 1: name = p.string()
        case 2: name = "model.layers.99999999999999999999.\(kind)"
        case 3: name = "model.layers.\(block).\(kinds[p.choice(kinds.count)])"
        default: break
        }
        let out = 1 + p.choice(6), inp = 1 + p.choice(6), r = 1 + p.choice(3)
        if p.choice(10) == 1 {  // not a group
            dataset(parent, name, valid: [out, inp])
            return
        }
        let g = H5Gcreate2(parent, name, ila_H5P_DEFAULT(), ila_H5P_DEFAULT(), ila_H5P_DEFAULT())
        guard g >= 0 else { return }
        defer { _ = H5Gclose(g) }
        attribute(g, "block", .int(Int64(block)))
        attribute(g, "kind", .string(String(kind.split(separator: ".").last!)))
        attribute(g, "shape", .ints([Int64(out), Int64(inp)]))
        attribute(g, "norm_delta", .double(0.5))
        attribute(g, "norm_base", .double(1.0))
        attribute(g, "rel_change", .double(0.5))
        if p.choice(3) == 1 { attribute(g, "reconstruction_error", .double(0.01)) }
        switch p.choice(5) {
        case 1:
            attribute(g, "scale", .double(2))
            dataset(g, "lora_A", valid: [r, inp])
            dataset(g, "lora_B", valid: [out, r])
        case 2: break
        case 3:
            dataset(g, "delta", valid: [out, inp])
            dataset(g, "lora_A", valid: [r, inp])
        case 4:
            dataset(g, p.pick(["lora_A", "lora_B"]), valid: [r, inp])
        default:
            dataset(g, "delta", valid: [out, inp])
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    _ = H5Eset_auto2(ila_H5E_DEFAULT(), nil, nil)
    let path = Fuzz.path("deltas.h5")
    var b = Builder(p: FuzzedData(data, size))
    let file = H5Fcreate(path, ila_H5F_ACC_TRUNC(), ila_H5P_DEFAULT(), ila_H5P_DEFAULT())
    guard file >= 0 else { fatalError("cannot create \(path)") }
    let root = H5Gopen2(file, "/", ila_H5P_DEFAULT())
    b.attribute(root, "format", .string("ila-deltas"))
    b.attribute(root, "version", .int(1))
    b.attribute(root, "kind", .string(b.p.pick(["full", "lora"])))
    b.attribute(root, "base", .string("base"))
    b.attribute(root, "aligned", .string("aligned"))
    b.attribute(root, "tool", .string("fuzz"))
    switch b.p.choice(8) {
    case 1: break  // no /layers
    case 2: b.dataset(root, "layers", valid: [1])
    default:
        let layers = H5Gcreate2(root, "layers", ila_H5P_DEFAULT(), ila_H5P_DEFAULT(), ila_H5P_DEFAULT())
        let n = [2, 1, 0, 3, 5][b.p.choice(5)]
        for i in 0..<n { b.layer(layers, index: i) }
        _ = H5Gclose(layers)
    }
    _ = H5Gclose(root)
    _ = H5Fclose(file)

    guard let store = try? DeltaStore(path: path) else { return 0 }
    for layer in store.layers {
        guard let d = try? store.delta(layer) else { continue }
        switch d.payload {
        case .full(let v): precondition(v.count == d.outFeatures * d.inFeatures)
        case .factors(let a, let bb, let r, _): precondition(a.count == r * d.inFeatures && bb.count == d.outFeatures * r)
        }
    }
    return 0
}

// The structure probe forks per open; its time limit must stay below libFuzzer's -timeout=1.
setenv("ILA_HDF5_PROBE_MS", "400", 1)
Fuzz.run(fuzz)
