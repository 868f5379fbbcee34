import Foundation
import ILADiff

/// A Hugging Face `tokenizer.json` with a BPE model, encoding text to exactly the ids of
/// Python `tokenizers`' `tok.encode(text, add_special_tokens=False).ids`.
///
/// The pipeline, as in `tokenizers`:
/// 1. added tokens with `normalized: false` are cut out of the raw text;
/// 2. each remaining piece is normalized (Sequence, Prepend, Replace with a string or a regex,
///    NFC/NFD/NFKC/NFKD, Lowercase, Strip, StripAccents, Nmt, ByteLevel), then added tokens with
///    `normalized: true` are cut out of it;
/// 3. the pre-tokenizer (Sequence, ByteLevel, Metaspace, Split with a string or a regex,
///    Digits, Punctuation, Whitespace, WhitespaceSplit, CharDelimiterSplit, FixedLength) splits
///    pieces into words;
/// 4. the BPE model merges each word by merge rank (with `byte_fallback`, `unk_token`,
///    `fuse_unk`, `ignore_merges`, `continuing_subword_prefix`, `end_of_word_suffix`), memoised
///    per word.
///
/// Anything else in those places (another normalizer or pre-tokenizer type, a regex construct
/// `OnigRegex` does not implement, a Unigram/WordPiece/WordLevel model, BPE dropout) is refused
/// with one line naming it. The post-processor and the decoder are not used: no BOS/EOS is
/// added (callers add them, see `SpecialTokens`). tokenizer.json's `truncation` and `padding`
/// are not applied, as transformers' tokenizers do not apply them unless asked per call.
/// Encoding is thread-safe.
public final class Tokenizer: @unchecked Sendable {
    /// The tokenizer.json this was loaded from.
    public let path: String
    /// One more than the largest id of the vocabulary and added tokens: ids are `0..<vocabSize`.
    public let vocabSize: Int

    let model: BPEModel
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    /// Added tokens matched on raw text, and those matched on normalized text.
    let rawAdded: AddedTokenMatcher?
    let normalizedAdded: AddedTokenMatcher?
    let addedIDs: [ScalarKey: Int]
    /// id → spelling (a dictionary: ids need not be dense).
    let tokens: [Int: String]
    /// Whether pieces carry their alignments (a Metaspace with prepend_scheme "first" reads them).
    let tracksOrigins: Bool

    /// Word → ids memo, keyed by a 64-bit hash of the word's scalars so that probing compares
    /// integers rather than chasing array pointers; each entry keeps its word to rule out
    /// collisions. `cacheLock` guards it so encoding may run on several threads.
    private var cache: [UInt64: (word: [Unicode.Scalar], ids: [Int])] = [:]
    private let cacheLock = NSLock()
    /// Words longer than this are not memoised (they are rarely repeated).
    private static let cacheableWordLength = 64
    /// The memo is emptied when it reaches this many words, bounding its memory (≈ 30 MB at
    /// most; long fuzzing runs hit 512 MB with 500 000 words of 256 scalars).
    private static let cacheCapacity = 100_000

    /// Loads `path`: a tokenizer.json file, or a model directory holding one.
    public init(path: String) throws {
        var isDir: ObjCBool = false
        let file = FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
            ? (path as NSString).appendingPathComponent("tokenizer.json") : path
        self.path = file
        let name = file
        let json = try JSONValue.read(file)
        guard json.isObject else { throw ILAError(file: name, "top level is not a JSON object") }
        if let v = json["version"], !v.isNull, v.string != "1.0" {
            throw ILAError(file: name, "tokenizer.json version \(v.string ?? "?") is not supported (only 1.0)")
        }
        guard let modelJSON = json["model"], modelJSON.isObject else {
            throw ILAError(file: name, "has no \"model\" object")
        }
        model = try BPEModel(json: modelJSON, file: name)
        let normalizer = try Normalizer.parse(json["normalizer"], file: name)
        self.normalizer = normalizer
        let preTokenizer = try PreTokenizer.parse(json["pre_tokenizer"], file: name)
        self.preTokenizer = preTokenizer
        tracksOrigins = preTokenizer?.needsOrigins ?? false

        // Added tokens, numbered as `AddedVocabulary::add_tokens` numbers them on load: the
        // file's "id" is not used; a token already in the vocabulary keeps that id, a new one
        // takes the next id from the vocabulary's size on. A repeated content keeps its first
        // id and takes the later flags.
        var parsed: [AddedToken] = []
        if let list = json["added_tokens"]?.array {
            for (i, t) in list.enumerated() { parsed.append(try AddedToken.parse(t, index: i, file: name)) }
        } else if let v = json["added_tokens"], !v.isNull {
            throw ILAError(file: name, "added_tokens is not a list")
        }
        var addedIDs: [ScalarKey: Int] = [:]
        var byID: [Int: AddedToken] = [:]
        var order: [Int] = []
        var nextID = model.vocab.count
        for var t in parsed where !t.content.isEmpty {
            let key = ScalarKey(t.content)
            if let id = addedIDs[key], let old = byID[id], old.sameFlags(t) { continue }
            let id: Int
            if let known = addedIDs[key] ?? model.vocab[key] {
                id = known
            } else {
                id = nextID
                nextID += 1
            }
            t.id = id
            addedIDs[key] = id
            if byID[id] == nil { order.append(id) }
            byID[id] = t
        }
        let added = order.compactMap { byID[$0] }
        self.addedIDs = addedIDs

        rawAdded = AddedTokenMatcher(added.filter { !$0.normalized }) { Array($0.content.unicodeScalars) }
        // Normalized added tokens are searched for in their normalized spelling.
        normalizedAdded = AddedTokenMatcher(added.filter { $0.normalized }) { t in
            var p = TextPiece(scalars: Array(t.content.unicodeScalars), origins: nil, shift: 0)
            normalizer?.apply(&p)
            return p.scalars
        }

        let maxID = max(model.vocab.values.max() ?? -1, added.map(\.id).max() ?? -1)
        vocabSize = maxID + 1
        var tokens: [Int: String] = [:]
        tokens.reserveCapacity(model.vocab.count + added.count)
        for (t, id) in model.vocab { tokens[id] = t.string }
        for t in added { tokens[t.id] = t.content }
        self.tokens = tokens
    }

    /// The id of a token spelled exactly `token` (added tokens first, then the model vocabulary).
    public func tokenID(for token: String) -> Int? {
        let key = ScalarKey(token)
        return addedIDs[key] ?? model.vocab[key]
    }

    /// The vocabulary spelling of `id`, if it has one.
    public func token(for id: Int) -> String? {
        tokens[id]
    }

    /// The ids of `text`, without special tokens added around it.
    public func encode(_ text: String) -> [Int] {
        let scalars = Array(text.unicodeScalars)
        var out: [Int] = []
        out.reserveCapacity(scalars.count / 3 + 4)
        let pieces = rawAdded?.split(scalars) ?? [(0..<scalars.count, nil)]
        for (range, id) in pieces {
            if let id { out.append(id); continue }
            if range.isEmpty { continue }
            var piece = TextPiece(raw: scalars[range], offset: range.lowerBound, tracking: tracksOrigins)
            normalizer?.apply(&piece)
            if piece.isEmpty { continue }
            if let matcher = normalizedAdded {
                for (r, nid) in matcher.split(piece.scalars) {
                    if let nid { out.append(nid); continue }
                    if !r.isEmpty { encodePiece(piece.slice(r), into: &out) }
                }
            } else {
                // `tokenizers` slices the whole piece here too, which moves its original start to
                // that of its first scalar.
                encodePiece(tracksOrigins ? piece.slice(0..<piece.scalars.count) : piece, into: &out)
            }
        }
        return out
    }

    /// Pre-tokenizes one normalized piece and appends its words' ids.
    private func encodePiece(_ piece: TextPiece, into out: inout [Int]) {
        guard let preTokenizer else {
            out.append(contentsOf: encodeWord(piece.scalars))
            return
        }
        for w in preTokenizer.apply([piece]) where !w.scalars.isEmpty {
            out.append(contentsOf: encodeWord(w.scalars))
        }
    }

    /// The ids of one pre-tokenized word, memoised.
    private func encodeWord(_ word: [Unicode.Scalar]) -> [Int] {
        guard word.count <= Self.cacheableWordLength else { return model.encodeWord(ScalarKey(word)) }
        let h = Self.hash(word)
        cacheLock.lock()
        let hit = cache[h]
        cacheLock.unlock()
        if let hit, hit.word == word { return hit.ids }
        let ids = model.encodeWord(ScalarKey(word))
        cacheLock.lock()
        if cache.count >= Self.cacheCapacity { cache.removeAll(keepingCapacity: true) }
        cache[h] = (word, ids)  // on a (rare) collision the newer word takes the slot
        cacheLock.unlock()
        return ids
    }

    /// FNV-1a over the scalar values, mixed to 64 bits.
    @inline(__always)
    private static func hash(_ word: [Unicode.Scalar]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for x in word { h = (h ^ UInt64(x.value)) &* 0x0000_0100_0000_01B3 }
        return h ^ UInt64(word.count) << 56
    }
}
