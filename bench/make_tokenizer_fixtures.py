#!/usr/bin/env python3
"""Small tokenizer.json files with each model family's layout, and the ids HF gives for them.

For every family variant below, trains a small BPE with Hugging Face `tokenizers` on the test
bed text, using that family's normalizer, pre-tokenizer, model options and added tokens (as
their tokenizer.json files ship them, or as transformers 5 builds them), and writes

  fixtures/tokenizers/<variant>/tokenizer.json    the trained tokenizer (vocab ~300-700)
  fixtures/tokenizers/<variant>/expected.json     {"ids": [...]}: tok.encode(s, add_special_tokens=False).ids
  fixtures/tokenizers/strings.json                the strings, shared by all variants: test-bed
                                                  rows (alpaca prompt and response, separately)
                                                  and adversarial strings

Tests/MaskTests/TokenizerFamilyTests.swift asserts the Swift tokenizer gives exactly these ids.
bench/tokenizer_check.py imports the variant definitions to train larger ones and compare on
the whole test bed.

Usage: python3 bench/make_tokenizer_fixtures.py [--data DIR] [--out DIR]
"""

import argparse
import glob
import json
import os
import random
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The split regexes real tokenizer.json files ship.
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
         r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN35 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
          r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
          r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
          r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
O200K = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
         r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
         r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CLIP = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def special(*names, **flags):
    return [AddedToken(n, special=True, normalized=False, **flags) for n in names]


def plain(name, **flags):
    """A non-special added token."""
    return AddedToken(name, special=False, **flags)


# Each variant: how its tokenizer.json is laid out.
#   kind "byte": byte-level BPE (vocabulary = the 256 byte scalars + merges)
#   kind "sp": SentencePiece-converted BPE (specials, <0x00>…<0xFF>, pieces; byte_fallback)
#   kind "word": BPE over other pre-tokenizers with an unknown token
VARIANTS = [
    dict(name="gpt2", family="GPT-2", kind="byte",
         pre=lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
         model=dict(continuing_subword_prefix="", end_of_word_suffix=""), legacy_merges=True,
         added=lambda: special("<|endoftext|>")),
    dict(name="llama3", family="Llama 3.x", kind="byte", ignore_merges=True,
         pre=lambda: pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3), "isolated", invert=False),
                                              pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                                       use_regex=False)]),
         added=lambda: special("<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                               "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"),
         bos="<|begin_of_text|>", eos="<|eot_id|>"),
    dict(name="qwen2", family="Qwen2 / Qwen2.5 / Qwen3", kind="byte",
         normalizer=lambda: normalizers.NFC(),
         pre=lambda: pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2), "isolated", invert=False),
                                              pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                                                       use_regex=False)]),
         added=lambda: special("<|endoftext|>", "<|im_start|>", "<|im_end|>")
         + [plain("<tool_call>", normalized=False), plain("</tool_call>", normalized=False)],
         eos="<|im_end|>"),
    dict(name="qwen35", family="Qwen3.5 (marks kept in words)", kind="byte",
         normalizer=lambda: normalizers.NFC(),
         pre=lambda: pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN35), "isolated", invert=False),
                                              pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                                                       use_regex=False)]),
         added=lambda: special("<|endoftext|>", "<|im_start|>", "<|im_end|>")),
    dict(name="tekken", family="Mistral Tekken (Nemo, v3-tekken)", kind="byte",
         pre=lambda: pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(TEKKEN), "isolated", invert=False),
                                              pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                                       use_regex=False)]),
         added=lambda: special("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]",
                               "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[TOOL_CALLS]"),
         bos="<s>", eos="</s>"),
    dict(name="o200k", family="GPT-4o-style split (Llama 4, Phi-4-mini and others)", kind="byte",
         pre=lambda: pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(O200K), "isolated", invert=False),
                                              pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                                       use_regex=False)]),
         added=lambda: special("<|begin_of_text|>", "<|eot|>", "<|header_start|>", "<|header_end|>")),
    dict(name="llama2", family="Llama 2 (legacy Prepend + Replace)", kind="sp", legacy_merges=True,
         normalizer=lambda: normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]),
         pre=None, sp_specials=["<unk>", "<s>", "</s>"], bos="<s>", eos="</s>"),
    dict(name="llama2-metaspace", family="Llama 2 / Mistral as transformers 5 converts them (Metaspace first)",
         kind="sp",
         normalizer=None,
         pre=lambda: pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False),
         sp_specials=["<unk>", "<s>", "</s>"], bos="<s>", eos="</s>"),
    dict(name="mistral", family="Mistral 7B v0.1-v0.3 (SentencePiece BPE, control tokens)", kind="sp",
         normalizer=lambda: normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]),
         pre=None, sp_specials=["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]",
                                "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"],
         bos="<s>", eos="</s>"),
    dict(name="phi3", family="Phi-3 / Phi-3.5", kind="sp", legacy_merges=True,
         normalizer=lambda: normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]),
         pre=None, sp_specials=["<unk>", "<s>", "</s>"],
         added=lambda: special("<|endoftext|>") + special("<|assistant|>", "<|placeholder1|>", "<|system|>",
                                                          "<|end|>", "<|user|>", rstrip=True),
         bos="<s>", eos="<|endoftext|>"),
    dict(name="gemma", family="Gemma 1 / 2 / 3 (Replace normalizer, no pre-tokenizer)", kind="sp",
         normalizer=lambda: normalizers.Replace(" ", "▁"), pre=None,
         sp_specials=["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[@BOS@]", "<unused0>", "<start_of_turn>",
                      "<end_of_turn>"],
         added=lambda: [plain(t, normalized=False) for t in ["<table>", "<tr>", "<td>", "</td>", "</tr>", "</table>"]],
         bos="<bos>", eos="<eos>"),
    dict(name="gemma-split", family="Gemma as transformers 5 builds it (Replace + Split ' ' merged_with_previous)",
         kind="sp",
         normalizer=lambda: normalizers.Replace(" ", "▁"),
         pre=lambda: pre_tokenizers.Split(" ", "merged_with_previous", invert=False),
         sp_specials=["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"],
         bos="<bos>", eos="<eos>"),
    dict(name="clip", family="CLIP-style: NFC, regex Replace, Lowercase; Split removed+invert; </w> suffix",
         kind="byte", byte_level_regex=True,
         normalizer=lambda: normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                                  normalizers.Lowercase()]),
         pre=lambda: pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(CLIP), "removed", invert=True),
                                              pre_tokenizers.ByteLevel(add_prefix_space=False)]),
         model=dict(continuing_subword_prefix="", end_of_word_suffix="</w>"),
         added=lambda: special("<|startoftext|>", "<|endoftext|>")),
    dict(name="wordpiece-like", family="NFD + StripAccents + Lowercase + Strip; Whitespace, Punctuation, Digits; ## prefix",
         kind="word", unk="[UNK]",
         normalizer=lambda: normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase(),
                                                  normalizers.Replace(Regex(" {2,}"), " "), normalizers.Strip()]),
         pre=lambda: pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(),
                                              pre_tokenizers.Digits(individual_digits=True)]),
         model=dict(continuing_subword_prefix="##"),
         added=lambda: special("[UNK]", "[CLS]", "[SEP]")
         + [AddedToken("[MASK]", special=True, normalized=False, lstrip=True),
            plain("<rs>", normalized=False, rstrip=True), plain("word", normalized=True, single_word=True),
            plain("Ab", normalized=True)]),
    dict(name="nfkc-metaspace", family="NFKC + Nmt + Strip(left); Digits, WhitespaceSplit, Metaspace always+split; fused <unk>",
         kind="word", unk="<unk>", fuse_unk=True,
         normalizer=lambda: normalizers.Sequence([normalizers.NFKC(), normalizers.Nmt(), normalizers.Strip(True, False)]),
         pre=lambda: pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=False),
                                              pre_tokenizers.Punctuation("merged_with_previous"),
                                              pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                                       split=True)]),
         added=lambda: special("<unk>", "<s>")),
    dict(name="behaviours", family="Split behaviours, String and Regex patterns, invert; Strip + Metaspace first",
         kind="word", unk="<unk>",
         normalizer=lambda: normalizers.Sequence([normalizers.NFKD(), normalizers.Strip()]),
         pre=lambda: pre_tokenizers.Sequence([
             pre_tokenizers.Split("-", "merged_with_next", invert=False),
             pre_tokenizers.Split(Regex(r"\d+"), "contiguous", invert=False),
             pre_tokenizers.Split(Regex(r"[.,;:!?]"), "merged_with_previous", invert=False),
             pre_tokenizers.Split(Regex(r"\s+"), "removed", invert=False),
             pre_tokenizers.Split(Regex(r"(?:ab)+|x{2,3}?"), "isolated", invert=True),
             pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)]),
         added=lambda: special("<unk>", "<s>")),
]


def alpaca_prompt(row):
    """DESIGN.md section 5's alpaca prompt."""
    inp = row.get("input") or ""
    if inp:
        return f"### Instruction:\n{row['instruction']}\n\n### Input:\n{inp}\n\n### Response:\n"
    return f"### Instruction:\n{row['instruction']}\n\n### Response:\n"


def read_rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


ALL_SPECIALS = ["<|endoftext|>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|im_start|>", "<|im_end|>", "<tool_call>", "<s>", "</s>", "<unk>", "[INST]", "[/INST]",
                "[TOOL_CALLS]", "<|assistant|>", "<|user|>", "<|end|>", "<start_of_turn>", "<end_of_turn>",
                "<bos>", "<eos>", "<table>", "[MASK]", "<rs>", "<|startoftext|>", "<|eot|>"]

# Hand-written adversarial strings (kept in the committed strings.json).
ADVERSARIAL = [
    "", " ", "  ", "\t", "\n", "\r\n", " \n ", "a", "Hello world", "Hello  world", "  leading spaces",
    "trailing spaces  ", "tabs\tand\nnewlines\r\nmixed\r", "a" + " " * 7 + "b", "a\n\n\nb", "line\n  indented\n\tx",
    " \t \n \u00a0 \u3000 x \u2003y", "sep\u2028line\u2029para\u0085nel", "zero\u200bwidth\u200cjoin\u200d\ufeffbom",
    "\x00\x01\x1b[0m\x7f", "I'm can't won't it's we're they've you'll he'd", "I'M IT'S WE'RE THEY'VE YOU'LL HE'D",
    "'tis ''quoted'' 's's 'x", "don\u2019t curly \u2018quotes\u2019 \u201cdouble\u201d", "it'\u017f 'K \u212a'd",
    "1234567890", "3.14159 2.71828", "12,345,678.90", "x1y22z333w4444", "\u0663\u0664\u0665 \u0967\u0968\u0969 \U0001d7d8\U0001d7d9",
    "1st 2nd 3rd 4th", "0x1F 0b1010 1e-9", "call 555-0123 ext. 42", "naïve café résumé coöperate", "e\u0301 a\u0308 n\u0303 o\u0302\u0323",
    "\u212b \u00c5 A\u030a", "\ufb01 \ufb02 \ufb00 \ufb06 \ufb05", "\u2460\u2461\u2462 \u216b \u00bd \u00b2 \u00b3 \u2075",
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \uff11\uff12\uff13 \uff01", "\u01c5 \u01c6 \u01c4 \u01f2",
    "\u0130stanbul \u0131 I i", "\u00df \u1e9e SS ss", "\u03a3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2 \u03a3\u0391\u03a3 \u03c2",
    "\u0416\u0438\u0437\u043d\u044c \u043f\u0440\u0435\u043a\u0440\u0430\u0441\u043d\u0430", "\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5\uff0c\u6a19\u9ede\u3002",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8 \u1100\u1161\u11a8",
    "emoji \U0001F642\U0001F44D\U0001F3FD\U0001F468\u200d\U0001F469\u200d\U0001F467\U0001F1EB\U0001F1F7",
    "\U0001F600x\U0001F600 \u2764\ufe0f", "math \U0001d518\U0001d52b\U0001d526\U0001d520 \u2211\u222b\u221a",
    "\u05e2\u05d1\u05e8\u05d9\u05ea \u0627\u0644\u0639\u0631\u0628\u064a\u0629", "\u0939\u093f\u0928\u094d\u0926\u0940 \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
    "\ue000\U0010ffff\U000f0000", "\ufdfa \ufdfd \u337f \u32ff", "new in Unicode 17: \u088f \u20c1 \U00010940 \u0295",
    "new in Unicode 10-16: \u0860 \u08be \u09fe \U00011a00 \U0001e900 \u0c5d", "\u0915\u093c \u0958 \u0929",
    "<table><tr><td>x</td></tr></table>", "def f(x):\n    return x**2  # square\n", "C:\\path\\to\\file.txt",
    "https://example.com/a?b=c&d=e#frag", '{"k": [1, 2.5, null], "s": "v"}', "a/b//c///d", "!!!???...---___",
    "$100 + 50% = \u20ac\u20ac\u20ac \u00a3 \u00a5", "word words wordy sword Word WORD", "ab abab xx xxx xxxx-y ab-cd",
    "supercalifragilisticexpialidocious" * 3, "x" * 300, "ab" * 100, " " * 50, "\n" * 20, "-" * 40,
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>",
    "<s>[INST] What is 2+2? [/INST] 4</s>", "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>",
    "<|user|>\nHi<|end|>\n<|assistant|>  Hello<|end|>", "<|endoftext|><|endoftext|>", " <s> x </s> ",
    "<tool_call>{\"a\": 1}</tool_call>", "[MASK] a  [MASK]b <rs>   c", "<|begin_of_text|", "<s<s>>", "<|im_end|x",
]


def fuzz_strings(rng, words, n):
    pools = [
        list("abcXYZ019 '\t\n\r.,!?-_()[]{}\"`~@#$%^&*+=/\\|<>;:"),
        ["'s", "'S", "'t", "'re", "'RE", "'ve", "'m", "'ll", "'LL", "'d", "'\u017f", "'x"],
        [" ", "  ", "   ", "\n", "\n\n", " \n", "\r\n", "\t", " \t ", "\u00a0", "\u2028", "\x85", "\u3000", "\u200b"],
        ["\u00e9", "\u00df", "\u0416", "\u4e2d\u6587", "\u65e5\u672c", "\ud55c", "\u00f1", "\u01c5", "\u0301", "e\u0301",
         "\u00b2", "\u00bd", "\u216b", "\u0663", "\U0001d7d8", "\U0001F642", "\U0001F44D\U0001F3FD", "\ufb01", "\uff21",
         "\u0295", "\u088f", "\u1100\u1161", "\u0915\u093c", "\u212a", "\u0130"],
        ["1234567", "3.14", "2024-01-01", "0x1F", "12,345"],
        ALL_SPECIALS,
    ]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 16)):
            if rng.random() < 0.35:
                parts.append((" " if rng.random() < 0.5 else "") + rng.choice(words))
            else:
                parts.append(rng.choice(rng.choice(pools)))
        out.append("".join(parts))
    return out


def training_texts(data_dir, rng, rows_per_file=1500):
    texts = []
    for path in sorted(glob.glob(os.path.join(data_dir, "*.jsonl"))):
        rows = read_rows(path)
        rng.shuffle(rows)
        for row in rows[:rows_per_file]:
            texts.append(alpaca_prompt(row))
            texts.append(row["output"])
    return texts + ADVERSARIAL * 3


def _apply_added(tok, spec):
    if "added" in spec:
        tok.add_tokens(spec["added"]())


def build(spec, texts, vocab_size):
    """The tokenizer.json (as a dict) of one variant, trained on `texts`."""
    kind = spec["kind"]
    if kind == "byte":
        kw = dict(spec.get("model", {}))
        tok = Tokenizer(models.BPE(**kw))
        if spec.get("normalizer"):
            tok.normalizer = spec["normalizer"]()
        tok.pre_tokenizer = spec["pre"]()
        tok.decoder = decoders.ByteLevel()
        targs = dict(vocab_size=256 + vocab_size, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        for k in ("continuing_subword_prefix", "end_of_word_suffix"):
            if kw.get(k):
                targs[k] = kw[k]
        tok.train_from_iterator(texts, trainers.BpeTrainer(**targs))
        _apply_added(tok, spec)
        j = json.loads(tok.to_str())
        if spec.get("ignore_merges"):
            j["model"]["ignore_merges"] = True
    elif kind == "sp":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, limit_alphabet=90))
        trained = sorted(json.loads(tok.to_str())["model"]["vocab"].items(), key=lambda kv: kv[1])
        merges = json.loads(tok.to_str())["model"]["merges"]
        specials = spec["sp_specials"]
        vocab = {t: i for i, t in enumerate(specials)}
        for b in range(256):
            vocab[f"<0x{b:02X}>"] = len(vocab)
        for t, _ in trained:
            if t not in vocab:
                vocab[t] = len(vocab)
        unk = "<unk>"
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m) for m in merges], unk_token=unk, fuse_unk=True,
                                   byte_fallback=True))
        if spec.get("normalizer"):
            tok.normalizer = spec["normalizer"]()
        if spec.get("pre"):
            tok.pre_tokenizer = spec["pre"]()
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        tok.add_tokens(special(*specials))
        _apply_added(tok, spec)
        j = json.loads(tok.to_str())
    else:  # "word"
        kw = dict(spec.get("model", {}))
        tok = Tokenizer(models.BPE(unk_token=spec["unk"], fuse_unk=spec.get("fuse_unk", False), **kw))
        tok.normalizer = spec["normalizer"]()
        tok.pre_tokenizer = spec["pre"]()
        targs = dict(vocab_size=vocab_size, show_progress=False, limit_alphabet=80, special_tokens=[spec["unk"]])
        if kw.get("continuing_subword_prefix"):
            targs["continuing_subword_prefix"] = kw["continuing_subword_prefix"]
        tok.train_from_iterator(texts, trainers.BpeTrainer(**targs))
        _apply_added(tok, spec)
        j = json.loads(tok.to_str())
    if spec.get("legacy_merges"):
        j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    return j


def tokenizer_config(spec):
    """A tokenizer_config.json naming BOS/EOS, when the family has them."""
    cfg = {}
    if spec.get("bos"):
        cfg["bos_token"] = spec["bos"]
    if spec.get("eos"):
        cfg["eos_token"] = spec["eos"]
    return cfg


def write_variant(spec, j, outdir):
    d = os.path.join(outdir, spec["name"])
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, separators=(",", ":"))
    cfg = tokenizer_config(spec)
    if cfg:
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False, indent=1)
    return path


def fixture_strings(data_dir):
    """Test-bed rows (alpaca prompt and response separately), the adversarial list, fuzz."""
    strings = []
    for path in sorted(glob.glob(os.path.join(data_dir, "*.eval.jsonl"))):
        for row in read_rows(path)[:6]:
            strings.append(alpaca_prompt(row))
            strings.append(row["output"])
    strings += ADVERSARIAL
    rng = random.Random(7)
    words = sorted({w for s in strings[:36] for w in s.split() if w.isalpha()})
    strings += fuzz_strings(rng, words, 30)
    return strings


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "fixtures", "data"), help="JSONL test-bed rows to train on")
    ap.add_argument("--out", default=os.path.join(ROOT, "fixtures", "tokenizers"))
    args = ap.parse_args()
    rng = random.Random(0)
    texts = training_texts(args.data, rng, rows_per_file=400)
    strings = fixture_strings(args.data)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "strings.json"), "w", encoding="utf-8") as f:
        json.dump({"strings": strings}, f, ensure_ascii=False, indent=0)
    total = 0
    readme = ["# Tokenizer fixtures", "",
              "Written by `python3 bench/make_tokenizer_fixtures.py` (do not edit by hand): one small BPE per",
              "model-family layout, trained with Hugging Face `tokenizers` on fixtures/data, and the ids",
              "`tok.encode(s, add_special_tokens=False).ids` gives for every string of `strings.json`",
              "(test-bed rows, prompt and response separately, and adversarial strings).",
              "Tests/MaskTests/TokenizerFamilyTests.swift checks the Swift tokenizer against them.", "",
              "| folder | layout |", "|---|---|"]
    for spec in VARIANTS:
        size = {"byte": 300, "sp": 420, "word": 500}[spec["kind"]]
        j = build(spec, texts, size)
        path = write_variant(spec, j, args.out)
        tok = Tokenizer.from_file(path)
        ids = [e.ids for e in tok.encode_batch(strings, add_special_tokens=False)]
        with open(os.path.join(os.path.dirname(path), "expected.json"), "w", encoding="utf-8") as f:
            json.dump({"family": spec["family"], "ids": ids}, f, separators=(",", ":"))
        kb = (os.path.getsize(path) + os.path.getsize(os.path.join(os.path.dirname(path), "expected.json"))) / 1024
        total += kb
        print(f"{spec['name']:18s} vocab {tok.get_vocab_size():4d}  {kb:6.1f} KB  {spec['family']}")
        readme.append(f"| {spec['name']} | {spec['family']} |")
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(readme) + "\n")
    print(f"total {total:.0f} KB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
