import Foundation
import ILADiff
import ILAEngine
import ILARanking

/// A PEFT adapter directory (adapter_config.json, adapter_model.safetensors float32,
/// train_log.json), written into a temporary sibling and renamed into place, so that the
/// directory appears complete or not at all.
public struct AdapterOutput {
    public var path: String
    /// The LoRA settings written to adapter_config.json.
    public var r: Int
    public var alpha: Double
    public var rsLoRA: Bool
    public var baseModel: String?
    /// Every linear layer of the model, to say "all kinds" instead of a regex when all are trained.
    public var allLayers: [LinearLayer]

    public init(path: String, r: Int, alpha: Double, rsLoRA: Bool, baseModel: String?, allLayers: [LinearLayer]) {
        self.path = path
        self.r = r
        self.alpha = alpha
        self.rsLoRA = rsLoRA
        self.baseModel = baseModel
        self.allLayers = allLayers
    }

    /// Fails early on an output that cannot be written: a missing or unwritable parent, or an
    /// existing path that is a file or a non-empty directory that is not an adapter.
    public static func check(_ path: String) throws {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        let parent = url.deletingLastPathComponent().path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDir), isDir.boolValue else {
            throw ILAError(file: path, "output folder \(parent) does not exist")
        }
        guard access(parent, W_OK) == 0 else { throw ILAError(file: path, "output folder \(parent) is not writable") }
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw ILAError(file: path, "exists and is a file, not an adapter directory") }
            let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
            guard names.isEmpty || names.contains("adapter_config.json") else {
                throw ILAError(file: path, "exists and is not an adapter directory (no adapter_config.json); choose another -o")
            }
        }
    }

    /// adapter_config.json as PEFT's LoraConfig reads it.
    public func config(_ params: LoRAParameters) throws -> Data {
        let names = params.layers.map(\.layer.name)
        let kinds = Set(params.layers.map(\.layer.kind.rawValue))
        let allOfKinds = allLayers.filter { kinds.contains($0.kind.rawValue) }.map(\.name)
        // Every layer of the kinds trained: the kinds, as PEFT writes them; otherwise one regex
        // that re.fullmatch-es exactly the trained module names.
        let target: Any = Set(allOfKinds) == Set(names) ? kinds.sorted() : SelectionExporter.peftRegex(names)
        var rankPattern: [String: Int] = [:], alphaPattern: [String: Double] = [:]
        for l in params.layers where l.rank != r {
            rankPattern[l.layer.name] = l.rank
        }
        for l in params.layers {
            let a = rsLoRA ? Double(l.scale) * Double(l.rank).squareRoot() : Double(l.scale) * Double(l.rank)
            if abs(a - alpha) > 1e-6 * max(1, abs(alpha)) { alphaPattern[l.layer.name] = a }
        }
        let cfg: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "use_rslora": rsLoRA,
            "target_modules": target, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": false,
            "init_lora_weights": true, "inference_mode": true, "use_dora": false,
            "rank_pattern": rankPattern, "alpha_pattern": alphaPattern,
            "base_model_name_or_path": baseModel ?? NSNull(), "modules_to_save": NSNull(),
            "layers_to_transform": NSNull(), "layers_pattern": NSNull(), "revision": NSNull(),
        ]
        return try JSONSerialization.data(withJSONObject: cfg, options: [.prettyPrinted, .sortedKeys])
    }

    public static func weightTensors(_ params: LoRAParameters) -> [SafetensorsOutput.Tensor] {
        (0..<params.values.count).map { t in
            let buf = params.values[t]
            return .init(name: params.tensorName(t), shape: params.shape(t)) { dst in dst.baseAddress!.update(from: buf.p, count: buf.count) }
        }
    }

    /// Writes the directory; `log` is train_log.json's content.
    public func write(_ params: LoRAParameters, log: Data) throws {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        let temp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        try? FileManager.default.removeItem(at: temp)
        do {
            try FileManager.default.createDirectory(at: temp, withIntermediateDirectories: false)
            try config(params).write(to: temp.appendingPathComponent("adapter_config.json"))
            try SafetensorsOutput.encode(Self.weightTensors(params), metadata: ["format": "pt"])
                .write(to: temp.appendingPathComponent("adapter_model.safetensors"))
            try log.write(to: temp.appendingPathComponent("train_log.json"))
        } catch {
            try? FileManager.default.removeItem(at: temp)
            throw ILAError(file: path, "cannot write: \(error.localizedDescription)")
        }
        // An earlier adapter under the same name is replaced (check() refused anything else).
        let old = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).old-\(getpid())")
        var moved = false
        if FileManager.default.fileExists(atPath: url.path) {
            guard rename(url.path, old.path) == 0 else {
                let reason = String(cString: strerror(errno))
                try? FileManager.default.removeItem(at: temp)
                throw ILAError(file: path, "cannot replace: \(reason)")
            }
            moved = true
        }
        guard rename(temp.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: temp)
            if moved { _ = rename(old.path, url.path) }
            throw ILAError(file: path, "cannot write: \(reason)")
        }
        if moved { try? FileManager.default.removeItem(at: old) }
    }
}
