import Foundation

/// One training/evaluation row: `ids` and `labels` are aligned, a label of -100 means no loss.
/// Position t predicts token t+1; the loss uses `labels[t+1]`.
public struct TokenizedRow: Equatable, Sendable {
    public let ids: [Int]
    public let labels: [Int]

    public init(ids: [Int], labels: [Int]) {
        self.ids = ids
        self.labels = labels
    }

    /// The number of tokens whose label counts towards the loss (the first label never does:
    /// no position predicts it).
    public var lossTokens: Int {
        labels.dropFirst().reduce(0) { $0 + ($1 == -100 ? 0 : 1) }
    }
}
