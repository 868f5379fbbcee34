import Foundation
import ILATestSupport
import XCTest
@testable import ILADiff

/// `--compression`: every deflate level writes a file that decodes — through libhdf5's own filter
/// pipeline here and through h5py — to exactly the values given (the uncompressed path's), with
/// chunk grids whose edges cut the matrix on both axes.
final class CompressionTests: XCTestCase {
    var tmp: TempDir!
    override func setUp() { tmp = TempDir("diff-compression") }
    override func tearDown() { tmp.remove() }

    /// 0 (no filter), 1, the default and 9.
    static var levels: [Int] { Array(Set([0, 1, DeltaStoreWriter.defaultCompression, 9])).sorted() }

    /// Matrices chosen against the ~1 MiB chunk budget (262144 float32 / 524288 float16 elements):
    /// 300 × 1000 has chunks of 262 whole float32 rows, the last one partial (float16: one chunk of
    /// 524 rows, partial); 2 × 262145 is wider than a float32 chunk, so its chunks are [1, 262144]
    /// and each row's last column chunk holds one value; 5 × 7 and 1 × 1 are single small chunks.
    static let shapes: [(name: String, rows: Int, cols: Int)] = [
        ("model.layers.0.self_attn.q_proj", 300, 1000),
        ("model.layers.0.mlp.down_proj", 2, 262_145),
        ("model.layers.1.self_attn.k_proj", 5, 7),
        ("model.layers.1.mlp.up_proj", 1, 1),
    ]

    /// Values shaped like real full-fine-tune deltas: differences of two bf16 numbers (exact in
    /// float32, low mantissa bytes mostly zero), some exact zeros, some larger values; all finite
    /// and within float16 range.
    static func values(_ n: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix(seed)
        return (0..<n).map { i in
            if i % 11 == 0 { return 0 }
            if i % 97 == 0 { return rng.float(300) }
            let w = Float(bitPattern: UInt32(bf16Bits(rng.float(0.05))) << 16)
            let w2 = Float(bitPattern: UInt32(bf16Bits(w + rng.float(0.0005))) << 16)
            return w2 - w
        }
    }

    /// The chunk dims HDF5 is told about, computed here from the rule (1 MiB of elements: whole
    /// rows when a row fits, else one row of as many columns as fit).
    static func expectedChunk(rows: Int, cols: Int, elementSize: Int) -> [Int] {
        let budget = (1 << 20) / elementSize
        return cols <= budget ? [min(rows, budget / cols), cols] : [1, budget]
    }

    private func deltas(seed: UInt64) throws -> [LayerDelta] {
        var out: [LayerDelta] = []
        for (i, s) in Self.shapes.enumerated() {
            let v = Self.values(s.rows * s.cols, seed: seed + UInt64(i))
            out.append(LayerDelta(layer: try XCTUnwrap(LinearLayer(name: s.name)), outFeatures: s.rows, inFeatures: s.cols,
                                  payload: .full(v), normDelta: naiveNorm(v), normBase: 1))
        }
        // Factors: lora_A [3, 1000] (one chunk) and lora_B [700, 3] (one chunk of whole rows).
        let a = Self.values(3 * 1000, seed: seed + 100), b = Self.values(700 * 3, seed: seed + 101)
        out.append(LayerDelta(layer: try XCTUnwrap(LinearLayer(name: "model.layers.2.self_attn.o_proj")),
                              outFeatures: 700, inFeatures: 1000, payload: .factors(a: a, b: b, rank: 3, scale: 0.5),
                              normDelta: 1, normBase: 2))
        return out
    }

    private func write(_ deltas: [LayerDelta], to path: String, f16: Bool, level: Int) throws {
        let w = try DeltaStoreWriter(path: path, info: DeltaFileInfo(kind: "full", base: "b", aligned: "a", tool: "t"),
                                     storeF16: f16, compression: level)
        for d in deltas { try w.append(d) }
        try w.finish()
    }

    private func storage(_ path: String, _ layer: String, _ dataset: String) throws -> (chunk: [Int]?, filters: [String]) {
        let f = try HDF5File.openReadOnly(path: path)
        defer { try? f.close() }
        return try f.root().openGroup("layers").openGroup(layer).openDataset(dataset).storage()
    }

    // MARK: through libhdf5's filter pipeline

    func testEveryLevelDecodesToTheGivenValues() throws {
        let ds = try deltas(seed: 7)
        for f16 in [false, true] {
            var sizes: [Int: Int] = [:]
            var decoded: [Int: [[Float]]] = [:]
            for level in Self.levels {
                let path = tmp.path("l\(level)-\(f16 ? "f16" : "f32").h5")
                try write(ds, to: path, f16: f16, level: level)
                sizes[level] = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
                let store = try DeltaStore(path: path)
                var all: [[Float]] = []
                for d in ds {
                    let got = try store.delta(d.layer)
                    let label = "\(d.layer.name) level \(level) f16 \(f16)"
                    switch (d.payload, got.payload) {
                    case (.full(let v), .full(let g)):
                        // float16 storage rounds to nearest even (the standard library's conversion).
                        let expected = f16 ? v.map { Float(Float16($0)) } : v
                        XCTAssertEqual(g.count, expected.count, label)
                        let bad = g.count == expected.count ? g.indices.first { g[$0].bitPattern != expected[$0].bitPattern } : nil
                        XCTAssertNil(bad, "\(label): first differing value at \(bad ?? -1)")
                        all.append(g)
                        let s = try storage(path, d.layer.name, "delta")
                        if level == 0 {
                            XCTAssertNil(s.chunk, "\(label): level 0 is contiguous")
                            XCTAssertEqual(s.filters, [], label)
                        } else {
                            XCTAssertEqual(s.chunk, Self.expectedChunk(rows: d.outFeatures, cols: d.inFeatures,
                                                                       elementSize: f16 ? 2 : 4), label)
                            XCTAssertEqual(s.filters, ["shuffle", "deflate \(level)"], label)
                        }
                    case (.factors(let a, let b, 3, 0.5), .factors(let ga, let gb, 3, let scale)):
                        XCTAssertEqual(scale, 0.5)
                        XCTAssertEqual(ga.map(\.bitPattern), a.map(\.bitPattern), label)
                        XCTAssertEqual(gb.map(\.bitPattern), b.map(\.bitPattern), label)
                        all.append(ga + gb)
                        for name in ["lora_A", "lora_B"] {
                            XCTAssertEqual(try storage(path, d.layer.name, name).filters,
                                           level == 0 ? [] : ["shuffle", "deflate \(level)"], "\(label) \(name)")
                        }
                    default:
                        XCTFail("\(label): payload kind changed")
                    }
                }
                decoded[level] = all
            }
            // Every level equals the uncompressed file, value for value.
            for level in Self.levels where level != 0 {
                XCTAssertEqual(decoded[level]?.map { $0.map(\.bitPattern) }, decoded[0]?.map { $0.map(\.bitPattern) }, "level \(level)")
            }
            let raw = try XCTUnwrap(sizes[0]), l1 = try XCTUnwrap(sizes[1]), l9 = try XCTUnwrap(sizes[9])
            XCTAssertLessThan(l1, raw * 2 / 3, "level 1 compresses these deltas (f16 \(f16)): \(sizes)")
            XCTAssertLessThanOrEqual(l9, l1, "level 9 is no larger than level 1 (f16 \(f16)): \(sizes)")
        }
    }

    /// The chunks compressed here (libdeflate, shuffled by hand, written with H5Dwrite_chunk) decode
    /// to what the same values give when libhdf5 runs its own shuffle + zlib pipeline.
    func testDirectChunksMatchHDF5sOwnPipeline() throws {
        for (i, s) in Self.shapes.enumerated() {
            let v = Self.values(s.rows * s.cols, seed: 40 + UInt64(i))
            for storage in [HDF5FloatStorage.float32, .float16] {
                for level in [1, 4] {  // zlib's level 9 takes seconds here
                    let chunks = try XCTUnwrap(FilteredChunks.make(v, shape: [s.rows, s.cols], storage: storage, level: level))
                    let es = storage == .float16 ? 2 : 4
                    XCTAssertEqual(chunks.chunk, Self.expectedChunk(rows: s.rows, cols: s.cols, elementSize: es))
                    let grid = ((s.rows + chunks.chunk[0] - 1) / chunks.chunk[0]) * ((s.cols + chunks.chunk[1] - 1) / chunks.chunk[1])
                    XCTAssertEqual(chunks.chunks.count, grid, "one stored chunk per grid cell")
                    let path = tmp.path("pipe-\(i)-\(level)-\(es).h5")
                    let f = try HDF5File.create(path: path)
                    try f.root().createDataset("direct", filtered: chunks)
                    try f.root().createDataset("library", values: v, shape: [s.rows, s.cols], storage: storage, compression: level)
                    try f.close()
                    let r = try HDF5File.openReadOnly(path: path)
                    let direct = try r.root().openDataset("direct"), library = try r.root().openDataset("library")
                    XCTAssertEqual(try direct.storage().chunk, try library.storage().chunk)
                    XCTAssertEqual(try direct.storage().filters, try library.storage().filters)
                    XCTAssertEqual(try direct.readFloats().map(\.bitPattern), try library.readFloats().map(\.bitPattern),
                                   "\(s.name) \(storage) level \(level)")
                    try r.close()
                }
            }
        }
        XCTAssertNil(FilteredChunks.make([1, 2], shape: [1, 2], storage: .float32, level: 0), "level 0 has no filter")
        XCTAssertNil(FilteredChunks.make([1, 2], shape: [1, 2], storage: .float32, level: 10))
        XCTAssertNil(FilteredChunks.make([1, 2, 3], shape: [1, 2], storage: .float32, level: 1), "count must fill the shape")
    }

    func testWriterRefusesLevelsOutsideZeroToNine() throws {
        for bad in [-1, 10, 12] {
            let path = tmp.path("bad\(bad).h5")
            XCTAssertThrowsError(try DeltaStoreWriter(path: path, info: DeltaFileInfo(kind: "full", base: "b", aligned: "a", tool: "t"),
                                                      storeF16: false, compression: bad)) { e in
                XCTAssert("\(e)".hasPrefix(path + ": compression level \(bad)"), "\(e)")
            }
        }
        XCTAssertEqual(tmp.contents(), [], "nothing written")
    }

    // MARK: through h5py

    func testH5pyReadsEveryLevelExactly() throws {
        guard python(["-c", "import h5py, numpy"]).status == 0 else {
            throw XCTSkip("python3 with h5py and numpy is not available (python3 -c 'import h5py, numpy' failed); h5py interoperability of --compression not checked")
        }
        let ds = try deltas(seed: 11)
        // The given values, as raw little-endian float32 for numpy to compare with (and to round
        // to float16 with numpy's own conversion).
        var files: [String] = []
        for (i, d) in ds.enumerated() {
            let values: [Float]
            switch d.payload {
            case .full(let v): values = v
            case .factors(let a, let b, _, _): values = a + b
            }
            let raw = tmp.path("expected-\(i).f32")
            try Data(values.flatMap { le32($0.bitPattern) }).write(to: URL(fileURLWithPath: raw))
            files.append(raw)
        }
        var args: [String] = []
        for f16 in [false, true] {
            for level in Self.levels {
                let path = tmp.path("py-l\(level)-\(f16).h5")
                try write(ds, to: path, f16: f16, level: level)
                args += [path, String(level), f16 ? "f16" : "f32"]
            }
        }
        let names = pythonList(ds.map { $0.layer.name })
        let shapes = pythonList(ds.map { d -> String in
            if case .factors(_, _, let r, _) = d.payload { return "factors \(r) \(d.outFeatures) \(d.inFeatures)" }
            return "full \(d.outFeatures) \(d.inFeatures)"
        })
        let rawFiles = pythonList(files)
        let script = """
        import sys, h5py, numpy as np
        names = \(names)
        shapes = \(shapes)
        raw = [np.fromfile(p, dtype="<f4") for p in \(rawFiles)]
        argv = sys.argv[1:]
        for k in range(0, len(argv), 3):
            path, level, dtype = argv[k], int(argv[k + 1]), argv[k + 2]
            with h5py.File(path, "r") as f:
                assert list(f["layers"]) == names, list(f["layers"])
                for i, name in enumerate(names):
                    g = f["layers"][name]
                    kind = shapes[i].split()
                    if kind[0] == "full":
                        out, inp = int(kind[1]), int(kind[2])
                        sets = [("delta", raw[i].reshape(out, inp), dtype)]
                    else:
                        r, out, inp = int(kind[1]), int(kind[2]), int(kind[3])
                        sets = [("lora_A", raw[i][: r * inp].reshape(r, inp), "f32"),
                                ("lora_B", raw[i][r * inp:].reshape(out, r), "f32")]
                    for dname, expected, dt in sets:
                        d = g[dname]
                        want = expected.astype(np.float16) if dt == "f16" else expected
                        assert d.dtype == want.dtype, (path, name, dname, d.dtype)
                        got = d[()]
                        assert got.shape == want.shape, (path, name, got.shape)
                        assert np.array_equal(got.view(np.uint16 if dt == "f16" else np.uint32),
                                              want.view(np.uint16 if dt == "f16" else np.uint32)), (path, name, dname)
                        if level == 0:
                            assert d.compression is None and not d.shuffle and d.chunks is None, (path, name, d.chunks)
                        else:
                            assert d.compression == "gzip" and d.compression_opts == level and d.shuffle, (path, name)
                            assert d.chunks is not None
                            # edge chunks: read a block across the last chunk boundary on its own
                            rows, cols = d.shape
                            sub = d[rows - 1:, cols - 1:]
                            assert np.array_equal(sub, want[rows - 1:, cols - 1:])
        print("ok", len(argv) // 3)
        """
        let r = python(["-c", script] + args)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(r.output.trimmingCharacters(in: .whitespacesAndNewlines), "ok \(args.count / 3)")
    }

    // MARK: the command

    func testCommandLevelsGiveTheExactDeltas() throws {
        let base = try Paths.tinyModel("base-A"), aligned = try Paths.tinyModel("full-pyapi")
        let rawBase = try RawSafetensors(path: base.appendingPathComponent("model.safetensors").path)
        let rawAligned = try RawSafetensors(path: aligned.appendingPathComponent("model.safetensors").path)
        for level in [nil] + Self.levels.map(Optional.some) {
            let out = tmp.path("cmd-\(level.map(String.init) ?? "default").h5")
            let r = try runILADiff([base.path, aligned.path, "-o", out] + (level.map { ["--compression", String($0)] } ?? []))
            XCTAssertEqual(r.status, 0, r.stderr)
            let store = try DeltaStore(path: out)
            XCTAssertEqual(store.layers.count, 14)
            let effective = level ?? DeltaStoreWriter.defaultCompression
            for layer in store.layers {
                let w0 = rawBase[layer.weightName]!.values, w1 = rawAligned[layer.weightName]!.values
                let expected = zip(w1, w0).map { $0 - $1 }
                guard case .full(let got) = try store.delta(layer).payload else { return XCTFail("expected a full delta") }
                XCTAssertEqual(got.map(\.bitPattern), expected.map(\.bitPattern), "\(layer.name) level \(effective)")
                XCTAssertEqual(try storage(out, layer.name, "delta").filters,
                               effective == 0 ? [] : ["shuffle", "deflate \(effective)"], layer.name)
            }
        }
    }

    func testBadCompressionValuesAreOneLineAndExitOne() throws {
        let base = try Paths.tinyModel("base-A"), aligned = try Paths.tinyModel("full-pyapi")
        let out = tmp.path("never.h5")
        for bad in ["10", "=-1", "abc", "", "1.5", "99999999999999999999", " 3x"] {
            let args = bad.hasPrefix("=") ? ["--compression" + bad] : ["--compression", bad]
            let r = try runILADiff([base.path, aligned.path, "-o", out] + args)
            XCTAssertEqual(r.status, 1, "--compression \(bad): \(r.stderr)")
            XCTAssertEqual(r.stderrLines.count, 1, "--compression \(bad): one line, got \(r.stderr)")
            let line = r.stderrLines.first ?? ""
            XCTAssert(line.hasPrefix("error: --compression must be a deflate level from 0 (none) to 9"), line)
            XCTAssert(line.contains("\"\(bad.hasPrefix("=") ? String(bad.dropFirst()) : bad)\""), line)
            XCTAssertEqual(r.stdout, "")
            XCTAssertEqual(tmp.contents(), [], "--compression \(bad): nothing written")
        }
    }

    // MARK: helpers

    private func pythonList(_ items: [String]) -> String {
        "[" + items.map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
            .joined(separator: ", ") + "]"
    }

    private func python(_ args: [String]) -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3"] + args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { return (-1, "\(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
