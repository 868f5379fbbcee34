import Foundation
import ILAEngine
import ILAModel
import ILADiff
import ILACollective

/// Hyper-parameters of `ila-mask learn` (defaults: DESIGN.md section 1).
public struct LearnOptions: Codable, Sendable, Equatable {
    public var lambda: Double = 1.0
    public var sInit: Double = 3.0
    public var lr: Double = 0.05
    public var beta1: Double = 0.9
    public var beta2: Double = 0.999
    public var eps: Double = 1e-8
    public var steps: Int = 300
    public var batch: Int = 16
    public var seqLen: Int = 256
    public var seed: UInt64 = 0
    public init() {}
}

/// SplitMix64: a small, fully specified generator so that a seed means the same rows everywhere.
public struct SplitMix64: Codable, Sendable, Equatable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<n without modulo bias (rejection sampling).
    public mutating func index(below n: Int) -> Int {
        let bound = UInt64(n)
        let limit = UInt64.max - UInt64.max % bound
        while true {
            let x = next()
            if x < limit { return Int(x % bound) }
        }
    }
}

/// One step of a learn run as ranking.json's `history` records it.
public struct LearnStep: Codable, Sendable, Equatable {
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

/// Everything needed to continue a learn run exactly where it stopped.
public struct LearnState: Codable, Sendable, Equatable {
    public var format = "ila-learn-state"
    public var version = 1
    public var options: LearnOptions
    /// Fingerprint of the inputs (paths, sizes, layer names) so a resume cannot mix runs.
    public var fingerprint: String
    public var layers: [String]
    public var step: Int
    /// Mask logits s, one per layer (γ order = `layers`).
    public var scores: [Double]
    public var adam: AdamOptimizer
    public var rng: SplitMix64
    public var history: [LearnStep]
    /// s after each step, [step][layer].
    public var trajectory: [[Double]]

    public init(options: LearnOptions, fingerprint: String, layers: [String]) {
        self.options = options
        self.fingerprint = fingerprint
        self.layers = layers
        step = 0
        scores = [Double](repeating: options.sInit, count: layers.count)
        adam = AdamOptimizer(count: layers.count, lr: options.lr, beta1: options.beta1, beta2: options.beta2, eps: options.eps)
        rng = SplitMix64(seed: options.seed)
        history = []
        trajectory = []
    }

    public static func load(path: String) throws -> LearnState {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ILAError(file: path, "no saved state to resume from")
        }
        let s: LearnState
        do { s = try JSONDecoder().decode(LearnState.self, from: data) } catch {
            throw ILAError(file: path, "not a valid ila-mask learn state")
        }
        guard s.format == "ila-learn-state", s.version == 1 else { throw ILAError(file: path, "not an ila-mask learn state of version 1") }
        guard s.scores.count == s.layers.count, s.adam.m.count == s.layers.count, s.adam.v.count == s.layers.count,
              s.step >= 0, s.step <= s.options.steps, s.trajectory.count == s.step, s.history.count == s.step else {
            throw ILAError(file: path, "state is inconsistent (sizes do not match)")
        }
        return s
    }

    public func save(path: String) throws {
        let enc = JSONEncoder()
        try AtomicOutput.write(try enc.encode(self), to: path)
    }
}

/// Minimises the ILA objective J(s) with Adam over s, one seeded batch of rows per step.
public struct MaskLearner {
    public let engine: TransformerEngine
    public let rows: [TokenizedRow]
    public let objective: MaskObjective
    /// The ranks that share each step's rows (a single process by default).
    public let communicator: Communicator

    public init(engine: TransformerEngine, rows: [TokenizedRow], lambda: Double,
                communicator: Communicator = SingleProcess.shared) throws {
        guard !rows.isEmpty else { throw ILAError("no training rows") }
        self.engine = engine
        self.rows = rows
        self.communicator = communicator
        objective = MaskObjective(lambda: lambda)
    }

    /// The rows of the next batch (with replacement), advancing the generator.
    public static func sampleBatch(_ rng: inout SplitMix64, rows n: Int, batch: Int) -> [Int] {
        (0..<batch).map { _ in rng.index(below: n) }
    }

    /// One step: sample, evaluate J and dJ/ds at the current s, update s with Adam. Under
    /// several ranks every rank samples the same batch, runs its share of it
    /// (`DataParallel.localRows`), and the sums are added before the (identical) Adam step.
    public func step(_ state: inout LearnState) throws {
        let idx = Self.sampleBatch(&state.rng, rows: rows.count, batch: state.options.batch)
        let batch = idx.map { rows[$0] }
        let gamma = MaskObjective.gamma(state.scores)
        let r = try DataParallel.run(rows: batch, layers: state.scores.count, gradient: true, comm: communicator) {
            try engine.gradient(rows: $0, gamma: gamma)
        }
        let v = objective.combine(result: r, scores: state.scores)
        guard v.j.isFinite, v.gradient.allSatisfy(\.isFinite) else {
            throw ILAError("objective became non-finite at step \(state.step + 1) (NLL \(v.nll))")
        }
        let meanGamma = state.scores.map(MaskObjective.sigmoid).reduce(0, +) / Double(state.scores.count)
        state.history.append(LearnStep(step: state.step, nll: v.nll, meanGamma: meanGamma, j: v.j))
        state.adam.update(&state.scores, grad: v.gradient)
        state.step += 1
        state.trajectory.append(state.scores)
    }
}
