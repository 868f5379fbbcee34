import Foundation
import ILADiff
import ILAEngine
import ILAMask
import ILAModel

/// One optimizer step as train_log.json records it.
public struct TuneStep: Codable, Sendable, Equatable {
    /// 1-based.
    public var step: Int
    /// Mean response-token NLL of the step's rows (the loss the gradient is of).
    public var loss: Double
    /// Learning rate the step used.
    public var lr: Double
    /// Tokens of the step's rows (all positions), and response tokens among them.
    public var tokens: Int
    public var lossTokens: Int
    /// Global gradient norm before clipping.
    public var gradNorm: Double
    enum CodingKeys: String, CodingKey {
        case step, loss, lr, tokens
        case lossTokens = "loss_tokens"
        case gradNorm = "grad_norm"
    }
}

/// A held-out evaluation during training.
public struct TuneEval: Codable, Sendable, Equatable {
    public var step: Int
    public var nll: Double
    public var tokens: Int
    public init(step: Int, nll: Double, tokens: Int) {
        self.step = step
        self.nll = nll
        self.tokens = tokens
    }
}

/// What a resumed run needs besides the tensors: options, inputs, position and log.
public struct TuneProgress: Codable, Sendable, Equatable {
    public var format = "ila-tune-state"
    public var version = 1
    public var options: TuneOptions
    public var fingerprint: String
    public var layers: [String]
    public var step = 0
    public var log: [TuneStep] = []
    public var evals: [TuneEval] = []
    public var stableAt: Int?
    /// Milestones written so far (percent).
    public var savedAt: [Int] = []
    public init(options: TuneOptions, fingerprint: String, layers: [String]) {
        self.options = options
        self.fingerprint = fingerprint
        self.layers = layers
    }
}

/// LoRA fine-tuning with the loss of DESIGN.md section 5: per step, the token-weighted mean NLL
/// over the response tokens of batch × grad-accum rows, its gradient with respect to every A and
/// B from the engine, AdamW at the schedule's learning rate.
public final class Tuner {
    public let engine: TransformerEngine
    public let parameters: LoRAParameters
    public let optimizer: AdamW
    public let rows: [TokenizedRow]
    public let plan: BatchPlan
    public var progress: TuneProgress
    public var options: TuneOptions { progress.options }

    /// Data parallel (DESIGN.md section 12): this process's part of `count` rows of a step
    /// (contiguous, a rule of the step's rows alone), and the sum over all processes of the
    /// step's (NLL sum, response tokens, tokens) and gradients. One process: all rows, no sum.
    public var share: (Int) -> Range<Int> = { 0..<$0 }
    public var allreduce: ((inout [Double], inout [Float]) throws -> Void)?

    public init(engine: TransformerEngine, rows: [TokenizedRow], progress: TuneProgress) throws {
        guard let parameters = engine.trainable else { throw ILAError("the engine has no trainable LoRA tensors") }
        guard !rows.isEmpty else { throw ILAError("no training rows") }
        self.engine = engine
        self.parameters = parameters
        self.rows = rows
        self.progress = progress
        let o = progress.options
        optimizer = AdamW(sizes: LoRAParameters.sizes(parameters.layers), beta1: o.beta1, beta2: o.beta2, eps: o.eps,
                          weightDecay: o.weightDecay)
        plan = BatchPlan(rows: rows.count, rowsPerStep: o.rowsPerStep, order: o.order, seed: o.seed)
    }

    /// The rows that can contribute to a step: those with a response token within seq_len
    /// (a row whose response the truncation cut off entirely adds nothing to any step).
    public static func trainingRows(_ rows: [TokenizedRow]) -> [TokenizedRow] {
        rows.filter { r in r.labels.dropFirst().contains { $0 != -100 } }
    }

    public var gammaOnes: [Float] { [Float](repeating: 1, count: parameters.layers.count) }

    /// The learning rate of step k (0-based).
    public func learningRate(step k: Int) -> Double {
        options.lr * options.schedule.factor(step: k, total: options.steps, warmup: options.warmupSteps)
    }

    /// Runs one optimizer step and appends it to the log.
    @discardableResult
    public func step() throws -> TuneStep {
        let k = progress.step
        let stepRows = plan.indices(steps: k..<(k + 1))[0]
        let idx = Array(stepRows[share(stepRows.count)])
        parameters.zeroGradients()
        var nll = 0.0, lossTokens = 0, tokens = 0
        let ones = gammaOnes
        let b = options.batch
        for start in stride(from: 0, to: idx.count, by: b) {
            let micro = idx[start..<min(start + b, idx.count)].map { rows[$0] }
            let r = try engine.gradient(rows: micro, gamma: ones)
            nll += r.nllSum
            lossTokens += r.tokens
            // In a pipeline the last stage counts (every stage runs the same rows).
            if engine.reportsLoss { tokens += micro.map(\.ids.count).reduce(0, +) }
        }
        if let allreduce {
            var sums = [nll, Double(lossTokens), Double(tokens)]
            var flat = [Float](); flat.reserveCapacity(parameters.parameterCount)
            for g in parameters.gradients { flat.append(contentsOf: UnsafeBufferPointer(start: g.p, count: g.count)) }
            try allreduce(&sums, &flat)
            nll = sums[0]; lossTokens = Int(sums[1]); tokens = Int(sums[2])
            var at = 0
            for g in parameters.gradients {
                flat.withUnsafeBufferPointer { g.p.update(from: $0.baseAddress! + at, count: g.count) }
                at += g.count
            }
        }
        guard lossTokens > 0 else {
            throw ILAError("step \(k + 1): its \(stepRows.count) rows have no response tokens (rows \(stepRows.prefix(4).map { String($0 + 1) }.joined(separator: ", "))…)")
        }
        // d(mean NLL) = d(Σ NLL) / tokens
        let inv = Float(1 / Double(lossTokens))
        for g in parameters.gradients { for i in 0..<g.count { g[i] *= inv } }
        let norm = parameters.gradientSquaredNorm().squareRoot()
        guard norm.isFinite, nll.isFinite else {
            throw ILAError("step \(k + 1): loss or gradient became non-finite (loss \(nll / Double(lossTokens)))")
        }
        if options.maxGradNorm > 0 {
            // torch.nn.utils.clip_grad_norm_
            let coef = Float(options.maxGradNorm / (norm + 1e-6))
            if coef < 1 { for g in parameters.gradients { for i in 0..<g.count { g[i] *= coef } } }
        }
        let lr = learningRate(step: k)
        optimizer.update(parameters, lr: lr)
        let entry = TuneStep(step: k + 1, loss: nll / Double(lossTokens), lr: lr, tokens: tokens, lossTokens: lossTokens,
                             gradNorm: norm)
        progress.log.append(entry)
        progress.step = k + 1
        return entry
    }

    /// Mean response-token NLL of `rows` under the current adapter.
    public func evaluate(_ rows: [TokenizedRow]) throws -> EngineResult {
        var total = EngineResult(nllSum: 0, tokens: 0, rows: 0, dNllSumDGamma: [])
        let ones = gammaOnes
        let mine = Array(rows[share(rows.count)])
        for start in stride(from: 0, to: mine.count, by: 16) {
            let r = try engine.evaluate(rows: Array(mine[start..<min(start + 16, mine.count)]), gamma: ones)
            total.nllSum += r.nllSum
            total.tokens += r.tokens
            total.rows += r.rows
        }
        if let allreduce {
            var sums = [total.nllSum, Double(total.tokens), Double(total.rows)]
            var none = [Float]()
            try allreduce(&sums, &none)
            total = EngineResult(nllSum: sums[0], tokens: Int(sums[1]), rows: Int(sums[2]), dNllSumDGamma: [])
        }
        return total
    }

    // MARK: resumable state

    /// The resumable state's tables by name: the parameters, then both moments (table order).
    var stateTables: [(tag: String, buffers: [FloatBuffer])] {
        [("param", parameters.values), ("exp_avg", optimizer.m), ("exp_avg_sq", optimizer.v)]
    }

    /// Every float of the resumable state, in `stateTables` order.
    public var stateBuffers: [FloatBuffer] { stateTables.flatMap(\.buffers) }

    /// Tensors of the state file: the parameters and both moments.
    func stateTensors() -> [SafetensorsOutput.Tensor] {
        var out: [SafetensorsOutput.Tensor] = []
        for (tag, table) in stateTables {
            for (t, buf) in table.enumerated() {
                out.append(.init(name: "\(tag).\(parameters.tensorName(t))", shape: parameters.shape(t)) { dst in
                    dst.baseAddress!.update(from: buf.p, count: buf.count)
                })
            }
        }
        return out
    }

    public func saveState(path: String) throws {
        var p = progress
        p.format = "ila-tune-state"
        let meta = String(decoding: try JSONEncoder().encode(p), as: UTF8.self)
        try SafetensorsOutput.write(stateTensors(), metadata: ["ila_tune_state": meta, "adam_step": String(optimizer.step)], to: path)
    }

    /// Reads a saved state into this tuner (parameters, moments, position, log); the options,
    /// inputs and layers must be those of this run.
    public func loadState(path: String) throws {
        guard FileManager.default.fileExists(atPath: path) else { throw ILAError(file: path, "no saved state to resume from") }
        let file = try SafetensorsFile(path: path)
        guard let text = file.metadata["ila_tune_state"], let step = file.metadata["adam_step"].flatMap(Int.init),
              let saved = try? JSONDecoder().decode(TuneProgress.self, from: Data(text.utf8)),
              saved.format == "ila-tune-state", saved.version == 1 else {
            throw ILAError(file: path, "not an ila-tune state of version 1")
        }
        guard saved.fingerprint == progress.fingerprint, saved.layers == progress.layers else {
            throw ILAError(file: path, "was saved for other inputs (base, data or layers differ)")
        }
        guard saved.options == progress.options else {
            throw ILAError(file: path, "was saved with other training options; give the same ones to --resume")
        }
        guard step == saved.step, saved.log.count == saved.step, saved.step <= saved.options.steps else {
            throw ILAError(file: path, "state is inconsistent (step counts differ)")
        }
        for (tag, table) in stateTables {
            for (t, buf) in table.enumerated() {
                let name = "\(tag).\(parameters.tensorName(t))"
                guard let info = file.info(name), info.shape == parameters.shape(t) else {
                    throw ILAError(file: path, "tensor \(name) is missing or has the wrong shape")
                }
                let v = try file.floats(info)
                guard v.allSatisfy(\.isFinite) else { throw ILAError(file: path, "tensor \(name) holds NaN or Inf") }
                v.withUnsafeBufferPointer { buf.p.update(from: $0.baseAddress!, count: buf.count) }
            }
        }
        optimizer.step = step
        progress = saved
    }
}
