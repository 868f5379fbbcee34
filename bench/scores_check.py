"""Every `ila-mask score` method against bench/scores_torch.py on any model + LoRA adapter + data:
Spearman ρ of the layer scores (average ranks for ties) and the largest relative difference.

Usage: python3 bench/scores_check.py BASE ADAPTER DATA.jsonl [--rows 16] [--seq-len 64] [--bin .build/release] [--out DIR]
e.g.   python3 bench/scores_check.py ../shared/testbed/small/base-A ../shared/testbed/small/lora-pyapi \\
           ../shared/testbed/data/pyapi.train.jsonl --rows 16 --seq-len 256
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np


def ranks(v):
    v = np.asarray(v, dtype=float)
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        r[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("adapter")
    ap.add_argument("data")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--bin", default=".build/release")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = a.out or tempfile.mkdtemp(prefix="ila-scores-check-")
    os.makedirs(out, exist_ok=True)
    ref_path = os.path.join(out, "torch.json")
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run([sys.executable, os.path.join(here, "scores_torch.py"), a.base, a.adapter, a.data, ref_path,
                    "--rows", str(a.rows), "--seq-len", str(a.seq_len)], check=True, stdout=subprocess.DEVNULL)
    ref = json.load(open(ref_path))
    deltas = os.path.join(out, "deltas.h5")
    subprocess.run([os.path.join(a.bin, "ila-diff"), a.base, a.adapter, "-o", deltas], check=True, stdout=subprocess.DEVNULL)
    common = ["--base", a.base, "--deltas", deltas, "--data", a.data, "--limit", str(a.rows), "--seq-len", str(a.seq_len)]
    L = len(ref["per_block"]["block-influence"])
    attention = {"q_proj", "k_proj", "v_proj", "o_proj"}

    def block(v):
        return lambda name: v[int(name.split(".")[2])]
    by_layer = dict(zip(ref["layers"], ref["spectrum"]))
    lora = ref["lora_layers"]
    pb = ref["per_block"]
    cases = [
        ("spectrum", [], lambda n: by_layer[n]),
        ("block-influence", [], block(pb["block-influence"])),
        ("block-influence", ["--last-state", "raw"], block(pb["block-influence-raw"])),
        ("block-influence-sublayer", [],
         lambda n: pb["attention" if n.split(".")[-1] in attention else "mlp"][int(n.split(".")[2])]),
        ("angular", [], block(pb["angular-1"])),
        ("angular", ["--distance", "2"], block(pb["angular-2"])),
        ("taylor", [], lambda n: ref["taylor"][lora.index(n)]),
        ("ablation", [], lambda n: ref["ablation"][lora.index(n)]),
    ]
    results = []
    for method, extra, want in cases:
        path = os.path.join(out, f"{method}{''.join(extra).replace('--', '-')}.json")
        subprocess.run([os.path.join(a.bin, "ila-mask"), "score", "--method", method, *common, *extra, "-o", path],
                       check=True, stdout=subprocess.DEVNULL)
        r = json.load(open(path))
        got = [l["score"] for l in r["layers"]]
        exp = [want(l["name"]) for l in r["layers"]]
        rel = max(abs(g - e) / max(abs(e), 1e-12) for g, e in zip(got, exp))
        # Per-block methods: Spearman over blocks (every layer of a block shares the score).
        rho = spearman(got, exp)
        results.append({"method": method + (" " + " ".join(extra) if extra else ""), "spearman": rho, "max_rel_diff": rel,
                        "layers": len(got)})
    print(f"{'method':36s} {'layers':>6s} {'spearman':>9s} {'max rel diff':>13s}")
    for r in results:
        print(f"{r['method']:36s} {r['layers']:6d} {r['spearman']:9.6f} {r['max_rel_diff']:13.3e}")
    print(json.dumps({"rows": ref["rows"], "seq_len": ref["seq_len"], "blocks": L, "results": results}))


if __name__ == "__main__":
    main()
