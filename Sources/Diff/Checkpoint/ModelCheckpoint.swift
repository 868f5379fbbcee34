import Foundation

/// A model's tensors: one safetensors file, or a Hugging Face model directory holding
/// `model.safetensors` or shards listed by `model.safetensors.index.json`.
/// Only headers are read on open; tensor data is mapped and decoded on demand.
public final class ModelCheckpoint: @unchecked Sendable {
    /// The path the user gave.
    public let path: String
    /// The directory holding config.json / tokenizer.json, or nil for a bare safetensors file.
    public let directory: String?
    private let files: [SafetensorsFile]
    /// Tensor name → index into `files`.
    private let location: [String: Int]
    /// All tensor names, sorted.
    public let names: [String]

    public init(path: String) throws {
        self.path = path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw ILAError(file: path, "no such file or directory")
        }
        var files: [SafetensorsFile] = []
        var location: [String: Int] = [:]
        if !isDir.boolValue {
            directory = nil
            let f = try SafetensorsFile(path: path)
            files = [f]
            for n in f.names { location[n] = 0 }
        } else {
            directory = path
            let dir = URL(fileURLWithPath: path)
            let single = dir.appendingPathComponent("model.safetensors").path
            let indexPath = dir.appendingPathComponent("model.safetensors.index.json").path
            if FileManager.default.fileExists(atPath: indexPath) {
                let (shards, map) = try Self.readIndex(indexPath)
                var shardIndex: [String: Int] = [:]
                for shard in shards {
                    let f = try SafetensorsFile(path: dir.appendingPathComponent(shard).path)
                    shardIndex[shard] = files.count
                    files.append(f)
                }
                for (tensor, shard) in map {
                    guard let i = shardIndex[shard] else { continue }
                    guard files[i].contains(tensor) else {
                        throw ILAError(file: indexPath, "weight_map names \(tensor) in \(shard), which has no such tensor")
                    }
                    location[tensor] = i
                }
                for f in files {
                    for n in f.names where location[n] == nil {
                        throw ILAError(file: f.path, "tensor \(n) is not listed in model.safetensors.index.json")
                    }
                }
            } else if FileManager.default.fileExists(atPath: single) {
                let f = try SafetensorsFile(path: single)
                files = [f]
                for n in f.names { location[n] = 0 }
            } else if FileManager.default.fileExists(atPath: dir.appendingPathComponent("adapter_config.json").path) {
                throw ILAError(file: path, "is a LoRA adapter directory, not a model checkpoint")
            } else if FileManager.default.fileExists(atPath: dir.appendingPathComponent("pytorch_model.bin").path) {
                throw ILAError(file: path, "holds pytorch_model.bin only; convert it to safetensors first")
            } else {
                throw ILAError(file: path, "no model.safetensors or model.safetensors.index.json in this directory")
            }
        }
        self.files = files
        self.location = location
        self.names = location.keys.sorted()
    }

    public func info(_ name: String) -> TensorInfo? {
        location[name].flatMap { files[$0].info(name) }
    }

    public func contains(_ name: String) -> Bool { location[name] != nil }

    /// The file a tensor lives in (for error messages).
    public func file(of name: String) -> String? { location[name].map { files[$0].path } }

    /// A tensor widened to Float32, row-major.
    public func floats(_ name: String) throws -> [Float] {
        guard let i = location[name] else { throw ILAError(file: path, "no tensor named \(name)") }
        return try files[i].floats(name)
    }

    /// Runs `body` on a tensor's header entry and its bytes as mapped from the file (valid only
    /// inside `body`), then drops those pages from the resident set.
    public func withTensorBytes<T>(_ name: String, _ body: (TensorInfo, UnsafeRawBufferPointer) throws -> T) throws -> T {
        guard let i = location[name], let t = files[i].info(name) else { throw ILAError(file: path, "no tensor named \(name)") }
        return try files[i].withBytes(t) { try body(t, $0) }
    }

    /// A BF16/F16 tensor's 16-bit values as stored (nil for other dtypes).
    public func halfBits(_ name: String) throws -> [UInt16]? {
        guard let i = location[name], let t = files[i].info(name) else { throw ILAError(file: path, "no tensor named \(name)") }
        return files[i].halfBits(t)
    }

    /// A file beside the weights (config.json, tokenizer.json …), or nil.
    public func sidecar(_ fileName: String) -> String? {
        guard let directory else { return nil }
        let p = URL(fileURLWithPath: directory).appendingPathComponent(fileName).path
        return FileManager.default.fileExists(atPath: p) ? p : nil
    }

    static func readIndex(_ path: String) throws -> (shards: [String], map: [String: String]) {
        let obj = try readJSONObject(path)
        guard let map = obj["weight_map"] as? [String: Any] else {
            throw ILAError(file: path, "missing weight_map object")
        }
        var out: [String: String] = [:]
        for (k, v) in map {
            guard let s = v as? String else { throw ILAError(file: path, "weight_map entry \(k) is not a file name") }
            guard !s.contains("/") && s != ".." else { throw ILAError(file: path, "weight_map entry \(k) names \(s) outside the directory") }
            out[k] = s
        }
        return (Array(Set(out.values)).sorted(), out)
    }
}

/// Reads a JSON file whose top level must be an object.
public func readJSONObject(_ path: String) throws -> [String: Any] {
    let data: Data
    do {
        data = try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
        throw ILAError(file: path, FileManager.default.fileExists(atPath: path) ? "cannot read" : "no such file")
    }
    let obj: Any
    do {
        obj = try JSONSerialization.jsonObject(with: data)
    } catch {
        throw ILAError(file: path, "not valid JSON")
    }
    guard let dict = obj as? [String: Any] else { throw ILAError(file: path, "top level is not a JSON object") }
    return dict
}
