import Foundation
import ILADiff
import ILAEngine
import ILAModel

/// What a run needs in memory, computed from the checkpoint's and the deltas' headers before
/// anything is loaded, against what the machine has (DESIGN.md section 9: a model that does not
/// fit is refused in one line, never an allocation crash). The micro-batch shrinks to fit.
public struct MemoryPlan: Sendable {
    /// Weights as held (bf16/f16 matrices 2 bytes per value, everything else 4).
    public var weights: Int
    /// The largest tensor, copied once more while it loads.
    public var loadTransient: Int
    /// Deltas as the engine holds them (float16 dense deltas 2 bytes per value), plus one
    /// layer's decoded copy while they load.
    public var deltas: Int
    /// Scratch independent of the batch: widening tiles, a full delta's weight gradient, logits.
    public var fixed: Int
    /// Activations (and gradient scratch) per token of a micro-batch.
    public var perToken: Int
    /// The same with activation recomputation (each block's input kept, one block's activations).
    public var perTokenRecomputed: Int
    /// Whether the backward pass recomputes activations (set by `budget`; `perToken` then is
    /// `perTokenRecomputed`).
    public private(set) var recompute = false
    /// The process itself: Swift runtime, Foundation, OpenBLAS and HDF5 (measured, about 36 MB).
    public static let process = 38_000_000
    /// What oneDNN adds when it runs the GEMMs: its JIT kernels, scratchpad and OpenMP team (measured, about 7 MB).
    public static let oneDNNRuntime = 8_000_000
    /// The process's own bytes for a GEMM backend.
    public static func runtimeBytes(_ gemm: GEMMBackend) -> Int { process + (gemm.resolved == .onednn ? oneDNNRuntime : 0) }
    /// The process's own bytes (set from the GEMM backend by the commands).
    public var runtime = MemoryPlan.process

    public var beforeTokens: Int { runtime + weights + loadTransient + deltas + fixed }
    public func total(tokens: Int) -> Int { beforeTokens + tokens * perToken }

    /// With `part`, what one pipeline stage needs: its blocks' weights, deltas and activations.
    public init(spec: TransformerSpec, checkpoint: ModelCheckpoint, deltas: DeltaStore?, gradient: Bool, widenWeights: Bool = false,
                part: ModelPart? = nil) {
        let part = part ?? .whole(spec)
        var w = 0, largest = 0
        for name in checkpoint.names where part.holds(tensor: name, spec: spec) {
            guard let info = checkpoint.info(name) else { continue }
            let half = (info.dtype == .BF16 || info.dtype == .F16) && info.shape.count == 2 && !widenWeights
            let bytes = info.count * (half ? 2 : 4)
            w += bytes
            largest = max(largest, info.count * 4)
        }
        weights = w
        loadTransient = largest
        var d = 0, maxWeight = 0, loraFloatsPerToken = 0, largestDecoded = 0
        let held = (deltas?.layers ?? []).filter { part.blocks.contains($0.block) }
        for layer in held {
            guard let l = deltas?.layerInfo(layer) else { continue }
            let floats: Int
            if let r = l.rank {
                floats = r * (l.outFeatures + l.inFeatures)
                loraFloatsPerToken += r
            } else {
                floats = l.outFeatures * l.inFeatures
                maxWeight = max(maxWeight, floats)
            }
            d += floats * (l.rank == nil && l.dtype == "float16" ? 2 : 4)
            largestDecoded = max(largestDecoded, 4 * floats)
        }
        self.deltas = d + largestDecoded
        fixed = TransformerEngine.tileBytes + (part.head ? TransformerEngine.logitsBytes(spec) : 0) + (gradient ? 4 * maxWeight : 0)
        // u = x·Aᵀ of every LoRA layer is kept per token; the backward adds v = dY·B of one.
        let maxRank = held.compactMap { deltas?.layerInfo($0)?.rank }.max() ?? 0
        let lora = 4 * loraFloatsPerToken + (gradient ? 4 * maxRank : 0)
        perToken = TransformerEngine.activationBytesPerToken(spec, gradient: gradient, part: part) + lora
        perTokenRecomputed = TransformerEngine.activationBytesPerToken(spec, gradient: gradient, recompute: gradient, part: part) + lora
    }

    /// The memory this process may use: the cgroup limit or MemAvailable, whichever is lower.
    public static func available() -> (bytes: Int, source: String) {
        var best: (Int, String) = (Int.max, "unlimited")
        if let s = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
           let line = s.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
           let kb = Int(line.split(separator: " ").dropFirst().first ?? "") {
            best = (kb * 1024, "MemAvailable")
        }
        for p in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
            if let s = try? String(contentsOfFile: p, encoding: .utf8),
               let limit = Int(s.trimmingCharacters(in: .whitespacesAndNewlines)), limit < best.0 {
                var used = 0
                for u in ["/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"] {
                    if let t = try? String(contentsOfFile: u, encoding: .utf8), let v = Int(t.trimmingCharacters(in: .whitespacesAndNewlines)) { used = v; break }
                }
                if limit - used < best.0 { best = (max(0, limit - used), "the cgroup limit") }
            }
        }
        return best
    }

    /// Tokens per micro-batch that fit `budget` (at most 4096), or a refusal naming the need
    /// when not even one row of `rowTokens` fits.
    public func tokenBudget(budget: Int, rowTokens: Int, source: String, what: String) throws -> Int {
        var plan = self
        return try plan.budget(budget, rowTokens: rowTokens, source: source, what: what)
    }

    /// As `tokenBudget`, switching to activation recomputation (`recompute`) when one row's
    /// activations do not fit but fit recomputed, or when `forceRecompute`.
    public mutating func budget(_ budget: Int, rowTokens: Int, source: String, what: String,
                                forceRecompute: Bool = false) throws -> Int {
        if forceRecompute || (total(tokens: rowTokens) > budget && beforeTokens + rowTokens * perTokenRecomputed <= budget),
           perTokenRecomputed < perToken {
            recompute = true
            perToken = perTokenRecomputed
        }
        let need = total(tokens: rowTokens)
        guard need <= budget else {
            let tip = deltas > weights / 2 ? "; try ila-diff --rank R or --dtype f16 deltas, a shorter --seq-len, or --max-memory" : "; try a shorter --seq-len, a machine with more memory, or --max-memory"
            throw ILAError(file: what, "needs \(Self.gb(need)) (weights \(Self.gb(weights)), deltas \(Self.gb(deltas)), one row of \(rowTokens) tokens \(Self.gb(rowTokens * perToken))), \(Self.gb(budget)) available (\(source))\(tip)")
        }
        return max(rowTokens, min(4096, (budget - beforeTokens) / max(perToken, 1)))
    }

    /// This process's peak resident memory so far: VmHWM of /proc/self/status (getrusage's
    /// ru_maxrss would include the parent's size at fork, which Linux carries across exec).
    public static func peakResidentBytes() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kb = Int(line.split(separator: " ").dropFirst().first ?? "") else {
            var u = rusage()
            getrusage(RUSAGE_SELF.rawValue, &u)
            return u.ru_maxrss * 1024
        }
        return kb * 1024
    }

    /// 31.2 GB, or 412 MB below a gigabyte.
    public static func gb(_ bytes: Int) -> String {
        bytes >= 1_000_000_000 ? String(format: "%.1f GB", Double(bytes) / 1e9) : String(format: "%.0f MB", Double(bytes) / 1e6)
    }

    /// Parses `--max-memory`: bytes, or a number with K, M, G or T (powers of 1000; KiB/MiB/GiB/TiB of 1024).
    public static func parseSize(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [(String, Double)] = [("TIB", 1_099_511_627_776), ("GIB", 1_073_741_824), ("MIB", 1_048_576), ("KIB", 1024),
                                         ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3),
                                         ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3), ("B", 1)]
        for (u, m) in units where t.hasSuffix(u) {
            guard let v = Double(t.dropLast(u.count)), v > 0, v.isFinite, v * m < 9e18 else { return nil }
            return Int(v * m)
        }
        guard let v = Int(t), v > 0 else { return nil }
        return v
    }
}
