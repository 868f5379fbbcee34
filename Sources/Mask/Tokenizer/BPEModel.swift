import Foundation
import ILADiff

/// The `model` of a tokenizer.json of type BPE: vocabulary, ranked merges and the
/// per-word merge loop of Hugging Face `tokenizers` (`Word::merge_all`).
struct BPEModel {
    /// Token → id, keyed by exact scalars (see `ScalarKey`).
    let vocab: [ScalarKey: Int]
    /// Vocabulary entries that are one scalar, for the common path without affixes.
    let scalarIDs: [Unicode.Scalar: Int32]
    /// (left id, right id) packed into 64 bits → merge rank (the merge's index in the file).
    let mergeRanks: [UInt64: UInt32]
    /// Rank → id of the merged token.
    let mergeResult: [Int32]
    let unkID: Int32?
    let fuseUnk: Bool
    /// The id of `<0xNN>` for each byte NN (nil where the vocabulary lacks it).
    let byteIDs: [Int32?]
    let byteFallback: Bool
    let continuingSubwordPrefix: String?
    let endOfWordSuffix: String?
    let ignoreMerges: Bool

    @inline(__always)
    static func pairKey(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    /// Parses the `model` object; `file` names tokenizer.json in errors.
    init(json: JSONValue, file: String) throws {
        let type = json["type"]?.string ?? (json["merges"] != nil ? "BPE" : "unknown")
        guard type == "BPE" else {
            throw ILAError(file: file, "model type \(type) is not supported (only BPE; WordPiece, "
                           + "WordLevel and Unigram tokenizers cannot be used)")
        }
        guard let rawVocab = json["vocab"]?.pairs else {
            throw ILAError(file: file, "model.vocab is not an object of token → id")
        }
        var vocab: [ScalarKey: Int] = [:]
        vocab.reserveCapacity(rawVocab.count)
        var scalarIDs: [Unicode.Scalar: Int32] = [:]
        for member in rawVocab {
            let (token, value) = (member.key, member.value)
            guard let id = value.int, id >= 0, id < Int(Int32.max) else {
                throw ILAError(file: file, "model.vocab entry \(token.debugDescription) has no valid id")
            }
            let key = ScalarKey(token)
            vocab[key] = id
            if key.scalars.count == 1 { scalarIDs[key.scalars[0]] = Int32(id) }
        }
        self.vocab = vocab
        self.scalarIDs = scalarIDs

        // Merges: ["a", "b"] pairs, or "a b" strings (lines starting "#version" skipped, as
        // `convert_merges_to_hashmap` does; each must split at spaces into exactly two parts).
        guard let rawMerges = json["merges"]?.array else {
            throw ILAError(file: file, "model.merges is not a list")
        }
        let f = Fields(json: json, owner: "model", file: file)
        let prefix = try f.string("continuing_subword_prefix")
        let prefixBytes = prefix?.utf8.count ?? 0
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(rawMerges.count)
        let legacy = rawMerges.first?.string != nil
        for (k, m) in rawMerges.enumerated() {
            if legacy {
                guard let s = m.string else {
                    throw ILAError(file: file, "merge \(k + 1) is not a string like the merges before it")
                }
                if s.hasPrefix("#version") { continue }
                // Split at every U+0020 by scalars: Character-level search could see a space
                // fused with a following combining mark as no space at all.
                let parts = Array(s.unicodeScalars).split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else {
                    throw ILAError(file: file, "merge \(pairs.count + 1) \(s.debugDescription) is not two tokens separated by a space")
                }
                pairs.append((ScalarKey(Array(parts[0])).string, ScalarKey(Array(parts[1])).string))
            } else {
                guard let pair = m.array, pair.count == 2, let x = pair[0].string, let y = pair[1].string else {
                    throw ILAError(file: file, "merge \(k + 1) is not a pair [\"a\", \"b\"] like the merges before it")
                }
                pairs.append((x, y))
            }
        }
        var ranks: [UInt64: UInt32] = [:]
        ranks.reserveCapacity(pairs.count)
        var result: [Int32] = []
        result.reserveCapacity(pairs.count)
        for (rank, (a, b)) in pairs.enumerated() {
            guard let ia = vocab[ScalarKey(a)] else {
                throw ILAError(file: file, "merge \(rank + 1) refers to token \(a.debugDescription), which is not in the vocabulary")
            }
            guard let ib = vocab[ScalarKey(b)] else {
                throw ILAError(file: file, "merge \(rank + 1) refers to token \(b.debugDescription), which is not in the vocabulary")
            }
            // The merged token is a + b without its first prefix-length bytes (`BpeBuilder::build`
            // drops them whether or not b starts with the prefix).
            let tailBytes = Array(b.utf8)
            guard tailBytes.count >= prefixBytes,
                  let tail = String(validating: tailBytes[prefixBytes...], as: UTF8.self) else {
                throw ILAError(file: file, "merge \(rank + 1): token \(b.debugDescription) does not begin with the "
                               + "continuing_subword_prefix \((prefix ?? "").debugDescription)")
            }
            let merged = ScalarKey(Array(a.unicodeScalars) + Array(tail.unicodeScalars))
            guard let im = vocab[merged] else {
                throw ILAError(file: file, "merge \(rank + 1) produces token \(merged.string.debugDescription), which is not in the vocabulary")
            }
            // A repeated pair keeps its last rank, as a Rust HashMap built from the list does.
            ranks[Self.pairKey(Int32(ia), Int32(ib))] = UInt32(rank)
            result.append(Int32(im))
        }
        self.mergeRanks = ranks
        self.mergeResult = result

        if let unk = try f.string("unk_token") {
            guard let id = vocab[ScalarKey(unk)] else {
                throw ILAError(file: file, "unk_token \(unk.debugDescription) is not in the vocabulary")
            }
            unkID = Int32(id)
        } else {
            unkID = nil
        }
        fuseUnk = try f.bool("fuse_unk", default: false)
        byteFallback = try f.bool("byte_fallback", default: false)
        byteIDs = (0..<256).map { b in vocab[ScalarKey(String(format: "<0x%02X>", b))].map { Int32($0) } }
        // An empty prefix or suffix changes nothing (GPT-2's tokenizer.json has both as "").
        continuingSubwordPrefix = prefix?.isEmpty == false ? prefix : nil
        let suffix = try f.string("end_of_word_suffix")
        endOfWordSuffix = suffix?.isEmpty == false ? suffix : nil
        ignoreMerges = try f.bool("ignore_merges", default: false)
        // Dropout makes encoding random; 0 (or null) is the deterministic default.
        if let d = json["dropout"], !d.isNull {
            guard case .number(let p) = d else { throw ILAError(file: file, "model.dropout is not a number") }
            guard p == 0 else {
                throw ILAError(file: file, "model.dropout \(p) is not supported (BPE dropout makes ids random; it must be null)")
            }
        }
    }

    // MARK: - encoding one word

    /// The ids of one pre-tokenized word (`BPE::tokenize` without dropout).
    func encodeWord(_ word: ScalarKey) -> [Int] {
        if ignoreMerges, let id = vocab[word] { return [id] }
        var symbols = initialSymbols(word.scalars)
        if symbols.count > 1 { mergeAll(&symbols) }
        return symbols.map(Int.init)
    }

    /// One symbol per scalar (`BPE::merge_word` before merging): vocabulary id, else the
    /// `<0xNN>` byte tokens, else the (optionally fused) unknown token, else nothing.
    private func initialSymbols(_ word: [Unicode.Scalar]) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(word.count)
        var pendingUnk = false  // an unknown token not yet emitted (so fuse_unk can extend it)
        let plain = continuingSubwordPrefix == nil && endOfWordSuffix == nil
        for (i, x) in word.enumerated() {
            var id: Int32?
            var text: [Unicode.Scalar]?
            if plain {
                id = scalarIDs[x]
            } else {
                var s = [x]
                if i > 0, let p = continuingSubwordPrefix { s = Array(p.unicodeScalars) + s }
                if i == word.count - 1, let suf = endOfWordSuffix { s += Array(suf.unicodeScalars) }
                id = vocab[ScalarKey(s)].map { Int32($0) }
                text = s
            }
            if let id {
                if pendingUnk, let u = unkID { out.append(u); pendingUnk = false }
                out.append(id)
                continue
            }
            if byteFallback {
                let bytes = Array(ScalarKey(text ?? [x]).string.utf8)
                if bytes.allSatisfy({ byteIDs[Int($0)] != nil }) {
                    // As in `tokenizers`, a pending unknown token is not flushed here.
                    for b in bytes { if let t = byteIDs[Int(b)] { out.append(t) } }
                    continue
                }
            }
            if let u = unkID {
                if pendingUnk && !fuseUnk { out.append(u) }
                pendingUnk = true
            }
        }
        if pendingUnk, let u = unkID { out.append(u) }
        return out
    }

    /// Applies merges lowest rank first (leftmost on ties) with a binary heap, skipping stale
    /// entries: O(n log n) in the word length, and the same order as `Word::merge_all`.
    private func mergeAll(_ c: inout [Int32]) {
        let n = c.count
        var prev = [Int32](repeating: -1, count: n)
        var next = [Int32](repeating: -1, count: n)
        var alive = [Bool](repeating: true, count: n)
        for i in 0..<n {
            prev[i] = Int32(i - 1)
            next[i] = i + 1 < n ? Int32(i + 1) : -1
        }
        // Heap entries: rank << 32 | position, smallest first.
        var heap = MinHeap()
        for i in 0..<(n - 1) {
            if let r = mergeRanks[Self.pairKey(c[i], c[i + 1])] { heap.push(UInt64(r) << 32 | UInt64(i)) }
        }
        while let top = heap.pop() {
            let rank = Int(top >> 32)
            let pos = Int(top & 0xFFFF_FFFF)
            guard alive[pos], next[pos] >= 0 else { continue }
            let right = Int(next[pos])
            let newID = mergeResult[rank]
            // A stale entry: the pair at `pos` changed since it was queued.
            guard let cur = mergeRanks[Self.pairKey(c[pos], c[right])], mergeResult[Int(cur)] == newID else { continue }
            c[pos] = newID
            alive[right] = false
            let after = next[right]
            next[pos] = after
            if after >= 0 { prev[Int(after)] = Int32(pos) }
            let before = prev[pos]
            if before >= 0, let r = mergeRanks[Self.pairKey(c[Int(before)], newID)] {
                heap.push(UInt64(r) << 32 | UInt64(before))
            }
            if after >= 0, let r = mergeRanks[Self.pairKey(newID, c[Int(after)])] {
                heap.push(UInt64(r) << 32 | UInt64(pos))
            }
        }
        var out: [Int32] = []
        out.reserveCapacity(n)
        for i in 0..<n where alive[i] { out.append(c[i]) }
        c = out
    }
}

/// A binary min-heap of 64-bit keys.
struct MinHeap {
    private var a: [UInt64] = []

    mutating func push(_ x: UInt64) {
        a.append(x)
        var i = a.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if a[p] <= x { break }
            a[i] = a[p]
            i = p
        }
        a[i] = x
    }

    mutating func pop() -> UInt64? {
        guard let last = a.popLast() else { return nil }
        guard !a.isEmpty else { return last }
        let top = a[0]
        var i = 0
        let n = a.count
        while true {
            let l = 2 * i + 1
            if l >= n { break }
            var m = l
            if l + 1 < n && a[l + 1] < a[l] { m = l + 1 }
            if a[m] >= last { break }
            a[i] = a[m]
            i = m
        }
        a[i] = last
        return top
    }
}
