#!/usr/bin/env python3
"""Checks ila's Swift tokenizer against Hugging Face `tokenizers`, through `ila-mask tokenize`.

Every comparison runs the built command (`ila-mask tokenize --texts F`, one JSON array of ids
per line, and `--data D --json`, ids and labels per row) and compares with what the Python
`tokenizers` package gives for `tok.encode(text, add_special_tokens=False).ids`:

  testbed    the test bed's own tokenizer (<testbed>/small/base-A): the alpaca prompt and the
             response of EVERY row of <testbed>/data/*.jsonl (as --texts), and every row as
             --data builds it (BOS + prompt + response + EOS, labels), plus adversarial strings;
  families   one tokenizer per family variant of bench/make_tokenizer_fixtures.py (GPT-2,
             Llama 3, Qwen2, Qwen3.5, Tekken, o200k, Llama 2 legacy and Metaspace, Mistral,
             Phi-3, Gemma, CLIP-style, and normalizer/pre-tokenizer mixes), trained here on the
             test bed text with a 3000-token vocabulary: every row (prompt and response as
             --texts, and as --data rows) and adversarial + random strings;
  unicode    per-scalar probes over all 1,112,064 scalars of the Unicode tables each library
             inside `tokenizers` uses: Oniguruma's \\p{..} \\s \\d \\w . classes, NFC/NFD/NFKC/NFKD,
             Lowercase, StripAccents, Nmt, Strip, Digits, Punctuation, Whitespace(Split), and
             added tokens' single_word test (--skip-unicode to leave out; ~3 minutes);
  regex      random patterns of the supported regex syntax (and the real split patterns in
             a spelling the hand-written matchers do not claim), on random strings, as Split
             matches and as Replace positions (--regex N patterns).

Prints the figures per suite and variant and the mismatches (target 0).

Usage: python3 bench/tokenizer_check.py [--testbed DIR] [--bin PATH] [--out DIR] [--fuzz N]
                                        [--regex N] [--skip-unicode] [--only NAME,...]
Exit status: 0 when nothing mismatches.
"""

import argparse
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time

from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tokenizer_fixtures as fx  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------
# running the Swift side


def build_binary():
    print("building ila-mask (release) …", flush=True)
    subprocess.run(["swift", "build", "-c", "release", "--product", "ila-mask"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    out = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    return os.path.join(out, "ila-mask")


class Swift:
    def __init__(self, binary, tmp):
        self.binary = binary
        self.tmp = tmp

    def texts(self, base, texts):
        """ids per text from `ila-mask tokenize --texts`, or (None, error line)."""
        path = os.path.join(self.tmp, "texts.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps(t) + "\n")
        r = subprocess.run([self.binary, "tokenize", "--base", base, "--texts", path], capture_output=True, text=True)
        if r.returncode != 0:
            return None, r.stderr.strip()
        return [json.loads(line) for line in r.stdout.splitlines()], None

    def data(self, base, data_path):
        r = subprocess.run([self.binary, "tokenize", "--base", base, "--data", data_path, "--json"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return None, r.stderr.strip()
        return [json.loads(line) for line in r.stdout.splitlines()], None


def hf_ids(tok, texts):
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def special_ids(tok, base):
    """BOS/EOS as SpecialTokens.resolve finds them: config.json ids win, else
    tokenizer_config.json strings; add_bos_token false drops BOS."""
    bos = eos = None
    cfg, tcfg = {}, {}
    if os.path.exists(os.path.join(base, "config.json")):
        cfg = json.load(open(os.path.join(base, "config.json")))
    if os.path.exists(os.path.join(base, "tokenizer_config.json")):
        tcfg = json.load(open(os.path.join(base, "tokenizer_config.json")))

    def first(v):
        return v[0] if isinstance(v, list) and v else (None if isinstance(v, list) else v)

    def content(v):
        return v.get("content") if isinstance(v, dict) else v

    bos = first(cfg.get("bos_token_id"))
    eos = first(cfg.get("eos_token_id"))
    if bos is None and tcfg.get("bos_token") is not None:
        bos = tok.token_to_id(content(tcfg["bos_token"]))
    if eos is None and tcfg.get("eos_token") is not None:
        eos = tok.token_to_id(content(tcfg["eos_token"]))
    if tcfg.get("add_bos_token") is False:
        bos = None
    return bos, eos


def expected_row(p, r, bos, eos):
    ids, labels = [], []
    if bos is not None:
        ids.append(bos)
        labels.append(-100)
    ids += p
    labels += [-100] * len(p)
    ids += r
    labels += r
    if eos is not None:
        ids.append(eos)
        labels.append(eos)
    return ids, labels


def show(s, n=160):
    r = repr(s)
    return r if len(r) <= n else r[:n] + "…"


# ---------------------------------------------------------------------------
# suites


class Report:
    def __init__(self):
        self.lines = []
        self.mismatches = 0

    def add(self, name, what, compared, bad, unit):
        self.mismatches += bad
        line = f"  {name:22s} {what:18s} {bad:6d} mismatches of {compared:8d} {unit}"
        print(line, flush=True)
        self.lines.append(line)

    def fail(self, name, message):
        self.mismatches += 1
        line = f"  {name:22s} ERROR {message}"
        print(line, flush=True)
        self.lines.append(line)


def compare_lists(name, texts, want, got, limit=3):
    bad = [i for i, (a, b) in enumerate(zip(want, got)) if a != b]
    if len(want) != len(got):
        print(f"    [{name}] {len(want)} expected lines, {len(got)} printed")
        bad += list(range(min(len(want), len(got)), max(len(want), len(got))))
    for i in bad[:limit]:
        print(f"    [{name}] MISMATCH {show(texts[i]) if i < len(texts) else i}\n      want {want[i] if i < len(want) else None}"
              f"\n      got  {got[i] if i < len(got) else None}")
    return bad


def check_tokenizer(report, swift, name, base, files, extra_texts):
    """--texts on every row's prompt and response and on `extra_texts`; --data on every file."""
    tok = Tokenizer.from_file(os.path.join(base, "tokenizer.json"))
    bos, eos = special_ids(tok, base)
    prompts, responses, nrows, row_of = [], [], 0, []
    for path in files:
        rows = fx.read_rows(path)
        prompts += [fx.alpaca_prompt(r) for r in rows]
        responses += [r["output"] for r in rows]
        nrows += len(rows)
    texts = prompts + responses + extra_texts
    want = hf_ids(tok, texts)
    got, err = swift.texts(base, texts)
    if got is None:
        report.fail(name, err)
        return
    bad = set(compare_lists(name, texts, want, got))
    row_bad = sum(1 for i in range(nrows) if i in bad or (nrows + i) in bad)
    report.add(name, "rows (--texts)", nrows, row_bad, "test-bed rows")
    report.add(name, "strings", len(extra_texts), sum(1 for i in bad if i >= 2 * nrows), "adversarial strings")
    # --data: the rows as learn/eval see them.
    data_bad, data_rows, k = 0, 0, 0
    for path in files:
        rows = fx.read_rows(path)
        got_rows, err = swift.data(base, path)
        if got_rows is None:
            report.fail(name, err)
            return
        for j, row in enumerate(got_rows):
            ids, labels = expected_row(want[k + j], want[nrows + k + j], bos, eos)
            if row["ids"] != ids or row["labels"] != labels:
                data_bad += 1
                if data_bad <= 3:
                    print(f"    [{name}] --data MISMATCH {path} row {j + 1}")
        data_rows += len(got_rows)
        if len(got_rows) != len(rows):
            data_bad += abs(len(rows) - len(got_rows))
        k += len(rows)
    report.add(name, "rows (--data)", data_rows, data_bad, "test-bed rows")


def suite_testbed(report, swift, testbed, strings):
    base = os.path.join(testbed, "small", "base-A")
    files = sorted(glob.glob(os.path.join(testbed, "data", "*.jsonl")))
    check_tokenizer(report, swift, "testbed base-A", base, files, strings)


def suite_families(report, swift, testbed, outdir, strings, only):
    rng = random.Random(0)
    texts = fx.training_texts(os.path.join(testbed, "data"), rng, rows_per_file=1500)
    files = sorted(glob.glob(os.path.join(testbed, "data", "*.jsonl")))
    for spec in fx.VARIANTS:
        if only and spec["name"] not in only:
            continue
        t0 = time.time()
        j = fx.build(spec, texts, 3000)
        path = fx.write_variant(spec, j, outdir)
        check_tokenizer(report, swift, spec["name"], os.path.dirname(path), files, strings)
        print(f"    ({spec['family']}; vocab {len(j['model']['vocab'])}, {time.time() - t0:.0f} s)", flush=True)


# --- Unicode probes: tokenizers whose ids spell out the normalized text and the word breaks.

def probe_json(normalizer=None, pre_tokenizer=None, added=None):
    """A BPE whose vocabulary is the 256 byte tokens only: every word comes out as the bytes
    of its text followed by the bytes of "</w>", so ids show the text and where words end."""
    vocab = {f"<0x{b:02X}>": b for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, end_of_word_suffix="</w>"))
    if normalizer is not None:
        tok.normalizer = normalizer
    if pre_tokenizer is not None:
        tok.pre_tokenizer = pre_tokenizer
    if added:
        tok.add_tokens(added)
    return json.loads(tok.to_str())


def all_scalars():
    return [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]


PROBES = None  # --probe: only the unicode probes whose name contains one of these


def run_probe(report, swift, outdir, name, j, texts, unit):
    if PROBES and not any(p in name for p in PROBES):
        return
    d = os.path.join(outdir, "probes", name.replace("\\", "_").replace("{", "").replace("}", "").replace("/", "_"))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    want = hf_ids(tok, texts)
    got, err = swift.texts(d, texts)
    if got is None:
        report.fail(name, err)
        return
    bad = compare_lists(name, texts, want, got, limit=2)
    report.add(name, "", len(texts), len(bad), unit)


def suite_unicode(report, swift, outdir):
    cps = all_scalars()
    lines = ["".join(map(chr, cps[i:i + 48])) for i in range(0, len(cps), 48)]
    unit = "lines of 48 consecutive scalars"
    rng = random.Random(3)
    ranges = [(0x300, 0x370), (0x1AB0, 0x1B00), (0x1DC0, 0x1E00), (0x20D0, 0x2100), (0xFE20, 0xFE30), (0x591, 0x5C8),
              (0x610, 0x670), (0x900, 0xDFF), (0xF00, 0xFFF), (0x1100, 0x1200), (0x3099, 0x309B), (0x1D165, 0x1D1AE),
              (0x11000, 0x11A00), (0xFF9E, 0xFFA0), (0x3131, 0x3190)]
    marks = [c for lo, hi in ranges for c in range(lo, hi)]
    bases = list("aeiouAEIOUnNcCsSyYzZ") + [chr(c) for c in (0x391, 0x3B1, 0x3C9, 0x415, 0x435, 0x1100, 0x1161, 0x11A8,
                                                           0xAC00, 0xFF76, 0xFF9E, 0x3046, 0x304B, 0x30AB, 0x0928, 0x0915,
                                                           0x09C7, 0x0B47, 0x0BC6, 0x0CC6, 0x0D46, 0x0DD9, 0x1025, 0x1B05)]
    combos = []
    for _ in range(20000):
        s = "".join(rng.choice(bases) if rng.random() < 0.35 else chr(rng.choice(marks)) for _ in range(rng.randint(1, 7)))
        combos.append(s)
    for name, n in [("NFC", normalizers.NFC()), ("NFD", normalizers.NFD()), ("NFKC", normalizers.NFKC()),
                    ("NFKD", normalizers.NFKD())]:
        run_probe(report, swift, outdir, name, probe_json(normalizer=n), lines, unit)
        run_probe(report, swift, outdir, name + " marks", probe_json(normalizer=n), combos, "random mark sequences")
        # With a Metaspace "first", pieces carry alignments: which piece starts at offset 0.
        aligned = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\p{M}|\p{N}|\p{P}|\p{S}|\p{Lo}"), "isolated"),
                                           pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)])
        run_probe(report, swift, outdir, name + " aligned", probe_json(normalizer=n, pre_tokenizer=aligned),
                  combos + lines[:3000], "mark sequences and lines")
    for name, n in [("Lowercase", normalizers.Lowercase()), ("StripAccents", normalizers.StripAccents()),
                    ("Nmt", normalizers.Nmt()), ("ByteLevel normalizer", normalizers.ByteLevel())]:
        run_probe(report, swift, outdir, name, probe_json(normalizer=n), lines, unit)
    single = [chr(c) for c in cps]
    framed = ["a" + c + "a" for c in single]
    run_probe(report, swift, outdir, "Strip", probe_json(normalizer=normalizers.Strip()),
              [c + "x" + c for c in single], "scalars")
    run_probe(report, swift, outdir, "WhitespaceSplit", probe_json(pre_tokenizer=pre_tokenizers.WhitespaceSplit()),
              lines, unit)
    run_probe(report, swift, outdir, "Digits", probe_json(pre_tokenizer=pre_tokenizers.Digits(individual_digits=True)),
              framed, "scalars")
    run_probe(report, swift, outdir, "Punctuation", probe_json(pre_tokenizer=pre_tokenizers.Punctuation()),
              framed, "scalars")
    run_probe(report, swift, outdir, "Whitespace", probe_json(pre_tokenizer=pre_tokenizers.Whitespace()),
              ["a" + c for c in single], "scalars")
    run_probe(report, swift, outdir, "single_word \\w",
              probe_json(added=[AddedToken("q", single_word=True, normalized=False)]),
              [c + "q" for c in single], "scalars")
    cats = ["L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Ps",
            "Pe", "Pi", "Pf", "Po", "S", "Sm", "Sc", "Sk", "So", "Z", "Zs", "Zl", "Zp", "C", "Cc", "Cf", "Co", "Cn"]
    pats = [r"\p{%s}" % c for c in cats] + [r"\P{L}", r"\p{^N}", r"\s", r"\S", r"\d", r"\D", r"\w", r"\W", r".",
                                              r"[^\s\p{L}\p{N}]", r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", r"\p{Any}"]
    for p in pats:
        run_probe(report, swift, outdir, "regex " + p,
                  probe_json(pre_tokenizer=pre_tokenizers.Split(Regex(p), "removed", invert=False)), lines, unit)


# --- the regex engine against Oniguruma

ALPHABET = list("aabbcAB '1\n\t.-_") + ["é", "ß", "Ж", "中", "\u0301", "\u00a0", "٣", "ſ", "\u212a", "🙂"]


def random_pattern(rng, depth=0):
    def atom():
        r = rng.random()
        if depth < 2 and r < 0.15:
            kind = rng.choice(["(?:", "(", "(?=", "(?!", "(?>"])
            return kind + random_pattern(rng, depth + 1) + ")"
        if depth < 2 and r < 0.2:
            lits = ["".join(rng.choice("abcdemtrlv'") for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 3))]
            lits = [x for x in lits if not any(p in x.lower() for p in ("ss", "st", "ff", "fi", "fl"))] or ["a"]
            return "(?i:" + "|".join(lits) + ")"
        if r < 0.45:
            return rng.choice(["a", "b", "c", "A", " ", "'", "1", "é", "中", "\\.", "\\-", "\\n", "\\t", "\\x41", "\\u00e9",
                               "\\\\", "_"])
        if r < 0.75:
            return rng.choice([r"\s", r"\S", r"\d", r"\D", r"\w", r"\W", r"\p{L}", r"\p{Lu}", r"\p{Ll}", r"\p{N}",
                               r"\P{L}", r"\p{M}", r"\p{P}", r"\p{S}", ".", r"\p{^L}"])
        if r < 0.93:
            neg = "^" if rng.random() < 0.3 else ""
            items = rng.sample(["a", "b-c", "A-Z", r"\s", r"\p{L}", r"\p{N}", r"\d", "'", r"\r\n", "é", r"\-", "0-9",
                                r"\p{M}", "_"], rng.randint(1, 3))
            return "[" + neg + "".join(items) + "]"
        return rng.choice(["^", "$", r"\A", r"\z", r"\Z"])

    def quantified():
        a = atom()
        r = rng.random()
        if r < 0.55 or a in ("^", "$", r"\A", r"\z", r"\Z") or a.startswith("(?=") or a.startswith("(?!"):
            return a
        q = rng.choice(["?", "*", "+", "{2}", "{1,3}", "{2,}", "{,2}", "{0,1}"])
        mod = rng.choice(["", "", "?", "+"]) if not q.startswith("{") else rng.choice(["", "", "?"])
        return a + q + mod

    alts = []
    for _ in range(rng.randint(1, 3)):
        alts.append("".join(quantified() for _ in range(rng.randint(1, 4))))
    return "|".join(alts)


def suite_regex(report, swift, outdir, n):
    rng = random.Random(11)
    pats = ["(?:%s)" % p for p in (fx.GPT2, fx.LLAMA3, fx.QWEN2)] + [fx.TEKKEN, fx.O200K, fx.QWEN35, fx.CLIP,
                                                                      r"\s+", r" {2,}", r"[一-龥぀-ゟ゠-ヿ]+", r"\p{N}{1,3}"]
    pats += [random_pattern(rng) for _ in range(n)]
    words = ["hello", "it's", "I'M", "don't", "we'll", "ab", "abab", "ccc", "  ", "\n\n", "123", "中文", "naïve"]
    texts = []
    for _ in range(60):
        texts.append("".join(rng.choice(ALPHABET) if rng.random() < 0.7 else rng.choice(words)
                             for _ in range(rng.randint(0, 24))))
    compared = refused = bad_patterns = hf_failed = 0
    reasons = {}
    bad_texts = 0
    for k, p in enumerate(pats):
        try:
            jm = probe_json(pre_tokenizer=pre_tokenizers.Split(Regex(p), "removed", invert=True))
            jr = probe_json(normalizer=normalizers.Replace(Regex(p), "\ue000"))
        except Exception:
            continue  # Oniguruma rejects it too
        mismatch = 0
        for kind, j in (("matches", jm), ("replace", jr)):
            d = os.path.join(outdir, "regex", f"{k}-{kind}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
                json.dump(j, f, ensure_ascii=False)
            tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
            try:
                want = hf_ids(tok, texts)
            except BaseException:  # Oniguruma's retry limit (catastrophic backtracking)
                hf_failed += 1
                mismatch = -1
                break
            got, err = swift.texts(d, texts)
            if got is None:
                if "not supported" in err:
                    refused += 1
                    reason = err.split("not supported: ")[-1].split(" (at character")[0]
                    reasons[reason] = reasons.get(reason, 0) + 1
                    mismatch = -1
                    break
                report.fail("regex", f"{p!r}: {err}")
                mismatch = -1
                break
            bad = [i for i, (a, b) in enumerate(zip(want, got)) if a != b]
            if bad:
                mismatch += len(bad)
                if bad_patterns < 5:
                    i = bad[0]
                    print(f"    [regex {kind}] MISMATCH pattern {p!r} on {show(texts[i])}\n      want {want[i]}\n      got  {got[i]}")
        if mismatch >= 0:
            compared += 1
            if mismatch:
                bad_patterns += 1
                bad_texts += mismatch
    print(f"  regex: {hf_failed} patterns hit Oniguruma's retry limit in tokenizers (not compared)")
    print(f"  regex: {refused} of {len(pats)} patterns refused by the Swift engine (not compared): "
          + ", ".join(f"{r} ×{n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])))
    report.add("regex", "patterns", compared, bad_patterns, f"patterns × {len(texts)} strings × 2 probes")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--testbed", default="/work/shared/testbed")
    ap.add_argument("--bin", help="an ila-mask binary (default: build the release one)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "tokenizers"))
    ap.add_argument("--fuzz", type=int, default=3000, help="random strings per tokenizer")
    ap.add_argument("--regex", type=int, default=400, help="random regex patterns")
    ap.add_argument("--skip-unicode", action="store_true")
    ap.add_argument("--only", help="comma-separated suites or family variant names")
    ap.add_argument("--probe", help="comma-separated substrings: only the unicode probes naming one")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else set()
    global PROBES
    PROBES = args.probe.split(",") if args.probe else None
    binary = args.bin or build_binary()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    report = Report()
    rng = random.Random(0)
    words = sorted({w for path in glob.glob(os.path.join(args.testbed, "data", "*.eval.jsonl"))
                    for r in fx.read_rows(path)[:200] for w in r["output"].split() if w.isalpha()})
    strings = fx.ADVERSARIAL + fx.fuzz_strings(rng, words, args.fuzz)
    with tempfile.TemporaryDirectory() as tmp:
        swift = Swift(binary, tmp)
        families = {v["name"] for v in fx.VARIANTS}
        if not only or "testbed" in only:
            print("testbed:", flush=True)
            suite_testbed(report, swift, args.testbed, strings)
        if not only or "families" in only or only & families:
            print("families:", flush=True)
            suite_families(report, swift, args.testbed, os.path.join(args.out, "families"), strings,
                           only & families if only - {"families"} else set())
        if (not only and not args.skip_unicode) or "unicode" in only:
            print("unicode:", flush=True)
            suite_unicode(report, swift, args.out)
        if not only or "regex" in only:
            print("regex:", flush=True)
            suite_regex(report, swift, args.out, args.regex)
    print(f"\nTOTAL MISMATCHES: {report.mismatches} ({time.time() - t0:.0f} s)")
    return 0 if report.mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
