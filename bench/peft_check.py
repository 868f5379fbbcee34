#!/usr/bin/env python3
"""Check `ila-mask export --format peft` against real PEFT.

Runs the export for RANKING at --top F, builds `peft.LoraConfig(**cfg)` from the written
adapter_config fragment, wraps the test-bed model with `get_peft_model`, and asserts that the
modules PEFT adapted are exactly the top-F layers of the ranking (computed here independently:
sort by rank, take floor(F*N + 0.5), at least 1). Also checks the regex with re.fullmatch over
every module name of the model and the `json` export's `selected` flags.

    python3 bench/peft_check.py ranking.json --top 0.3
    python3 bench/peft_check.py ranking.json --top 0.75 --model /path/to/hf-model --ila-mask .build/release/ila-mask

Installs torch, peft and transformers with pip if they are missing. Exit 0 when all checks pass.
"""
import argparse
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_MODEL = "/work/shared/testbed/small/base-A"


def ensure_packages():
    missing = [p for p in ("torch", "peft", "transformers") if importlib.util.find_spec(p) is None]
    if missing:
        print(f"installing {', '.join(missing)} with pip ...", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *missing])


def find_ila_mask(explicit):
    if explicit:
        return explicit
    # the most recently built of release / debug
    cands = [c for c in (os.path.join(ROOT, ".build", "release", "ila-mask"), os.path.join(ROOT, ".build", "debug", "ila-mask"))
             if os.access(c, os.X_OK)]
    if cands:
        return max(cands, key=os.path.getmtime)
    sys.exit("peft_check: ila-mask not found; build it (swift build) or pass --ila-mask")


def expected_selection(ranking_path, top):
    with open(ranking_path) as f:
        r = json.load(f)
    layers = r["layers"]
    k = max(1, min(len(layers), math.floor(top * len(layers) + 0.5)))
    ordered = sorted(layers, key=lambda l: l["rank"])
    return {l["name"] for l in ordered[:k]}, [l["name"] for l in layers]


def run_export(ila_mask, ranking, top, fmt, out, extra=()):
    cmd = [ila_mask, "export", ranking, "--top", str(top), "--format", fmt, "-o", out, *extra]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"peft_check: {' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ranking")
    ap.add_argument("--top", type=float, default=0.75)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="HF model directory (default: the small test bed base-A)")
    ap.add_argument("--ila-mask", default=None, help="path of the ila-mask binary")
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--lora-alpha", type=int, default=16)
    args = ap.parse_args()

    ensure_packages()
    import torch  # noqa: F401
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    ila_mask = find_ila_mask(args.ila_mask)
    expected, all_layers = expected_selection(args.ranking, args.top)

    with tempfile.TemporaryDirectory() as tmp:
        peft_path = os.path.join(tmp, "adapter_config.json")
        json_path = os.path.join(tmp, "selection.json")
        run_export(ila_mask, args.ranking, args.top, "peft", peft_path,
                   ["--lora-r", str(args.lora_r), "--lora-alpha", str(args.lora_alpha)])
        run_export(ila_mask, args.ranking, args.top, "json", json_path)
        with open(peft_path) as f:
            cfg = json.load(f)
        with open(json_path) as f:
            sel = json.load(f)

    pattern = cfg["target_modules"]
    assert isinstance(pattern, str), "target_modules must be one regex string"
    assert cfg["r"] == args.lora_r and cfg["lora_alpha"] == args.lora_alpha, "r / lora_alpha not as requested"
    json_selected = {l["name"] for l in sel["layers"] if l["selected"]}
    assert json_selected == expected, f"json export selection differs: {sorted(json_selected ^ expected)[:5]}"

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    module_names = [n for n, _ in model.named_modules() if n]
    missing = set(all_layers) - set(module_names)
    assert not missing, f"ranking layers not in the model: {sorted(missing)[:5]}"
    regex_hits = {n for n in module_names if re.fullmatch(pattern, n)}
    assert regex_hits == expected, (
        f"re.fullmatch selects {len(regex_hits)} modules, expected {len(expected)}; "
        f"differences: {sorted(regex_hits ^ expected)[:5]}")

    lcfg = LoraConfig(**cfg)
    peft_model = get_peft_model(model, lcfg)
    inner = peft_model.base_model.model
    adapted = {n for n, m in inner.named_modules() if isinstance(m, LoraLayer)}
    assert adapted == expected, (
        f"PEFT adapted {len(adapted)} modules, expected {len(expected)}; differences: {sorted(adapted ^ expected)[:5]}")
    trainable = {n for n, p in inner.named_parameters() if p.requires_grad}
    lora_owners = {re.sub(r"\.lora_[AB]\.default\.weight$", "", n) for n in trainable}
    assert lora_owners == expected, f"trainable LoRA parameters differ: {sorted(lora_owners ^ expected)[:5]}"

    n_params = sum(p.numel() for p in inner.parameters() if p.requires_grad)
    print(json.dumps({
        "ok": True,
        "ila_mask": ila_mask,
        "ranking": args.ranking,
        "model": args.model,
        "top": args.top,
        "layers": len(all_layers),
        "selected": len(expected),
        "adapted_by_peft": len(adapted),
        "trainable_lora_params": n_params,
        "regex_chars": len(pattern),
        "target_modules": pattern,
    }, indent=2))


if __name__ == "__main__":
    main()
