#!/usr/bin/env python3
"""Checks ila's Swift tokenizer against Hugging Face `tokenizers` on the whole test bed.

Writes, with the Python `tokenizers` package, the ids that
`tok.encode(text, add_special_tokens=False).ids` gives for
  * the alpaca prompt and the response of EVERY row of <testbed>/data/*.jsonl, tokenized
    separately with the test bed tokenizer (<testbed>/small/base-A/tokenizer.json);
  * a few thousand adversarial strings (contractions, whitespace runs, CR/LF, Unicode
    letters/digits/spaces, emoji, added tokens mid-text, long words), with that tokenizer
    and with variant tokenizers trained here on the test bed text: the Llama 3 and Qwen2
    split patterns, Llama 2 / Mistral Metaspace with byte fallback, GPT-2 with a prefix space
    and "a b" merges, added tokens with lstrip/rstrip/single_word/normalized;
to a JSON file, then runs the Swift test `testMatchesHuggingFaceOnWholeTestbed` on it
(environment variable ILA_TOKENIZER_CHECK) and prints the mismatch counts.

Usage: python3 bench/tokenizer_check.py [--testbed DIR] [--out FILE] [--no-run] [--fuzz N]
Exit status: 0 when nothing mismatches.
"""

import argparse
import glob
import json
import os
import random
import re
import subprocess
import sys
import time

from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
         r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def alpaca_prompt(row):
    """DESIGN.md section 5's alpaca prompt."""
    inp = row.get("input") or ""
    if inp:
        return f"### Instruction:\n{row['instruction']}\n\n### Input:\n{inp}\n\n### Response:\n"
    return f"### Instruction:\n{row['instruction']}\n\n### Response:\n"


def read_rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def fuzz_texts(rng, words, specials, n):
    """Adversarial strings for the split patterns, normalizers and added-token matching."""
    pools = [
        list("abcXYZ019 '\t\n\r.,!?-_()[]{}\"`~@#$%^&*+=/\\|<>;:"),
        ["'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'ve", "'m", "'M", "'ll", "'LL", "'d", "'D", "'ſ", "'x"],
        [" ", "  ", "   ", "\n", "\n\n", " \n", "\r\n", "\t", " \t ", "\u00a0", "\u2028", "\u2029", "\x85",
         "\u3000", "\u1680", "\u200b", "\u180e", "\x0b", "\x0c", "\x1c", "\x00"],
        ["é", "ß", "Ж", "жизнь", "中文", "日本語", "한국어", "ñ", "Å", "ǅ", "ʰ", "\u0301", "e\u0301", "ͅ",
         "²", "½", "Ⅻ", "٣", "१२३", "𝟘", "🙂", "👍🏽", "👨‍👩‍👧", "🇫🇷", "\U0010ffff", "\ue000", "\ufeff", "ﬁ", "Ａ"],
        ["1234567", "3.14159", "2024-01-01", "0x1F", "12,345"],
    ]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 24)):
            r = rng.random()
            if r < 0.35:
                parts.append((" " if rng.random() < 0.5 else "") + rng.choice(words))
            elif r < 0.45 and specials:
                parts.append(rng.choice(specials))
            else:
                parts.append(rng.choice(rng.choice(pools)))
        out.append("".join(parts))
    return out


def edge_texts(specials):
    s = specials + [""]
    return [
        "", " ", "  ", "\n", "a", " a", "a ", "  a  ", "hello world", "Hello  world\n\n  next",
        "it's I'M we're they've you'll he'd don't 'tis", "IT'S WE'RE THEY'VE", "''s ' s 's's",
        "x" * 3000, "ab" * 1500, " " * 300, "\n" * 50, "a\r\n\r\nb", "tab\there",
        "123456789012", "x1y22z333w4444", "naïve café résumé", "ǅemal ʰx", "中文字符测试", "emoji 🙂🙂 ok",
        "👨‍👩‍👧 family", "mixed\u00a0space\u2028sep\x85nel", "zero\u200bwidth",
        f"{s[0]}start", f"end{s[0]}", f"mid {s[0]} dle", f"{s[0]}{s[0]}", f" {s[0]} ", f"a{s[0]}b{s[-2] if len(s) > 1 else ''}c",
        "long " + "supercalifragilisticexpialidocious" * 20,
    ]


# ---------------------------------------------------------------------------
# variant tokenizers trained on the test bed text


def corpus(testbed, rng, extra):
    texts = []
    for path in sorted(glob.glob(os.path.join(testbed, "data", "*.train.jsonl"))):
        rows = read_rows(path)
        rng.shuffle(rows)
        for row in rows[:1500]:
            texts.append(alpaca_prompt(row))
            texts.append(row["output"])
    return texts + extra


def train(pre, texts, vocab_size, specials, normalizer=None, **kw):
    tok = Tokenizer(models.BPE(**{k: v for k, v in kw.items() if k in ("byte_fallback", "unk_token", "fuse_unk",
                                                                        "continuing_subword_prefix",
                                                                        "end_of_word_suffix", "ignore_merges")}))
    tok.pre_tokenizer = pre
    if normalizer is not None:
        tok.normalizer = normalizer
    targs = dict(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    if kw.get("byte_alphabet"):
        targs["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
    if kw.get("limit_alphabet"):
        targs["limit_alphabet"] = kw["limit_alphabet"]
    for k in ("continuing_subword_prefix", "end_of_word_suffix"):
        if kw.get(k):
            targs[k] = kw[k]
    tok.train_from_iterator(texts, trainers.BpeTrainer(**targs))
    return tok


def save(tok_or_json, outdir, name):
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "tokenizer.json")
    if isinstance(tok_or_json, dict):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(tok_or_json, f, ensure_ascii=False)
    else:
        tok_or_json.save(path)
    return path


def sentencepiece_style(base_json):
    """Llama 2 layout: <unk> <s> </s>, then <0x00>…<0xFF>, then the trained pieces."""
    j = json.loads(json.dumps(base_json))
    trained = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t, _ in trained:
        if t not in vocab:
            vocab[t] = len(vocab)
    j["model"]["vocab"] = vocab
    j["model"].update(byte_fallback=True, fuse_unk=True, unk_token="<unk>")
    j["added_tokens"] = [dict(id=i, content=c, single_word=False, lstrip=False, rstrip=False, normalized=False,
                              special=True) for i, c in enumerate(["<unk>", "<s>", "</s>"])]
    j["decoder"] = None
    return j


def build_variants(testbed, outdir, rng, fuzz_words):
    extra = fuzz_texts(rng, fuzz_words, [], 3000)
    texts = corpus(testbed, rng, extra)
    variants = []

    # Llama 3: Split(pattern) + ByteLevel without regex, ignore_merges, header tokens.
    l3 = [AddedToken(t, special=True, normalized=False) for t in
          ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]]
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3), "isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = train(pre, texts, 3000, l3, byte_alphabet=True, ignore_merges=True)
    tok.add_tokens([AddedToken("[MASK]", lstrip=True, special=False, normalized=False),
                    AddedToken("<rs>", rstrip=True, normalized=False),
                    AddedToken("word", single_word=True, normalized=True)])
    variants.append(("llama3-pattern", save(tok, outdir, "llama3"),
                     [t.content for t in l3] + ["[MASK]", "<rs>", "word"]))

    # Qwen2: NFC + Split(single-digit pattern) + ByteLevel.
    q = [AddedToken(t, special=True, normalized=False) for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]]
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2), "isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = train(pre, texts, 2500, q, normalizer=normalizers.NFC(), byte_alphabet=True)
    variants.append(("qwen2-pattern", save(tok, outdir, "qwen2"), [t.content for t in q]))

    # GPT-2 with add_prefix_space and legacy "a b" merge strings.
    tok = train(pre_tokenizers.ByteLevel(add_prefix_space=True), texts, 1500, ["<|endoftext|>"], byte_alphabet=True)
    j = json.loads(tok.to_str())
    j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    variants.append(("gpt2-prefix-space", save(j, outdir, "gpt2"), ["<|endoftext|>"]))

    # SentencePiece-converted BPE: byte fallback, fused <unk>, a small alphabet so that
    # rarer characters fall back to bytes.
    tok = train(pre_tokenizers.Metaspace(), texts, 1200, [], limit_alphabet=120)
    base = json.loads(tok.to_str())
    sp = sentencepiece_style(base)
    llama2 = json.loads(json.dumps(sp))
    llama2["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    llama2["pre_tokenizer"] = None
    variants.append(("llama2-normalizer", save(llama2, outdir, "llama2"), ["<s>", "</s>", "<unk>"]))
    mistral = json.loads(json.dumps(sp))
    mistral["normalizer"] = None
    mistral["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    variants.append(("mistral-metaspace-first", save(mistral, outdir, "mistral"), ["<s>", "</s>"]))
    always = json.loads(json.dumps(sp))
    always["normalizer"] = None
    always["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    always["model"]["fuse_unk"] = False
    always["added_tokens"].append(dict(id=len(always["model"]["vocab"]), content="<tool call>", single_word=False,
                                       lstrip=False, rstrip=False, normalized=True, special=False))
    variants.append(("metaspace-always-split", save(always, outdir, "metaspace"), ["<s>", "<tool call>"]))
    return variants


def encode_all(path, texts):
    tok = Tokenizer.from_file(path)
    return [tok.encode(t, add_special_tokens=False).ids for t in texts]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--testbed", default="/work/shared/testbed")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "tokenizer_check.json"))
    ap.add_argument("--fuzz", type=int, default=3000, help="random strings per tokenizer")
    ap.add_argument("--no-run", action="store_true", help="only write the JSON")
    args = ap.parse_args()

    rng = random.Random(0)
    t0 = time.time()
    tok_path = os.path.join(args.testbed, "small", "base-A", "tokenizer.json")
    tok = Tokenizer.from_file(tok_path)
    files = []
    words = set()
    nrows = 0
    for path in sorted(glob.glob(os.path.join(args.testbed, "data", "*.jsonl"))):
        rows = read_rows(path)
        prompts = [alpaca_prompt(r) for r in rows]
        responses = [r["output"] for r in rows]
        p_ids = [e.ids for e in tok.encode_batch(prompts, add_special_tokens=False)]
        r_ids = [e.ids for e in tok.encode_batch(responses, add_special_tokens=False)]
        files.append({"path": path, "prompt_ids": p_ids, "response_ids": r_ids})
        nrows += len(rows)
        for r in rows[:300]:
            words.update(re.findall(r"\w+", r["output"]))
    words = sorted(words)

    suites = []
    specials = ["<s>", "</s>", "<pad>"]
    texts = edge_texts(specials) + fuzz_texts(rng, words, specials, args.fuzz)
    suites.append({"name": "testbed", "tokenizer": tok_path, "bos": 1, "eos": 2, "files": files,
                   "texts": texts, "text_ids": encode_all(tok_path, texts)})
    outdir = os.path.dirname(os.path.abspath(args.out))
    for name, path, sp in build_variants(args.testbed, os.path.join(outdir, "variants"), rng, words):
        texts = edge_texts(sp) + fuzz_texts(rng, words, sp, args.fuzz)
        suites.append({"name": name, "tokenizer": path, "texts": texts, "text_ids": encode_all(path, texts)})
    os.makedirs(outdir, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"suites": suites}, f)
    print(f"wrote {args.out}: {nrows} test bed rows, {sum(len(s['texts']) for s in suites)} strings "
          f"over {len(suites)} tokenizers ({time.time() - t0:.1f}s)")
    if args.no_run:
        return 0

    env = dict(os.environ, ILA_TOKENIZER_CHECK=os.path.abspath(args.out))
    cmd = ["swift", "test", "--filter", "MaskTests.TokenizerTests/testMatchesHuggingFaceOnWholeTestbed"]
    print("running:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [l for l in proc.stdout.splitlines() if "tokenizer-check" in l]
    for l in lines:
        print(l[l.index("tokenizer-check"):])
    total = [l for l in lines if "tokenizer-check: total" in l]
    if proc.returncode != 0 and not total:
        print(proc.stdout[-4000:])
        print("the Swift test did not run to completion")
        return 1
    m = re.search(r"test bed row mismatches: (\d+) of (\d+)", "\n".join(lines))
    if m:
        print(f"MISMATCHES over the whole test bed: {m.group(1)} of {m.group(2)} rows")
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
