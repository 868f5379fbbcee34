import Foundation
import ILADiff

/// ranking.json (DESIGN.md section 6): per-layer ILA scores, written by `ila-mask learn`, read by
/// compare, export and ila-transfer.
public struct Ranking: Codable, Sendable, Equatable {
    public struct Model: Codable, Sendable, Equatable {
        public var architecture: String
        public var blocks: Int
        public var kinds: [String]
        public init(architecture: String, blocks: Int, kinds: [String]) {
            self.architecture = architecture
            self.blocks = blocks
            self.kinds = kinds
        }
    }

    public struct Source: Codable, Sendable, Equatable {
        public var base: String
        public var deltas: String
        public var data: String
        public var tool: String
        public init(base: String, deltas: String, data: String, tool: String) {
            self.base = base
            self.deltas = deltas
            self.data = data
            self.tool = tool
        }
    }

    /// How the scores were made. ILA's rankings (`learn`, or `score --method ila`) fill the
    /// optimizer fields; the other methods of `ila-mask score` (DESIGN.md section 11) record
    /// `method` and only the settings they have, so the optimizer fields are optional on reading.
    public struct Objective: Codable, Sendable, Equatable {
        /// "ila" (nil in files written before `score` existed), "rel-change", "spectrum",
        /// "block-influence", "block-influence-sublayer", "angular", "taylor", "ablation".
        public var method: String?
        public var lambda: Double?
        public var sInit: Double?
        public var lr: Double?
        public var steps: Int?
        public var batch: Int?
        public var seqLen: Int?
        public var seed: UInt64?
        public var optimizer: String?
        public var template: String?
        /// With `learn --stable-steps K`: K, and the step the run stopped at (nil: it ran all steps).
        public var stableSteps: Int?
        public var stoppedAt: Int?
        /// The large GEMMs' input precision when not float32 ("bf16" with `--precision bf16`).
        public var precision: String?
        /// Data-driven score methods: rows of --data used, and the response tokens they hold.
        public var rows: Int?
        public var tokens: Int?
        /// block-influence / angular: which token positions are averaged ("all" or "last"), the
        /// block distance n (angular), and which state follows the last block ("normed" as
        /// transformers' hidden_states, or "raw").
        public var positions: String?
        public var distance: Int?
        public var lastState: String?
        /// Hidden-state methods run with every delta scaled by this (absent: the base model).
        public var gamma: Double?
        enum CodingKeys: String, CodingKey {
            case method, gamma, lambda, lr, steps, batch, seed, optimizer, template, precision, rows, tokens, positions, distance
            case stableSteps = "stable_steps", stoppedAt = "stopped_at"
            case sInit = "s_init"
            case seqLen = "seq_len"
            case lastState = "last_state"
        }
        public init(lambda: Double, sInit: Double, lr: Double, steps: Int, batch: Int, seqLen: Int, seed: UInt64,
                    optimizer: String = "adam", template: String? = nil) {
            self.lambda = lambda
            self.sInit = sInit
            self.lr = lr
            self.steps = steps
            self.batch = batch
            self.seqLen = seqLen
            self.seed = seed
            self.optimizer = optimizer
            self.template = template
        }
        /// A score method's record: only `method` and what the caller sets afterwards.
        public init(method: String) { self.method = method }
    }

    public struct Layer: Codable, Sendable, Equatable {
        public var name: String
        public var block: Int
        public var kind: String
        public var score: Double
        public var gamma: Double?
        /// 1 = most important.
        public var rank: Int
        public init(name: String, block: Int, kind: String, score: Double, gamma: Double?, rank: Int) {
            self.name = name
            self.block = block
            self.kind = kind
            self.score = score
            self.gamma = gamma
            self.rank = rank
        }
    }

    public struct HistoryEntry: Codable, Sendable, Equatable {
        public var step: Int
        public var nll: Double
        public var meanGamma: Double
        public var j: Double?
        enum CodingKeys: String, CodingKey {
            case step, nll
            case meanGamma = "mean_gamma"
            case j = "J"
        }
        public init(step: Int, nll: Double, meanGamma: Double, j: Double?) {
            self.step = step
            self.nll = nll
            self.meanGamma = meanGamma
            self.j = j
        }
    }

    public var format: String = "ila-ranking"
    public var version: Int = 1
    public var model: Model
    public var source: Source?
    public var objective: Objective?
    /// Canonical order (block, then kind q k v o gate up down).
    public var layers: [Layer]
    public var history: [HistoryEntry]?
    /// Held-out NLL of the final mask, with `learn --eval`.
    public var eval: [String: Double]?

    public init(model: Model, source: Source?, objective: Objective?, layers: [Layer], history: [HistoryEntry]?,
                eval: [String: Double]? = nil) {
        self.model = model
        self.source = source
        self.objective = objective
        self.layers = layers
        self.history = history
        self.eval = eval
    }

    /// Builds a ranking from scores in any order: layers sorted canonically, ranks by score
    /// descending with ties broken by canonical order.
    /// `kinds`: the architecture's linear kinds in block order (default: those scored, in canonical order).
    public static func from(scores: [(LinearLayer, Double)], gammas: [Double]? = nil, architecture: String, blocks: Int,
                            kinds architectureKinds: [String]? = nil,
                            source: Source?, objective: Objective?, history: [HistoryEntry]?) -> Ranking {
        var entries = scores.enumerated().map { (i, e) in (layer: e.0, score: e.1, gamma: gammas?[i]) }
        entries.sort { $0.layer < $1.layer }
        let order = entries.indices.sorted { a, b in
            entries[a].score != entries[b].score ? entries[a].score > entries[b].score : a < b
        }
        var rank = [Int](repeating: 0, count: entries.count)
        for (r, i) in order.enumerated() { rank[i] = r + 1 }
        let kinds = architectureKinds ?? LayerKind.ordered(entries.map(\.layer.kind)).map(\.rawValue)
        let layers = entries.enumerated().map { i, e in
            Layer(name: e.layer.name, block: e.layer.block, kind: e.layer.kind.rawValue, score: e.score, gamma: e.gamma, rank: rank[i])
        }
        return Ranking(model: Model(architecture: architecture, blocks: blocks, kinds: kinds), source: source,
                       objective: objective, layers: layers, history: history)
    }

    /// Layers from most to least important.
    public var ordered: [Layer] { layers.sorted { $0.rank < $1.rank } }

    /// "Top fraction F" of N layers: the first ⌊F·N + 0.5⌋ of the ranking, at least 1.
    public static func topCount(fraction: Double, of n: Int) -> Int {
        max(1, min(n, Int((fraction * Double(n) + 0.5).rounded(.down))))
    }

    /// Names of the top-F layers.
    public func top(_ fraction: Double) -> Set<String> {
        Set(ordered.prefix(Self.topCount(fraction: fraction, of: layers.count)).map(\.name))
    }

    // MARK: reading and writing

    public static func load(path: String) throws -> Ranking {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ILAError(file: path, FileManager.default.fileExists(atPath: path) ? "cannot read" : "no such file")
        }
        let r: Ranking
        do {
            r = try JSONDecoder().decode(Ranking.self, from: data)
        } catch DecodingError.keyNotFound(let key, let ctx) {
            throw ILAError(file: path, "missing key \((ctx.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: "."))")
        } catch DecodingError.typeMismatch(_, let ctx), DecodingError.valueNotFound(_, let ctx) {
            throw ILAError(file: path, "key \(ctx.codingPath.map(\.stringValue).joined(separator: ".")) has the wrong type")
        } catch DecodingError.dataCorrupted(let ctx) where !ctx.codingPath.isEmpty {
            // e.g. 1e300 or 2^70 where an integer is expected
            throw ILAError(file: path, "key \(ctx.codingPath.map(\.stringValue).joined(separator: ".")) has an invalid or out-of-range value")
        } catch {
            // Foundation's decoder reports an integer beyond 64 bits (or 1e300 for an int) as invalid JSON.
            if (try? JSONSerialization.jsonObject(with: data)) != nil {
                throw ILAError(file: path, "a number is out of range or not an integer where one is expected")
            }
            throw ILAError(file: path, "not valid JSON")
        }
        try r.validate(path: path)
        return r
    }

    func validate(path: String) throws {
        guard format == "ila-ranking" else { throw ILAError(file: path, "format is \"\(format)\", expected \"ila-ranking\"") }
        guard version == 1 else { throw ILAError(file: path, "version \(version) is not supported (expected 1)") }
        guard !layers.isEmpty else { throw ILAError(file: path, "has no layers") }
        var names = Set<String>(), ranks = Set<Int>()
        for l in layers {
            guard let parsed = LinearLayer(name: l.name) else {
                throw ILAError(file: path, "layer \(l.name) is not a q/k/v/o/gate/up/down layer of a block")
            }
            guard parsed.block == l.block, parsed.kind.rawValue == l.kind else {
                throw ILAError(file: path, "layer \(l.name): block/kind \(l.block)/\(l.kind) disagree with its name")
            }
            guard l.score.isFinite else { throw ILAError(file: path, "layer \(l.name): score is not finite") }
            guard names.insert(l.name).inserted else { throw ILAError(file: path, "layer \(l.name) appears twice") }
            guard l.rank >= 1, l.rank <= layers.count, ranks.insert(l.rank).inserted else {
                throw ILAError(file: path, "layer \(l.name): rank \(l.rank) is out of range or repeated")
            }
        }
        guard model.blocks >= 1, layers.allSatisfy({ $0.block < model.blocks }) else {
            throw ILAError(file: path, "model.blocks \(model.blocks) does not cover the layers' blocks")
        }
    }

    public func jsonData() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try enc.encode(self)
    }

    /// Writes atomically.
    public func write(path: String) throws {
        try AtomicOutput.write(try jsonData(), to: path)
    }
}
