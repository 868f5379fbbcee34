import Foundation
import ILADiff

/// The BOS and EOS ids the data pipeline puts around each row (nil: the model has none).
public struct SpecialTokens: Equatable, Sendable {
    public var bos: Int?
    public var eos: Int?

    public init(bos: Int?, eos: Int?) {
        self.bos = bos
        self.eos = eos
    }

    /// Resolves BOS/EOS for the model in `directory` (the folder of tokenizer.json).
    ///
    /// `config.json`'s `bos_token_id` / `eos_token_id` (an int, or a list whose first entry
    /// counts) win; otherwise `tokenizer_config.json`'s `bos_token` / `eos_token` (a string or
    /// `{"content": ...}`) are looked up in `tokenizer`. `"add_bos_token": false` in
    /// tokenizer_config.json means the model is trained without BOS. Missing files are fine;
    /// malformed ones, ids outside the vocabulary and unknown token strings are errors.
    public static func resolve(directory: String, tokenizer: Tokenizer) throws -> SpecialTokens {
        let fm = FileManager.default
        let configPath = (directory as NSString).appendingPathComponent("config.json")
        let tokConfigPath = (directory as NSString).appendingPathComponent("tokenizer_config.json")
        let config = fm.fileExists(atPath: configPath) ? try readJSONObject(configPath) : [:]
        let tokConfig = fm.fileExists(atPath: tokConfigPath) ? try readJSONObject(tokConfigPath) : [:]

        func fromConfig(_ key: String) throws -> Int? {
            guard let v = config[key], !(v is NSNull) else { return nil }
            let id: Int?
            if let list = v as? [Any] {
                if list.isEmpty { return nil }
                id = jsonInt(list[0])
            } else {
                id = jsonInt(v)
            }
            guard let id else { throw ILAError(file: configPath, "\(key) is not an integer or a list of integers") }
            guard id >= 0 && id < tokenizer.vocabSize else {
                throw ILAError(file: configPath, "\(key) \(id) is outside the tokenizer's vocabulary (0..<\(tokenizer.vocabSize))")
            }
            return id
        }

        func fromTokenizerConfig(_ key: String) throws -> Int? {
            guard let v = tokConfig[key], !(v is NSNull) else { return nil }
            let content: String?
            if let s = v as? String {
                content = s
            } else if let o = v as? [String: Any] {
                content = o["content"] as? String
            } else {
                content = nil
            }
            guard let content else {
                throw ILAError(file: tokConfigPath, "\(key) is neither a string nor {\"content\": ...}")
            }
            guard let id = tokenizer.tokenID(for: content) else {
                throw ILAError(file: tokConfigPath, "\(key) \(content.debugDescription) is not in the tokenizer's vocabulary")
            }
            return id
        }

        var bos = try fromConfig("bos_token_id") ?? fromTokenizerConfig("bos_token")
        let eos = try fromConfig("eos_token_id") ?? fromTokenizerConfig("eos_token")
        if let add = tokConfig["add_bos_token"] as? Bool, !add { bos = nil }
        return SpecialTokens(bos: bos, eos: eos)
    }
}
