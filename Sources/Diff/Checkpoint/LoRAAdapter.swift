import Foundation

/// A PEFT LoRA adapter directory: `adapter_config.json` + `adapter_model.safetensors` with
/// `base_model.model.<layer>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r].
/// Δ = scale · B·A with scale = alpha/r (alpha/√r with `use_rslora`), r and alpha per module from
/// `rank_pattern` / `alpha_pattern` by PEFT's suffix rule.
public final class LoRAAdapter: @unchecked Sendable {
    public struct Config: Sendable {
        public var r: Int
        public var loraAlpha: Double
        public var useRSLoRA: Bool
        public var fanInFanOut: Bool
        public var rankPattern: [String: Int]
        public var alphaPattern: [String: Double]
        public var targetModules: [String]
        public var baseModel: String?

        /// r and alpha for a module (its name without the `base_model.model.` prefix),
        /// matching PEFT's `get_pattern_key`: an exact key first, else the first key (in file
        /// order) that matches as a regex suffix `(.*\.)?(key)$`.
        public func rankAndAlpha(for module: String) -> (r: Int, alpha: Double) {
            let r = Self.patternKey(rankPatternOrder, module).flatMap { rankPattern[$0] } ?? self.r
            let a = Self.patternKey(alphaPatternOrder, module).flatMap { alphaPattern[$0] } ?? loraAlpha
            return (r, a)
        }

        /// The scale for a module.
        public func scale(for module: String) -> Double {
            let (r, alpha) = rankAndAlpha(for: module)
            return useRSLoRA ? alpha / Double(r).squareRoot() : alpha / Double(r)
        }

        var rankPatternOrder: [String] = []
        var alphaPatternOrder: [String] = []

        static func patternKey(_ keys: [String], _ module: String) -> String? {
            if keys.contains(module) { return module }
            for key in keys {
                guard let re = try? NSRegularExpression(pattern: "^(.*\\.)?(\(key))$") else { continue }
                let range = NSRange(module.startIndex..., in: module)
                if re.firstMatch(in: module, range: range) != nil { return key }
            }
            return nil
        }
    }

    /// One adapted layer's factors.
    public struct Factors: Sendable {
        public let layer: LinearLayer
        /// row-major [r, in]
        public let a: [Float]
        /// row-major [out, r]
        public let b: [Float]
        public let rank: Int
        public let inFeatures: Int
        public let outFeatures: Int
        public let scale: Float
    }

    public let path: String
    public let config: Config
    public let weights: SafetensorsFile
    /// The adapted layers in canonical order.
    public let layers: [LinearLayer]
    private let prefixes: [LinearLayer: String]

    public static func isAdapterDirectory(_ path: String) -> Bool {
        FileManager.default.fileExists(atPath: URL(fileURLWithPath: path).appendingPathComponent("adapter_config.json").path)
    }

    public init(path: String) throws {
        self.path = path
        let dir = URL(fileURLWithPath: path)
        let configPath = dir.appendingPathComponent("adapter_config.json").path
        config = try Self.readConfig(configPath)
        let weightsPath = dir.appendingPathComponent("adapter_model.safetensors").path
        guard FileManager.default.fileExists(atPath: weightsPath) else {
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("adapter_model.bin").path) {
                throw ILAError(file: path, "holds adapter_model.bin only; save the adapter with safe_serialization=True")
            }
            throw ILAError(file: weightsPath, "no such file")
        }
        weights = try SafetensorsFile(path: weightsPath)

        var found: [LinearLayer: (a: String?, b: String?)] = [:]
        var prefixes: [LinearLayer: String] = [:]
        for name in weights.names {
            var module = name
            guard let r = module.range(of: ".lora_", options: .backwards) else {
                throw ILAError(file: weightsPath, "tensor \(name) is not a LoRA factor (lora_A / lora_B); only plain LoRA on linear layers is supported")
            }
            let suffix = String(module[r.upperBound...])
            module = String(module[..<r.lowerBound])
            let which: Character
            switch suffix {
            case "A.weight", "A.default.weight": which = "A"
            case "B.weight", "B.default.weight": which = "B"
            case let s where s.hasPrefix("embedding_"):
                throw ILAError(file: weightsPath, "tensor \(name): LoRA on an embedding is not supported (only linear layers)")
            case let s where s.hasPrefix("magnitude"):
                throw ILAError(file: weightsPath, "tensor \(name): DoRA adapters are not supported")
            default:
                throw ILAError(file: weightsPath, "tensor \(name) is not a LoRA factor (lora_A / lora_B)")
            }
            let stripped = module.hasPrefix("base_model.model.") ? String(module.dropFirst("base_model.model.".count)) : module
            guard let layer = LinearLayer(name: stripped) else {
                throw ILAError(file: weightsPath, "tensor \(name) adapts \(stripped), which is not a q/k/v/o/gate/up/down linear layer of a block")
            }
            prefixes[layer] = module
            var entry = found[layer] ?? (nil, nil)
            if which == "A" { entry.a = name } else { entry.b = name }
            found[layer] = entry
        }
        for (layer, e) in found {
            if e.a == nil { throw ILAError(file: weightsPath, "\(layer.name): lora_B without lora_A") }
            if e.b == nil { throw ILAError(file: weightsPath, "\(layer.name): lora_A without lora_B") }
        }
        if found.isEmpty { throw ILAError(file: weightsPath, "holds no LoRA factors") }
        self.prefixes = prefixes
        layers = found.keys.sorted()
    }

    /// The factors of one layer in PEFT's orientation: A [r, in], B [out, r] (transposed here when
    /// `fan_in_fan_out`), with the layer's scale.
    public func factors(_ layer: LinearLayer) throws -> Factors {
        guard let prefix = prefixes[layer] else { throw ILAError(file: path, "no adapter for \(layer.name)") }
        let wp = weights.path
        let aName = weights.contains(prefix + ".lora_A.weight") ? prefix + ".lora_A.weight" : prefix + ".lora_A.default.weight"
        let bName = weights.contains(prefix + ".lora_B.weight") ? prefix + ".lora_B.weight" : prefix + ".lora_B.default.weight"
        // Two spellings of one layer (with and without `base_model.model.`) may each hold one factor.
        guard let ai = weights.info(aName), let bi = weights.info(bName) else {
            throw ILAError(file: wp, "\(layer.name): lora_A and lora_B are not stored under the same module name")
        }
        guard ai.shape.count == 2, bi.shape.count == 2 else {
            throw ILAError(file: wp, "\(layer.name): LoRA factors must be 2-D, got \(ai.shape) and \(bi.shape)")
        }
        var a = try weights.floats(ai)
        var b = try weights.floats(bi)
        var (r, inF) = (ai.shape[0], ai.shape[1])
        var (outF, rb) = (bi.shape[0], bi.shape[1])
        if config.fanInFanOut {
            // Stored transposed (Conv1D layout): A [in, r], B [r, out].
            a = transposed(a, rows: ai.shape[0], cols: ai.shape[1]); (r, inF) = (ai.shape[1], ai.shape[0])
            b = transposed(b, rows: bi.shape[0], cols: bi.shape[1]); (outF, rb) = (bi.shape[1], bi.shape[0])
        }
        guard r == rb else {
            throw ILAError(file: wp, "\(layer.name): lora_A rank \(r) does not match lora_B rank \(rb)")
        }
        let expected = config.rankAndAlpha(for: layer.name).r
        guard r == expected else {
            throw ILAError(file: wp, "\(layer.name): factors have rank \(r) but adapter_config.json gives r=\(expected)")
        }
        for v in a where !v.isFinite { throw ILAError(file: wp, "\(aName) contains NaN or Inf") }
        for v in b where !v.isFinite { throw ILAError(file: wp, "\(bName) contains NaN or Inf") }
        return Factors(layer: layer, a: a, b: b, rank: r, inFeatures: inF, outFeatures: outF,
                       scale: Float(config.scale(for: layer.name)))
    }

    static func readConfig(_ path: String) throws -> Config {
        let obj = try readJSONObject(path)
        if let t = obj["peft_type"] as? String, t.uppercased() != "LORA" {
            throw ILAError(file: path, "peft_type \(t) is not supported (only LORA)")
        }
        if (obj["use_dora"] as? Bool) == true {
            throw ILAError(file: path, "use_dora is true: DoRA adapters are not supported")
        }
        guard let r = obj["r"].flatMap(jsonInt), r > 0 else { throw ILAError(file: path, "missing or invalid r") }
        guard let alphaN = obj["lora_alpha"] as? NSNumber, alphaN.doubleValue.isFinite else {
            throw ILAError(file: path, "missing or invalid lora_alpha")
        }
        var rankPattern: [String: Int] = [:], alphaPattern: [String: Double] = [:]
        var rankOrder: [String] = [], alphaOrder: [String] = []
        if let rp = obj["rank_pattern"], !(rp is NSNull) {
            guard let d = rp as? [String: Any] else { throw ILAError(file: path, "rank_pattern is not an object") }
            for (k, v) in d {
                guard let i = jsonInt(v), i > 0 else { throw ILAError(file: path, "rank_pattern[\(k)] is not a positive integer") }
                rankPattern[k] = i
            }
            rankOrder = try orderedKeys(of: "rank_pattern", in: path, fallback: Array(d.keys))
        }
        if let ap = obj["alpha_pattern"], !(ap is NSNull) {
            guard let d = ap as? [String: Any] else { throw ILAError(file: path, "alpha_pattern is not an object") }
            for (k, v) in d {
                guard let n = v as? NSNumber, n.doubleValue.isFinite else { throw ILAError(file: path, "alpha_pattern[\(k)] is not a number") }
                alphaPattern[k] = n.doubleValue
            }
            alphaOrder = try orderedKeys(of: "alpha_pattern", in: path, fallback: Array(d.keys))
        }
        for key in rankOrder + alphaOrder {
            guard (try? NSRegularExpression(pattern: key)) != nil else {
                throw ILAError(file: path, "pattern key \(key) is not a valid regular expression")
            }
            if let why = Self.backtrackingRisk(key) {
                throw ILAError(file: path, "pattern key \(key) is too costly to match (\(why)); use a plain module name or a simpler pattern")
            }
        }
        var targets: [String] = []
        if let t = obj["target_modules"] as? [String] { targets = t } else if let t = obj["target_modules"] as? String { targets = [t] }
        var c = Config(r: r, loraAlpha: alphaN.doubleValue, useRSLoRA: (obj["use_rslora"] as? Bool) ?? false,
                       fanInFanOut: (obj["fan_in_fan_out"] as? Bool) ?? false,
                       rankPattern: rankPattern, alphaPattern: alphaPattern, targetModules: targets,
                       baseModel: obj["base_model_name_or_path"] as? String)
        c.rankPatternOrder = rankOrder
        c.alphaPatternOrder = alphaOrder
        return c
    }

    /// Why matching `key` could backtrack exponentially (or with a high polynomial) on a module
    /// name, or nil. The matcher has no time limit, so keys with a repeated group that itself
    /// repeats or alternates (`(a+)+`, `(a|ab)*`) or with more than four unbounded repetitions
    /// (`.*.*.*.*.*x`) are refused; PEFT's keys are module names or simple suffixes.
    static func backtrackingRisk(_ key: String) -> String? {
        let c = Array(key.unicodeScalars)
        var unbounded = 0
        // For each open group: whether its content so far repeats or alternates.
        var groups: [Bool] = []
        var i = 0
        func isRepeat(_ j: Int) -> Bool {
            guard j < c.count else { return false }
            return c[j] == "*" || c[j] == "+" || c[j] == "{"
        }
        while i < c.count {
            let x = c[i]
            switch x {
            case "\\":
                i += 1  // the escaped character is a literal
            case "[":
                // Skip a character class (its contents are literals for this purpose).
                var j = i + 1
                if j < c.count && c[j] == "^" { j += 1 }
                if j < c.count && c[j] == "]" { j += 1 }
                while j < c.count && c[j] != "]" { if c[j] == "\\" { j += 1 }; j += 1 }
                i = j
            case "(":
                groups.append(false)
            case ")":
                let inner = groups.popLast() ?? false
                if isRepeat(i + 1) && inner { return "a repeated group that itself repeats or alternates" }
                if inner, !groups.isEmpty { groups[groups.count - 1] = true }
            case "|":
                if !groups.isEmpty { groups[groups.count - 1] = true }
            case "*", "+", "{":
                if x != "{" || key.unicodeScalars.dropFirst(i).prefix(while: { $0 != "}" }).contains(",") { unbounded += 1 }
                if !groups.isEmpty { groups[groups.count - 1] = true }
            case "?":
                if !groups.isEmpty && i > 0 && c[i - 1] != "(" { groups[groups.count - 1] = true }
            default:
                break
            }
            i += 1
        }
        return unbounded > 4 ? "more than four unbounded repetitions" : nil
    }

    /// Pattern keys in the order they appear in the file (PEFT takes the first match in dict
    /// order, which is file order); JSONSerialization loses it, so scan the text.
    static func orderedKeys(of field: String, in path: String, fallback: [String]) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: path),
              let order = JSONKeyOrder.keys(ofObjectField: field, in: data) else { return fallback.sorted() }
        return order
    }
}

/// Row-major transpose of a [rows, cols] matrix.
public func transposed(_ m: [Float], rows: Int, cols: Int) -> [Float] {
    var out = [Float](repeating: 0, count: m.count)
    for i in 0..<rows { for j in 0..<cols { out[j * rows + i] = m[i * cols + j] } }
    return out
}
