"""Markdown tables of docs/scores-report.md from bench/scores-report's select-report JSON files.
Usage: python3 bench/scores_report_md.py bench/out/scores/lora-pyapi.json bench/out/scores/lora-define-100.json ...
"""
import json
import os
import sys


def kept(r, v):
    return 100 * (r["nll_base"] - v) / (r["nll_base"] - r["nll_all_deltas"])


for path in sys.argv[1:]:
    r = json.load(open(path))
    name = os.path.splitext(os.path.basename(path))[0]
    fs = r["fractions"]
    print(f"### {name}\n")
    print(f"{r['eval_rows']} held-out rows, {r['eval_tokens']} response tokens; NLL base (no delta) "
          f"{r['nll_base']:.4f}, all deltas {r['nll_all_deltas']:.4f}. Cells: held-out NLL with only the top-F "
          f"layers' deltas kept (share of the alignment's NLL gain kept). Bold: best per column.\n")
    print("| method | " + " | ".join(f"F = {f:g}" for f in fs) + " |")
    print("|---|" + "---|" * len(fs))
    best = [min(r["nll"][m][i] for m in r["methods"]) for i in range(len(fs))]
    rows = [(m, r["nll"][m]) for m in r["methods"]]
    if "random" in r:
        rows.append((f"random (mean of {r['random_draws']})", r["random"]))
    for m, v in rows:
        cells = []
        for i, x in enumerate(v):
            c = f"{x:.4f} ({kept(r, x):.0f}%)"
            cells.append(f"**{c}**" if x == best[i] and not m.startswith("random") else c)
        print(f"| {m} | " + " | ".join(cells) + " |")
    if "ila" in r["methods"]:
        ia = r["methods"].index("ila")
        print("\nJaccard with ILA's top-F set:\n")
        print("| method | " + " | ".join(f"F = {f:g}" for f in fs) + " |")
        print("|---|" + "---|" * len(fs))
        for j, m in enumerate(r["methods"]):
            if m == "ila":
                continue
            print(f"| {m} | " + " | ".join(f"{r['jaccard'][str(f)][ia][j]:.2f}" for f in fs) + " |")
    print("\nscore time (s): " + ", ".join(f"{m} {s:.1f}" for m, s in r["seconds"].items()) + "\n")
