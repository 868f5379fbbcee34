import Foundation

// deltas.h5, DESIGN.md section 4:
//
//   /                      attrs format="ila-deltas", version=1, kind="full"|"lora", base, aligned, tool
//   /layers/<layer name>   attrs block, kind, shape [out, in], norm_delta, norm_base, rel_change,
//                          scale (with factors), reconstruction_error (after --rank R)
//       delta              [out, in] float32 or float16
//       lora_A, lora_B     [r, in], [out, r] float32;  Δ = scale · lora_B @ lora_A

/// The root attributes of a deltas file.
public struct DeltaFileInfo: Sendable, Equatable {
    /// "full" (aligned model minus base) or "lora" (from an adapter).
    public var kind: String
    /// Paths of the base model and of the aligned model or adapter, as given to ila-diff.
    public var base: String
    public var aligned: String
    /// `<name> <version>` of the writer.
    public var tool: String

    public init(kind: String, base: String, aligned: String, tool: String) {
        self.kind = kind
        self.base = base
        self.aligned = aligned
        self.tool = tool
    }
}

/// What the file says about one layer, known without loading its values.
public struct StoredLayerInfo: Sendable, Equatable {
    public let layer: LinearLayer
    /// Δ is [outFeatures, inFeatures].
    public let outFeatures: Int
    public let inFeatures: Int
    public let normDelta: Double
    public let normBase: Double
    public let relChange: Double
    /// Rank r of stored factors, nil for a dense `delta`.
    public let rank: Int?
    /// Δ = scale · B·A; present exactly when factors are stored.
    public let scale: Double?
    public let reconstructionError: Double?
    /// Storage of the dense delta or of the factors: "float32", "float16", ...
    public let dtype: String
}

private let formatName = "ila-deltas"
private let formatVersion: Int64 = 1
private let kinds = ["full", "lora"]

/// A problem found inside one object (a layer); `userError` prefixes the file and the layer.
private struct Problem: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// Turns an HDF5Error or a Problem into a one-line ILAError naming `file` (the user's path, never
/// a temporary one), then `prefix` (e.g. "layer model.layers.0.mlp.up_proj"), then the object
/// relative to `base` (e.g. "delta" under that layer's group). Other errors pass unchanged.
private func userError(_ error: Error, file: String, prefix: String, base: String = "") -> Error {
    let detail: String
    var object = ""
    switch error {
    case let e as HDF5Error:
        detail = e.detail
        object = e.object
        if !base.isEmpty, object.hasPrefix(base) { object = String(object.dropFirst(base.count)) }
        while object.hasPrefix("/") { object.removeFirst() }
    case let p as Problem:
        detail = p.message
    default:
        return error
    }
    let parts = [prefix, object, detail].filter { !$0.isEmpty }
    return ILAError(file: file, parts.joined(separator: ": "))
}

// MARK: - Writer

/// Writes deltas.h5 layer by layer to a temporary sibling; `finish()` renames it into place.
/// Anything else — `abort()`, an error, or dropping the writer — leaves no file behind.
public final class DeltaStoreWriter: @unchecked Sendable {
    /// The destination path.
    public let path: String
    private let output: AtomicOutput
    private let storeF16: Bool
    /// Deflate level of the datasets, 0 (none: contiguous, no filters) to 9.
    public let compression: Int
    private var file: HDF5File?
    private var layersGroup: HDF5Group?
    private var written = Set<String>()
    // Compression runs on `compressQueue` (concurrent), HDF5 writes on `writeQueue` (serial, in
    // append order); at most `slots` layers are in flight. The first failure of a queued write is
    // kept in `asyncError` and thrown by the next append or by finish.
    private let compressQueue = DispatchQueue(label: "ila.deltas.compress", attributes: .concurrent)
    private let writeQueue = DispatchQueue(label: "ila.deltas.write")
    private let slots = DispatchSemaphore(value: max(2, ProcessInfo.processInfo.activeProcessorCount))
    private let pending = DispatchGroup()
    private let errorLock = NSLock()
    private var asyncError: Error?
    private final class Filtered: @unchecked Sendable { var chunks: [String: FilteredChunks] = [:] }

    /// The default deflate level, from measurements on a Llama-3.2-1B-shape full fine-tune
    /// (`bench/diff --scale DIR --levels "0 1 2 3 4 5 6 9"`; 3.7 GB of float32 deltas): CPU seconds
    /// of the whole run and file size per level, libdeflate on the shuffled chunks —
    ///
    ///     level    0      1      2      3      4      5      6      9
    ///     cpu s    11.4   27.8   45.6   54.9   63.1   87.4   122    646
    ///     MB       3712   803    794    774    774    757    756    739
    ///     ratio    1      4.62   4.67   4.80   4.80   4.90   4.91   5.02
    ///
    /// Level 4 saves 3.7% of the file for 2.3× the CPU time, level 9 7.9% for 23×. Level 1's files
    /// are also smaller than zlib's level 4 (the old default, 4.5:1 on the same data).
    public static let defaultCompression = 1

    /// Creates the temporary file with the root attributes and an empty /layers group.
    /// `storeF16` stores dense deltas as float16 (factors stay float32). `compression` is the
    /// deflate level, 1…9 (chunked, shuffle + deflate, DESIGN.md section 4), or 0 for datasets
    /// stored contiguously without any filter.
    public init(path: String, info: DeltaFileInfo, storeF16: Bool,
                compression: Int = DeltaStoreWriter.defaultCompression) throws {
        guard kinds.contains(info.kind) else {
            throw ILAError(file: path, "kind must be \"full\" or \"lora\", not \"\(info.kind)\"")
        }
        guard (0...9).contains(compression) else {
            throw ILAError(file: path, "compression level \(compression) is not a deflate level 0 to 9 (0 = none)")
        }
        self.path = path
        self.storeF16 = storeF16
        self.compression = compression
        output = try AtomicOutput(path: path)
        do {
            let file = try HDF5File.create(path: output.temporary.path)
            self.file = file
            let root = try file.root()
            try root.setAttribute("format", formatName)
            try root.setAttribute("version", formatVersion)
            try root.setAttribute("kind", info.kind)
            try root.setAttribute("base", info.base)
            try root.setAttribute("aligned", info.aligned)
            try root.setAttribute("tool", info.tool)
            layersGroup = try root.createGroup("layers")
        } catch {
            abort()
            throw userError(error, file: path, prefix: "")
        }
    }

    /// Adds /layers/<name> with its attributes and either `delta` ([out, in], float32 or float16)
    /// or `lora_A` [r, in] + `lora_B` [out, r] (float32). Payload sizes must match the shape and
    /// values must be finite (and within float16 range when storing float16).
    public func append(_ d: LayerDelta) throws {
        guard layersGroup != nil else {
            throw ILAError(file: path, "cannot add layer \(d.layer.name): writer is closed")
        }
        let name = d.layer.name
        func fail(_ problem: String) -> ILAError { ILAError(file: path, "layer \(name): \(problem)") }
        guard !written.contains(name) else { throw fail("written twice") }
        guard d.outFeatures > 0, d.inFeatures > 0 else { throw fail("invalid shape \(d.shape)") }
        let count = d.outFeatures * d.inFeatures
        switch d.payload {
        case .full(let values):
            guard values.count == count else { throw fail("\(values.count) values do not fill shape \(d.shape)") }
            try checkFinite(values, fail: fail)
            if storeF16, let big = values.first(where: { Float16($0).isInfinite }) {
                throw fail("value \(big) exceeds the float16 range (±65504); store float32 instead")
            }
        case .factors(let a, let b, let rank, let scale):
            guard rank > 0, a.count == rank * d.inFeatures, b.count == d.outFeatures * rank else {
                throw fail("factors of \(a.count) and \(b.count) values do not match rank \(rank) and shape \(d.shape)")
            }
            guard scale.isFinite else { throw fail("scale \(scale) is not finite") }
            try checkFinite(a, fail: fail)
            try checkFinite(b, fail: fail)
        }

        errorLock.lock(); let earlier = asyncError; errorLock.unlock()
        if let earlier { throw earlier }
        written.insert(name)
        let f16 = storeF16
        let level = compression
        let filtered = Filtered()
        let ready = DispatchSemaphore(value: 0)
        slots.wait()
        pending.enter()
        compressQueue.async {
            guard level > 0 else { ready.signal(); return }
            switch d.payload {
            case .full(let values):
                filtered.chunks["delta"] = FilteredChunks.make(values, shape: d.shape, storage: f16 ? .float16 : .float32, level: level)
            case .factors(let a, let b, let rank, _):
                filtered.chunks["lora_A"] = FilteredChunks.make(a, shape: [rank, d.inFeatures], storage: .float32, level: level)
                filtered.chunks["lora_B"] = FilteredChunks.make(b, shape: [d.outFeatures, rank], storage: .float32, level: level)
            }
            ready.signal()
        }
        // Weak: a writer dropped without finish() must deinit (and delete its temporary) at once;
        // queued writes of a writer that is gone are skipped.
        let (slots, pending) = (self.slots, self.pending)
        writeQueue.async { [weak self] in
            ready.wait()
            defer { slots.signal(); pending.leave() }
            guard let self else { return }
            self.errorLock.lock(); let failed = self.asyncError != nil; self.errorLock.unlock()
            guard !failed else { return }
            do {
                guard let layers = self.layersGroup else { return }
                try self.write(d, layers: layers, filtered: filtered.chunks, f16: f16)
            } catch {
                self.errorLock.lock()
                self.asyncError = userError(error, file: self.path, prefix: "layer \(name)", base: "/layers/\(name)")
                self.errorLock.unlock()
            }
        }
    }

    private func write(_ d: LayerDelta, layers: HDF5Group, filtered: [String: FilteredChunks], f16: Bool) throws {
        let g = try layers.createGroup(d.layer.name)
        try g.setAttribute("block", d.layer.block)
        try g.setAttribute("kind", d.layer.kind.rawValue)
        try g.setAttribute("shape", d.shape)
        try g.setAttribute("norm_delta", d.normDelta)
        try g.setAttribute("norm_base", d.normBase)
        try g.setAttribute("rel_change", d.relChange)
        if let err = d.reconstructionError { try g.setAttribute("reconstruction_error", err) }
        switch d.payload {
        case .full(let values):
            if let c = filtered["delta"] { try g.createDataset("delta", filtered: c) }
            else {
                try g.createDataset("delta", values: values, shape: d.shape, storage: f16 ? .float16 : .float32,
                                    compression: compression)
            }
        case .factors(let a, let b, let rank, let scale):
            try g.setAttribute("scale", Double(scale))
            if let c = filtered["lora_A"] { try g.createDataset("lora_A", filtered: c) }
            else { try g.createDataset("lora_A", values: a, shape: [rank, d.inFeatures], compression: compression) }
            if let c = filtered["lora_B"] { try g.createDataset("lora_B", filtered: c) }
            else { try g.createDataset("lora_B", values: b, shape: [d.outFeatures, rank], compression: compression) }
        }
    }

    private func checkFinite(_ values: [Float], fail: (String) -> ILAError) throws {
        // Blocks of 4096 reduced with a branch-free max of |bits| (vectorised); a non-finite value
        // has all exponent bits set, so |bits| ≥ 0x7F80_0000. Only a hit is searched element-wise.
        let hit: Bool = values.withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: Int32.self) { u in
                var i = 0
                while i < u.count {
                    let end = min(u.count, i + 4096)
                    var m: Int32 = 0
                    for j in i..<end { m = max(m, u[j] & 0x7FFF_FFFF) }
                    if m >= 0x7F80_0000 { return true }
                    i = end
                }
                return false
            }
        }
        if hit, let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw fail("value \(values[bad]) at index \(bad) is not finite")
        }
    }

    /// Closes the file (flushing everything) and renames it to `path`.
    public func finish() throws {
        pending.wait()
        errorLock.lock(); let failed = asyncError; errorLock.unlock()
        if let failed { abort(); throw failed }
        guard let file else { throw ILAError(file: path, "writer is already closed") }
        layersGroup = nil
        self.file = nil
        do {
            try file.close()
        } catch {
            output.discard()
            throw userError(error, file: path, prefix: "")
        }
        try output.commit()
    }

    /// Closes and deletes the temporary file; nothing appears at `path`. Safe to call twice.
    public func abort() {
        pending.wait()
        closeAndDiscard()
    }

    private func closeAndDiscard() {
        layersGroup = nil
        if let file {
            self.file = nil
            try? file.close()
            output.discard()
        }
    }

    // No waiting here: deinit may run on the write queue (when a queued write held the last
    // reference), and writes still queued find `self` gone and skip.
    deinit { closeAndDiscard() }
}

// MARK: - Reader

/// A validated deltas.h5, open for loading layers on demand.
///
/// Opening checks the whole layout (format, version, kind, every layer's name, attributes and
/// dataset shapes) so later loads fail only on the values themselves (NaN/Inf) or I/O.
/// Safe to share across threads: its state is immutable after init and every HDF5 call runs
/// under the wrapper's global lock.
public final class DeltaStore: @unchecked Sendable {
    public let path: String
    public let info: DeltaFileInfo
    /// Layers in canonical order (block, then q k v o gate up down).
    public let layers: [LinearLayer]
    private let file: HDF5File
    private let layersGroup: HDF5Group
    private let stored: [String: StoredLayerInfo]

    public var kind: String { info.kind }

    /// Opens and validates `path`. The same validation first runs in a forked child (after a walk
    /// of the whole HDF5 structure), so a corrupt container that crashes or hangs libhdf5 is
    /// refused with an error (HDF5Probe.swift).
    public convenience init(path: String) throws {
        do {
            try HDF5Probe.check(path: path) { _ = try DeltaStore(path: path, probed: true) }
        } catch {
            throw userError(error, file: path, prefix: "")
        }
        try self.init(path: path, probed: true)
    }

    init(path: String, probed: Bool) throws {
        self.path = path
        let name = path
        do {
            file = try HDF5File.openReadOnly(path: path, probed: probed)
            let root = try file.root()
            guard try root.hasAttribute("format") else {
                throw ILAError(file: name, "not an ila deltas file (attribute format is missing)")
            }
            let format = try root.stringAttribute("format")
            guard format == formatName else {
                throw ILAError(file: name, "not an ila deltas file (format is \"\(format)\", expected \"\(formatName)\")")
            }
            let version = try root.intAttribute("version")
            guard version == formatVersion else {
                throw ILAError(file: name, "unsupported version \(version) (this tool reads version \(formatVersion))")
            }
            let kind = try root.stringAttribute("kind")
            guard kinds.contains(kind) else {
                throw ILAError(file: name, "kind must be \"full\" or \"lora\", not \"\(kind)\"")
            }
            // Provenance strings are informative only; a hand-made file may lack them.
            func optionalString(_ key: String) throws -> String {
                try root.hasAttribute(key) ? root.stringAttribute(key) : ""
            }
            info = DeltaFileInfo(kind: kind, base: try optionalString("base"), aligned: try optionalString("aligned"),
                                 tool: try optionalString("tool"))
            layersGroup = try root.openGroup("layers")
        } catch {
            throw userError(error, file: path, prefix: "")
        }

        var stored: [String: StoredLayerInfo] = [:]
        let members: [String]
        do { members = try layersGroup.memberNames() } catch { throw userError(error, file: path, prefix: "") }
        for member in members {
            guard let layer = LinearLayer(name: member) else {
                throw ILAError(file: name, "/layers/\(member) is not a linear layer name "
                               + "(expected <...>.layers.<block>.<...>.<kind>, the kind a linear module such as q_proj, qkv_proj or down_proj)")
            }
            do {
                stored[member] = try Self.validate(layer, in: layersGroup)
            } catch {
                throw userError(error, file: path, prefix: "layer \(member)", base: "/layers/\(member)")
            }
        }
        guard !stored.isEmpty else { throw ILAError(file: name, "contains no layers") }
        self.stored = stored
        layers = stored.values.map(\.layer).sorted()
    }

    /// Checks one layer group's attributes and datasets against each other.
    private static func validate(_ layer: LinearLayer, in layers: HDF5Group) throws -> StoredLayerInfo {
        func fail(_ problem: String) -> Problem { Problem(problem) }
        guard try layers.memberKind(layer.name) == .group else { throw fail("is not a group") }
        let g = try layers.openGroup(layer.name)

        let block = try g.intAttribute("block")
        guard block == layer.block else { throw fail("attribute block is \(block) but the name says \(layer.block)") }
        let kind = try g.stringAttribute("kind")
        guard kind == layer.kind.rawValue else {
            throw fail("attribute kind is \"\(kind)\" but the name says \"\(layer.kind.rawValue)\"")
        }
        let shape = try g.intArrayAttribute("shape")
        guard shape.count == 2, shape.allSatisfy({ $0 > 0 && $0 <= Int64(Int32.max) }) else {
            throw fail("attribute shape is \(shape), expected [out, in] with positive sizes")
        }
        let out = Int(shape[0]), inp = Int(shape[1])
        func norm(_ key: String) throws -> Double {
            let v = try g.doubleAttribute(key)
            guard v.isFinite, v >= 0 else { throw fail("attribute \(key) is \(v), expected a finite value ≥ 0") }
            return v
        }
        let normDelta = try norm("norm_delta"), normBase = try norm("norm_base")
        let relChange = try g.doubleAttribute("rel_change")
        guard !relChange.isNaN, relChange >= 0 else { throw fail("attribute rel_change is \(relChange), expected ≥ 0") }
        let reconstructionError = try g.hasAttribute("reconstruction_error")
            ? g.doubleAttribute("reconstruction_error") : nil

        let hasDelta = try g.memberKind("delta") != nil
        let hasA = try g.memberKind("lora_A") != nil, hasB = try g.memberKind("lora_B") != nil
        func floatDataset(_ name: String) throws -> (shape: [Int], dtype: String) {
            let ds = try g.openDataset(name)
            let dtype = try ds.elementType()
            guard dtype.hasPrefix("float") else { throw fail("\(name) has type \(dtype), expected float32 or float16") }
            return (try ds.shape(), dtype)
        }

        switch (hasDelta, hasA, hasB) {
        case (true, false, false):
            let (dshape, dtype) = try floatDataset("delta")
            guard dshape == [out, inp] else { throw fail("delta has shape \(dshape) but attribute shape is \(shape)") }
            return StoredLayerInfo(layer: layer, outFeatures: out, inFeatures: inp, normDelta: normDelta,
                                   normBase: normBase, relChange: relChange, rank: nil, scale: nil,
                                   reconstructionError: reconstructionError, dtype: dtype)
        case (false, true, true):
            let (ashape, adtype) = try floatDataset("lora_A")
            let (bshape, bdtype) = try floatDataset("lora_B")
            guard ashape.count == 2, ashape[0] > 0, ashape[1] == inp else {
                throw fail("lora_A has shape \(ashape) but attribute shape is \(shape) (expected [r, \(inp)])")
            }
            guard bshape.count == 2, bshape[1] > 0, bshape[0] == out else {
                throw fail("lora_B has shape \(bshape) but attribute shape is \(shape) (expected [\(out), r])")
            }
            guard ashape[0] == bshape[1] else {
                throw fail("lora_A has rank \(ashape[0]) but lora_B has rank \(bshape[1])")
            }
            let scale = try g.doubleAttribute("scale")
            guard scale.isFinite else { throw fail("attribute scale is \(scale), expected a finite number") }
            return StoredLayerInfo(layer: layer, outFeatures: out, inFeatures: inp, normDelta: normDelta,
                                   normBase: normBase, relChange: relChange, rank: ashape[0], scale: scale,
                                   reconstructionError: reconstructionError,
                                   dtype: adtype == bdtype ? adtype : "\(adtype)/\(bdtype)")
        case (false, false, false):
            throw fail("has neither a delta dataset nor lora_A/lora_B")
        case (true, _, _):
            throw fail("has both a delta dataset and lora factors")
        default:
            throw fail(hasA ? "has lora_A but no lora_B" : "has lora_B but no lora_A")
        }
    }

    /// What the file says about `layer` (nil when the file lacks it), without loading values.
    public func layerInfo(_ layer: LinearLayer) -> StoredLayerInfo? { stored[layer.name] }

    /// Loads one layer's Δ (float16 widened to Float). Non-finite stored values are an error.
    public func delta(_ layer: LinearLayer) throws -> LayerDelta {
        guard let s = stored[layer.name] else {
            throw ILAError(file: path, "no layer \(layer.name) in this deltas file")
        }
        func load(_ g: HDF5Group, _ name: String) throws -> [Float] {
            let values = try g.openDataset(name).readFloats()
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                let cols = name == "lora_B" ? (s.rank ?? 1) : s.inFeatures
                throw Problem("\(name) holds \(values[bad]) at [\(bad / cols), \(bad % cols)]")
            }
            return values
        }
        do {
            let g = try layersGroup.openGroup(layer.name)
            let payload: LayerDelta.Payload
            if let rank = s.rank, let scale = s.scale {
                payload = .factors(a: try load(g, "lora_A"), b: try load(g, "lora_B"), rank: rank, scale: Float(scale))
            } else {
                payload = .full(try load(g, "delta"))
            }
            return LayerDelta(layer: layer, outFeatures: s.outFeatures, inFeatures: s.inFeatures, payload: payload,
                              normDelta: s.normDelta, normBase: s.normBase, reconstructionError: s.reconstructionError)
        } catch {
            throw userError(error, file: path, prefix: "layer \(layer.name)", base: "/layers/\(layer.name)")
        }
    }
}

// MARK: - Generic matrix file

/// Writes one float32 matrix `values` (row-major [rows, cols]) as dataset `/<dataset>` of a new
/// HDF5 file at `path`, atomically, chunked with shuffle + gzip. `stringListAttribute` (e.g. the
/// layer names of the columns) and `attributes` are attached to the dataset; attribute values may
/// be String, Int, Int64, Double, Float, Bool (stored as int) or arrays [String], [Int], [Int64],
/// [Double], [Float].
public func writeFloatMatrixHDF5(path: String, dataset: String, values: [Float], rows: Int, cols: Int,
                                 stringListAttribute: (name: String, values: [String])?,
                                 attributes: [String: Any]) throws {
    let (count, overflow) = rows.multipliedReportingOverflow(by: cols)
    guard rows >= 0, cols >= 0, !overflow, values.count == count else {
        throw ILAError(file: path, "\(values.count) values do not fill a [\(rows), \(cols)] matrix")
    }
    let output = try AtomicOutput(path: path)
    do {
        let file = try HDF5File.create(path: output.temporary.path)
        let ds = try file.root().createDataset(dataset, values: values, shape: [rows, cols])
        if let list = stringListAttribute { try ds.setAttribute(list.name, list.values) }
        for (key, value) in attributes.sorted(by: { $0.key < $1.key }) {
            switch value {
            case let v as String: try ds.setAttribute(key, v)
            case let v as Bool: try ds.setAttribute(key, Int64(v ? 1 : 0))
            case let v as Int: try ds.setAttribute(key, v)
            case let v as Int64: try ds.setAttribute(key, v)
            case let v as Double: try ds.setAttribute(key, v)
            case let v as Float: try ds.setAttribute(key, Double(v))
            case let v as [String]: try ds.setAttribute(key, v)
            case let v as [Int]: try ds.setAttribute(key, v)
            case let v as [Int64]: try ds.setAttribute(key, v)
            case let v as [Double]: try ds.setAttribute(key, v)
            case let v as [Float]: try ds.setAttribute(key, v.map(Double.init))
            default: throw Problem("attribute \(key): unsupported type \(type(of: value))")
            }
        }
        try file.close()
    } catch {
        output.discard()
        throw userError(error, file: path, prefix: "")
    }
    try output.commit()
}
