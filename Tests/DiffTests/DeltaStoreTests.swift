import Foundation
import XCTest
@testable import ILADiff

final class DeltaStoreTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("ila-deltastore-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    private func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
    private func contents() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() }

    private let info = DeltaFileInfo(kind: "full", base: "/models/base", aligned: "/models/aligned", tool: "ila-diff 0.1.0")

    private func layer(_ name: String) throws -> LinearLayer {
        try XCTUnwrap(LinearLayer(name: name))
    }

    /// A dense delta whose values (k/64 − 1, small k) are exact in float16 too.
    private func fullDelta(_ name: String, out: Int, inp: Int, offset: Int = 0) throws -> LayerDelta {
        let values = (0..<(out * inp)).map { Float(($0 + offset) % 128) / 64 - 1 }
        let norm = sqrt(values.reduce(0.0) { $0 + Double($1 * $1) })
        return LayerDelta(layer: try layer(name), outFeatures: out, inFeatures: inp, payload: .full(values),
                          normDelta: norm, normBase: 2 * norm + 1)
    }

    private func factorDelta(_ name: String, out: Int, inp: Int, rank: Int) throws -> LayerDelta {
        let a = (0..<(rank * inp)).map { Float($0) * 0.25 - 1 }
        let b = (0..<(out * rank)).map { Float($0) * -0.125 + 0.5 }
        return LayerDelta(layer: try layer(name), outFeatures: out, inFeatures: inp,
                          payload: .factors(a: a, b: b, rank: rank, scale: 0.5),
                          normDelta: 3.5, normBase: 7.25, reconstructionError: 0.125)
    }

    private func write(_ deltas: [LayerDelta], to file: String, info: DeltaFileInfo? = nil, f16: Bool = false) throws {
        let w = try DeltaStoreWriter(path: file, info: info ?? self.info, storeF16: f16)
        for d in deltas { try w.append(d) }
        try w.finish()
    }

    private func assertError(_ expression: @autoclosure () throws -> Any, contains parts: [String],
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try expression(), file: file, line: line) { error in
            let text = String(describing: error)
            XCTAssertTrue(error is ILAError, "not an ILAError: \(text)", file: file, line: line)
            XCTAssertFalse(text.contains("\n"), "error is not one line: \(text)", file: file, line: line)
            for p in parts { XCTAssertTrue(text.contains(p), "'\(text)' lacks '\(p)'", file: file, line: line) }
        }
    }

    // MARK: Round trips

    func testFullFloat32RoundTrip() throws {
        let file = path("deltas.h5")
        let up = try fullDelta("model.layers.1.mlp.up_proj", out: 6, inp: 4)
        let q = try fullDelta("model.layers.0.self_attn.q_proj", out: 4, inp: 4, offset: 7)
        var down = try fullDelta("model.layers.0.mlp.down_proj", out: 4, inp: 6, offset: 3)
        down.payload = .full((0..<24).map { Float($0) * 1.0e-7 + 3.14159265 })   // not half-exact: f32 keeps it
        try write([up, q, down], to: file)
        XCTAssertEqual(try contents(), ["deltas.h5"])

        let store = try DeltaStore(path: file)
        XCTAssertEqual(store.kind, "full")
        XCTAssertEqual(store.info, info)
        XCTAssertEqual(store.layers.map(\.name),
                       ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.up_proj"])
        for original in [up, q, down] {
            let d = try store.delta(original.layer)
            XCTAssertEqual(d.layer, original.layer)
            XCTAssertEqual(d.shape, original.shape)
            XCTAssertEqual(d.normDelta, original.normDelta)
            XCTAssertEqual(d.normBase, original.normBase)
            XCTAssertEqual(d.relChange, original.relChange)
            XCTAssertNil(d.reconstructionError)
            guard case .full(let values) = d.payload, case .full(let expected) = original.payload else {
                return XCTFail("expected a full payload")
            }
            XCTAssertEqual(values, expected)
            let meta = try XCTUnwrap(store.layerInfo(original.layer))
            XCTAssertEqual(meta.dtype, "float32")
            XCTAssertNil(meta.rank)
            XCTAssertNil(meta.scale)
        }
    }

    func testEveryAttributeIsStored() throws {
        let file = path("deltas.h5")
        let full = try fullDelta("model.layers.2.self_attn.v_proj", out: 3, inp: 5)
        let lora = try factorDelta("model.layers.3.mlp.gate_proj", out: 5, inp: 3, rank: 2)
        try write([full, lora], to: file)

        let h5 = try HDF5File.openReadOnly(path: file)
        let root = try h5.root()
        XCTAssertEqual(try root.stringAttribute("format"), "ila-deltas")
        XCTAssertEqual(try root.intAttribute("version"), 1)
        XCTAssertEqual(try root.stringAttribute("kind"), "full")
        XCTAssertEqual(try root.stringAttribute("base"), "/models/base")
        XCTAssertEqual(try root.stringAttribute("aligned"), "/models/aligned")
        XCTAssertEqual(try root.stringAttribute("tool"), "ila-diff 0.1.0")
        let layers = try root.openGroup("layers")
        XCTAssertEqual(try layers.memberNames(), [full.layer.name, lora.layer.name])   // creation order

        let g = try layers.openGroup(full.layer.name)
        XCTAssertEqual(try g.intAttribute("block"), 2)
        XCTAssertEqual(try g.stringAttribute("kind"), "v_proj")
        XCTAssertEqual(try g.intArrayAttribute("shape"), [3, 5])
        XCTAssertEqual(try g.doubleAttribute("norm_delta"), full.normDelta)
        XCTAssertEqual(try g.doubleAttribute("norm_base"), full.normBase)
        XCTAssertEqual(try g.doubleAttribute("rel_change"), full.relChange)
        XCTAssertFalse(try g.hasAttribute("scale"))
        XCTAssertFalse(try g.hasAttribute("reconstruction_error"))
        XCTAssertEqual(try g.memberNames(), ["delta"])
        XCTAssertEqual(try g.openDataset("delta").shape(), [3, 5])

        let f = try layers.openGroup(lora.layer.name)
        XCTAssertEqual(try f.intAttribute("block"), 3)
        XCTAssertEqual(try f.stringAttribute("kind"), "gate_proj")
        XCTAssertEqual(try f.intArrayAttribute("shape"), [5, 3])
        XCTAssertEqual(try f.doubleAttribute("scale"), 0.5)
        XCTAssertEqual(try f.doubleAttribute("reconstruction_error"), 0.125)
        XCTAssertEqual(try f.doubleAttribute("rel_change"), 3.5 / 7.25)
        XCTAssertEqual(try f.attributeNames(),
                       ["block", "kind", "norm_base", "norm_delta", "reconstruction_error", "rel_change", "scale", "shape"])
        XCTAssertEqual(try f.openDataset("lora_A").shape(), [2, 3])
        XCTAssertEqual(try f.openDataset("lora_B").shape(), [5, 2])
        XCTAssertEqual(try f.openDataset("lora_A").elementType(), "float32")
    }

    func testFullFloat16RoundTrip() throws {
        let file = path("deltas16.h5")
        let d = try fullDelta("model.layers.0.self_attn.k_proj", out: 8, inp: 16)
        var rounded = try fullDelta("model.layers.0.self_attn.o_proj", out: 2, inp: 3)
        let raw: [Float] = [0.1, -0.333333, 1e-3, 65000, -2.5e-5, 1234.567]
        rounded.payload = .full(raw)
        try write([d, rounded], to: file, f16: true)

        let store = try DeltaStore(path: file)
        XCTAssertEqual(store.layerInfo(d.layer)?.dtype, "float16")
        guard case .full(let values) = try store.delta(d.layer).payload, case .full(let expected) = d.payload else {
            return XCTFail("expected a full payload")
        }
        XCTAssertEqual(values, expected)   // k/64 − 1 is exact in half precision
        guard case .full(let back) = try store.delta(rounded.layer).payload else { return XCTFail("expected full") }
        for (x, y) in zip(raw, back) {
            XCTAssertEqual(y, Float(Float16(x)))                       // round to nearest, then widened exactly
            XCTAssertEqual(y, x, accuracy: max(abs(x) * 1e-3, 6e-8))    // half precision: 11 significant bits
        }
    }

    func testFloat16OverflowIsAnError() throws {
        let file = path("big.h5")
        var d = try fullDelta("model.layers.0.mlp.up_proj", out: 1, inp: 2)
        d.payload = .full([1, 70000])
        let w = try DeltaStoreWriter(path: file, info: info, storeF16: true)
        assertError(try w.append(d), contains: ["big.h5", "layer model.layers.0.mlp.up_proj", "float16"])
        w.abort()
        XCTAssertEqual(try contents(), [])
    }

    func testFactorRoundTrip() throws {
        let file = path("lora.h5")
        let loraInfo = DeltaFileInfo(kind: "lora", base: "b", aligned: "adapter", tool: "t 1")
        let d = try factorDelta("model.layers.4.self_attn.q_proj", out: 6, inp: 5, rank: 3)
        try write([d], to: file, info: loraInfo, f16: true)   // f16 applies to dense deltas only

        let store = try DeltaStore(path: file)
        XCTAssertEqual(store.kind, "lora")
        XCTAssertEqual(store.info, loraInfo)
        XCTAssertEqual(store.layers, [d.layer])
        let meta = try XCTUnwrap(store.layerInfo(d.layer))
        XCTAssertEqual(meta.rank, 3)
        XCTAssertEqual(meta.scale, 0.5)
        XCTAssertEqual(meta.dtype, "float32")
        let back = try store.delta(d.layer)
        XCTAssertEqual(back.reconstructionError, 0.125)
        XCTAssertEqual(back.normDelta, 3.5)
        XCTAssertEqual(back.normBase, 7.25)
        guard case .factors(let a, let b, let rank, let scale) = back.payload,
              case .factors(let a0, let b0, _, _) = d.payload else { return XCTFail("expected factors") }
        XCTAssertEqual(a, a0)
        XCTAssertEqual(b, b0)
        XCTAssertEqual(rank, 3)
        XCTAssertEqual(scale, 0.5)
    }

    func testFixedAndVariableLengthStringsAndArrays() throws {
        let file = path("attrs.h5")
        let h5 = try HDF5File.create(path: file)
        let root = try h5.root()
        try root.setAttribute("vlen", "héllo wörld")
        try root.setAttribute("fixed", "héllo", fixedLength: true)
        try root.setAttribute("empty", "", fixedLength: true)
        try root.setAttribute("names", ["a", "bé", ""])
        try root.setAttribute("ints", [Int64.min, 0, Int64.max])
        try root.setAttribute("doubles", [1.5, -.infinity])
        try root.setAttribute("none", [Double]())
        try root.setAttribute("vlen", "replaced")
        try root.setAttribute("one", 1)
        _ = try root.createGroup("g")
        XCTAssertThrowsError(try root.createGroup("g")) { e in
            XCTAssertTrue("\(e)".hasPrefix("\(file): cannot create group 'g' (HDF5: "), "\(e)")   // HDF5's own words
        }
        XCTAssertThrowsError(try root.createGroup("a/b")) { e in XCTAssertTrue("\(e)".contains("contain no '/'"), "\(e)") }
        try h5.close()

        let r = try HDF5File.openReadOnly(path: file).root()
        XCTAssertEqual(try r.stringAttribute("vlen"), "replaced")
        XCTAssertEqual(try r.stringAttribute("fixed"), "héllo")
        XCTAssertEqual(try r.stringAttribute("empty"), "")
        XCTAssertEqual(try r.stringArrayAttribute("names"), ["a", "bé", ""])
        XCTAssertEqual(try r.intArrayAttribute("ints"), [Int64.min, 0, Int64.max])
        XCTAssertEqual(try r.doubleArrayAttribute("doubles"), [1.5, -.infinity])
        XCTAssertEqual(try r.doubleArrayAttribute("none"), [])
        XCTAssertEqual(try r.doubleArrayAttribute("ints").count, 3)   // ints convert to doubles
        XCTAssertThrowsError(try r.intAttribute("doubles")) { e in
            XCTAssertTrue("\(e)".contains("attribute 'doubles' must hold one value"), "\(e)")
        }
        XCTAssertThrowsError(try r.intArrayAttribute("doubles")) { e in
            XCTAssertTrue("\(e)".contains("has type float64, expected an integer"), "\(e)")
        }
        XCTAssertThrowsError(try r.stringAttribute("one")) { e in XCTAssertTrue("\(e)".contains("expected a string"), "\(e)") }
        XCTAssertThrowsError(try r.doubleAttribute("missing")) { e in
            XCTAssertEqual("\(e)", "\(file): attribute 'missing' is missing")
        }
    }

    func testFloatMatrixFile() throws {
        let file = path("ranking.h5")
        let values = (0..<12).map { Float($0) / 3 }
        try writeFloatMatrixHDF5(path: file, dataset: "scores", values: values, rows: 3, cols: 4,
                                 stringListAttribute: (name: "layers", values: ["a", "b", "c", "d"]),
                                 attributes: ["steps": 3, "lambda": 1.0, "note": "x", "ids": [1, 2]])
        XCTAssertEqual(try contents(), ["ranking.h5"])
        let ds = try HDF5File.openReadOnly(path: file).root().openDataset("scores")
        XCTAssertEqual(try ds.shape(), [3, 4])
        XCTAssertEqual(try ds.readFloats(), values)
        XCTAssertEqual(try ds.stringArrayAttribute("layers"), ["a", "b", "c", "d"])
        XCTAssertEqual(try ds.intAttribute("steps"), 3)
        XCTAssertEqual(try ds.doubleAttribute("lambda"), 1.0)
        XCTAssertEqual(try ds.stringAttribute("note"), "x")
        XCTAssertEqual(try ds.intArrayAttribute("ids"), [1, 2])

        // Zero rows (no steps yet) is a valid, empty matrix.
        try writeFloatMatrixHDF5(path: file, dataset: "scores", values: [], rows: 0, cols: 4,
                                 stringListAttribute: nil, attributes: [:])
        XCTAssertEqual(try HDF5File.openReadOnly(path: file).root().openDataset("scores").shape(), [0, 4])
        assertError(try writeFloatMatrixHDF5(path: file, dataset: "s", values: [1], rows: 2, cols: 2,
                                             stringListAttribute: nil, attributes: [:]), contains: ["ranking.h5"])
        assertError(try writeFloatMatrixHDF5(path: path("bad.h5"), dataset: "s", values: [1], rows: 1, cols: 1,
                                             stringListAttribute: nil, attributes: ["x": Date()]),
                    contains: ["bad.h5", "attribute x: unsupported type"])
        XCTAssertEqual(try contents(), ["ranking.h5"])
    }

    // MARK: Atomic output

    func testAbortAndDeinitLeaveNothing() throws {
        let file = path("deltas.h5")
        let w = try DeltaStoreWriter(path: file, info: info, storeF16: false)
        try w.append(try fullDelta("model.layers.0.mlp.up_proj", out: 2, inp: 2))
        XCTAssertEqual(try contents().count, 1)   // the temporary sibling
        XCTAssertFalse(try contents().contains("deltas.h5"))
        w.abort()
        w.abort()
        XCTAssertEqual(try contents(), [])
        assertError(try w.finish(), contains: ["deltas.h5", "closed"])

        do {
            let dropped = try DeltaStoreWriter(path: file, info: info, storeF16: true)
            try dropped.append(try fullDelta("model.layers.0.mlp.up_proj", out: 2, inp: 2))
        }
        XCTAssertEqual(try contents(), [])

        // A failed append leaves the writer usable and finish still produces the file.
        let w2 = try DeltaStoreWriter(path: file, info: info, storeF16: false)
        let good = try fullDelta("model.layers.0.mlp.up_proj", out: 2, inp: 2)
        try w2.append(good)
        assertError(try w2.append(good), contains: ["layer model.layers.0.mlp.up_proj", "written twice"])
        var short = try fullDelta("model.layers.1.mlp.up_proj", out: 2, inp: 2)
        short.payload = .full([1, 2, 3])
        assertError(try w2.append(short), contains: ["3 values do not fill shape [2, 2]"])
        var nan = try fullDelta("model.layers.1.mlp.up_proj", out: 1, inp: 2)
        nan.payload = .full([1, .nan])
        assertError(try w2.append(nan), contains: ["not finite"])
        try w2.finish()
        XCTAssertEqual(try contents(), ["deltas.h5"])
        XCTAssertEqual(try DeltaStore(path: file).layers, [good.layer])
    }

    // MARK: Malformed files

    /// Builds a deltas file by hand so single parts can be broken.
    private func handMade(_ name: String, format: String = "ila-deltas", version: Int64 = 1,
                          layerName: String = "model.layers.0.mlp.up_proj",
                          edit: (HDF5Group) throws -> Void = { _ in },
                          skipAttribute: String? = nil) throws -> String {
        let file = path(name)
        let h5 = try HDF5File.create(path: file)
        let root = try h5.root()
        try root.setAttribute("format", format)
        try root.setAttribute("version", version)
        try root.setAttribute("kind", "full")
        let g = try root.createGroup("layers").createGroup(layerName)
        let attrs: [(String, (HDF5Group) throws -> Void)] = [
            ("block", { try $0.setAttribute("block", 0) }),
            ("kind", { try $0.setAttribute("kind", "up_proj") }),
            ("shape", { try $0.setAttribute("shape", [4, 4]) }),
            ("norm_delta", { try $0.setAttribute("norm_delta", 1.0) }),
            ("norm_base", { try $0.setAttribute("norm_base", 2.0) }),
            ("rel_change", { try $0.setAttribute("rel_change", 0.5) }),
        ]
        for (key, set) in attrs where key != skipAttribute { try set(g) }
        try edit(g)
        if try g.memberKind("delta") == nil && g.memberKind("lora_A") == nil {
            try g.createDataset("delta", values: [Float](repeating: 0.5, count: 16), shape: [4, 4])
        }
        try h5.close()
        return file
    }

    func testHandMadeFileIsValid() throws {
        let store = try DeltaStore(path: try handMade("ok.h5"))
        XCTAssertEqual(store.info, DeltaFileInfo(kind: "full", base: "", aligned: "", tool: ""))
        let d = try store.delta(try layer("model.layers.0.mlp.up_proj"))
        XCTAssertEqual(d.dense(), [Float](repeating: 0.5, count: 16))
    }

    func testWrongFormat() throws {
        let file = try handMade("wrong.h5", format: "something-else")
        assertError(try DeltaStore(path: file), contains: ["wrong.h5: not an ila deltas file", "something-else"])
        assertError(try DeltaStore(path: try handMade("v2.h5", version: 2)), contains: ["v2.h5: unsupported version 2"])
    }

    func testShapeMismatch() throws {
        let file = try handMade("deltas.h5") { g in
            try g.createDataset("delta", values: [Float](repeating: 0, count: 12), shape: [3, 4])
        }
        XCTAssertThrowsError(try DeltaStore(path: file)) { e in
            XCTAssertEqual("\(e)", "\(file): layer model.layers.0.mlp.up_proj: delta has shape [3, 4] but attribute shape is [4, 4]")
        }
    }

    func testMissingAttribute() throws {
        let file = try handMade("deltas.h5", skipAttribute: "norm_base")
        assertError(try DeltaStore(path: file),
                    contains: ["deltas.h5: layer model.layers.0.mlp.up_proj: attribute 'norm_base' is missing"])
    }

    func testOtherMalformations() throws {
        assertError(try DeltaStore(path: try handMade("wrongtype.h5", edit: { try $0.setAttribute("shape", "4x4") })),
                    contains: ["wrongtype.h5: layer model.layers.0.mlp.up_proj: attribute 'shape' has type string, expected an integer"])
        assertError(try DeltaStore(path: try handMade("block.h5", edit: { try $0.setAttribute("block", 3) })),
                    contains: ["attribute block is 3 but the name says 0"])
        assertError(try DeltaStore(path: try handMade("name.h5", layerName: "model.embed_tokens")),
                    contains: ["name.h5: /layers/model.embed_tokens is not a linear layer name"])
        assertError(try DeltaStore(path: try handMade("rank.h5", edit: { g in
            try g.setAttribute("scale", 1.0)
            try g.createDataset("lora_A", values: [Float](repeating: 0, count: 8), shape: [2, 4])
            try g.createDataset("lora_B", values: [Float](repeating: 0, count: 12), shape: [4, 3])
        })), contains: ["layer model.layers.0.mlp.up_proj: lora_A has rank 2 but lora_B has rank 3"])
        assertError(try DeltaStore(path: try handMade("half.h5", edit: { g in
            try g.createDataset("lora_A", values: [Float](repeating: 0, count: 8), shape: [2, 4])
        })), contains: ["has lora_A but no lora_B"])
        assertError(try DeltaStore(path: try handMade("noscale.h5", edit: { g in
            try g.createDataset("lora_A", values: [Float](repeating: 0, count: 8), shape: [2, 4])
            try g.createDataset("lora_B", values: [Float](repeating: 0, count: 8), shape: [4, 2])
        })), contains: ["attribute 'scale' is missing"])

        // NaN is caught on load, with its position.
        let nanFile = try handMade("nan.h5") { g in
            var v = [Float](repeating: 0, count: 16)
            v[6] = .nan
            try g.createDataset("delta", values: v, shape: [4, 4], storage: .float16)
        }
        let store = try DeltaStore(path: nanFile)
        assertError(try store.delta(try layer("model.layers.0.mlp.up_proj")),
                    contains: ["nan.h5: layer model.layers.0.mlp.up_proj: delta holds nan at [1, 2]"])
        assertError(try store.delta(try layer("model.layers.5.mlp.up_proj")), contains: ["no layer model.layers.5.mlp.up_proj"])

        // Not a file / not HDF5.
        assertError(try DeltaStore(path: path("absent.h5")), contains: ["absent.h5: no such file"])
        let text = path("text.h5")
        try Data("hello".utf8).write(to: URL(fileURLWithPath: text))
        assertError(try DeltaStore(path: text), contains: ["text.h5: not an HDF5 file"])
        let noLayers = path("empty.h5")
        do {
            let h5 = try HDF5File.create(path: noLayers)
            try h5.root().setAttribute("format", "ila-deltas")
            try h5.close()
        }
        assertError(try DeltaStore(path: noLayers), contains: ["empty.h5: attribute 'version' is missing"])
    }

    // MARK: h5py interoperability

    func testReadableByH5py() throws {
        guard run(["python3", "-c", "import h5py, numpy"]).status == 0 else {
            throw XCTSkip("h5py is missing (python3 -c 'import h5py' failed); cannot check interoperability")
        }
        let file = path("deltas.h5")
        let f16 = try fullDelta("model.layers.0.self_attn.q_proj", out: 3, inp: 4)
        try write([f16, try factorDelta("model.layers.1.mlp.down_proj", out: 4, inp: 3, rank: 2)], to: file, f16: true)
        let f32file = path("deltas32.h5")
        try write([f16], to: f32file)
        let matrix = path("ranking.h5")
        try writeFloatMatrixHDF5(path: matrix, dataset: "scores", values: [1, 2, 3, 4, 5, 6], rows: 2, cols: 3,
                                 stringListAttribute: (name: "layers", values: ["a", "b", "c"]), attributes: ["steps": 2])

        let script = """
        import sys, h5py, numpy as np
        path, path32, matrix = sys.argv[1:4]
        with h5py.File(path, "r") as f:
            a = f.attrs
            assert a["format"] == "ila-deltas" and isinstance(a["format"], str), repr(a["format"])
            assert isinstance(a["kind"], str) and a["kind"] == "full"
            assert isinstance(a["tool"], str) and a["tool"] == "ila-diff 0.1.0"
            assert a["version"] == 1 and a["version"].dtype == np.int64, repr(a["version"])
            assert list(f["layers"]) == ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"], list(f["layers"])
            g = f["layers/model.layers.0.self_attn.q_proj"]
            assert g.attrs["block"] == 0 and g.attrs["kind"] == "q_proj" and isinstance(g.attrs["kind"], str)
            assert list(g.attrs["shape"]) == [3, 4] and g.attrs["shape"].dtype == np.int64
            for k in ("norm_delta", "norm_base", "rel_change"):
                assert g.attrs[k].dtype == np.float64, k
            d = g["delta"]
            assert d.dtype == np.float16, d.dtype
            assert d.shape == (3, 4)
            assert d.compression == "gzip" and d.shuffle and d.chunks is not None
            expected = ((np.arange(12) % 128) / 64 - 1).reshape(3, 4)
            assert np.array_equal(d[()].astype(np.float64), expected), d[()]
            l = f["layers/model.layers.1.mlp.down_proj"]
            assert l["lora_A"].dtype == np.float32 and l["lora_A"].shape == (2, 3)
            assert l["lora_B"].dtype == np.float32 and l["lora_B"].shape == (4, 2)
            assert l.attrs["scale"] == 0.5 and l.attrs["reconstruction_error"] == 0.125
            assert "delta" not in l
        with h5py.File(path32, "r") as f:
            d = f["layers/model.layers.0.self_attn.q_proj/delta"]
            assert d.dtype == np.float32 and d.shape == (3, 4)
            assert np.array_equal(d[()], expected.astype(np.float32))
        with h5py.File(matrix, "r") as f:
            s = f["scores"]
            assert s.dtype == np.float32 and s.shape == (2, 3)
            assert [x.decode() if isinstance(x, bytes) else x for x in s.attrs["layers"]] == ["a", "b", "c"]
            assert s.attrs["steps"] == 2
        print("ok")
        """
        let result = run(["python3", "-c", script, file, f32file, matrix])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(result.output.trimmingCharacters(in: .whitespacesAndNewlines), "ok")

        // And the other way round: a file written by h5py (float16, fixed-length strings) reads here.
        let foreign = path("foreign.h5")
        let writer = """
        import sys, h5py, numpy as np
        with h5py.File(sys.argv[1], "w") as f:
            f.attrs["format"] = np.bytes_("ila-deltas")
            f.attrs["version"] = np.int32(1)
            f.attrs["kind"] = "lora"
            g = f.create_group("layers/model.layers.2.self_attn.v_proj")
            g.attrs["block"] = 2; g.attrs["kind"] = "v_proj"; g.attrs["shape"] = [2, 3]
            g.attrs["norm_delta"] = 1; g.attrs["norm_base"] = 2.0; g.attrs["rel_change"] = 0.5
            g.create_dataset("delta", data=np.array([[0.5, -1, 2], [3, 4, 1e-3]], dtype=np.float16))
        """
        let made = run(["python3", "-c", writer, foreign])
        XCTAssertEqual(made.status, 0, made.output)
        let store = try DeltaStore(path: foreign)
        XCTAssertEqual(store.kind, "lora")
        XCTAssertEqual(store.layerInfo(try layer("model.layers.2.self_attn.v_proj"))?.dtype, "float16")
        let d = try store.delta(try layer("model.layers.2.self_attn.v_proj"))
        XCTAssertEqual(d.dense(), [0.5, -1, 2, 3, 4, Float(Float16(1e-3))])
        XCTAssertEqual(d.normDelta, 1)
    }

    private func run(_ args: [String]) -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { return (-1, "\(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
