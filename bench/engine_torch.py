"""PyTorch side of bench/engine and bench/families: tokens/s of forward and forward+gate-backward of
the masked model (JSON on stdout), for any AutoModelForCausalLM architecture.

The strongest honest baseline we know in eager PyTorch, float32, `--threads` threads:
- the mask in the form the Swift engine uses: LoRA factors scaled by γ (PEFT) for an adapter,
  W0 + γΔ for full-model deltas (ila_torch.py);
- every parameter frozen (autograd computes only what dJ/ds needs);
- attention `eager` or `sdpa`, and the 16 rows either as one right-padded batch or one unpadded
  row at a time with logits only at loss positions: every correct combination is timed and the
  fastest is reported, separately for forward and for forward+backward (chosen on --search-repeats
  timed runs each, then timed best of --repeats). A combination is correct
  when its NLL and dJ/ds match eager + padded (transformers' reference path) and, for sdpa, the
  model has no attention-logit soft-cap (transformers' sdpa path ignores `softcap`).
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ila_torch import batch_tensors, masked_model, row_tensors, rows_from_jsonl

ap = argparse.ArgumentParser()
ap.add_argument("--base", required=True)
ap.add_argument("--aligned", required=True)
ap.add_argument("--data", required=True)
ap.add_argument("--rows", type=int, default=16)
ap.add_argument("--seq-len", type=int, default=256)
ap.add_argument("--repeats", type=int, default=5)
ap.add_argument("--search-repeats", type=int, default=2,
                help="timed runs per candidate configuration; the chosen ones are then timed --repeats times")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--form", choices=["auto", "factor", "dense"], default="auto")
ap.add_argument("--attn", default="auto", help="auto (time eager and sdpa), eager or sdpa")
ap.add_argument("--batching", choices=["auto", "padded", "rows"], default="auto")
ap.add_argument("--gamma-logit", type=float, default=3.0)
a = ap.parse_args()
torch.set_num_threads(a.threads)

rows = rows_from_jsonl(a.base, a.data, a.rows, a.seq_len)
ids, mask, lab = batch_tensors(rows)
per_row = row_tensors(rows)
tokens = sum(len(i) for i, _ in rows)

cfg = json.load(open(os.path.join(a.base, "config.json")))
softcap = cfg.get("attn_logit_softcapping")
attns = ["eager", "sdpa"] if a.attn == "auto" else [a.attn]
batchings = ["padded", "rows"] if a.batching == "auto" else [a.batching]


def best(fn, repeats=None):
    fn()
    b = float("inf")
    for _ in range(repeats or a.repeats):
        t = time.perf_counter()
        fn()
        b = min(b, time.perf_counter() - t)
    return b


def measure(mm, batching):
    s = torch.full((len(mm.names),), a.gamma_logit)
    sg = s.clone().requires_grad_(True)

    def nll(x):
        return mm.nll(x, ids, mask, lab) if batching == "padded" else mm.nll_rows(x, per_row)

    def obj(x):
        return mm.objective(x, ids, mask, lab, 1.0) if batching == "padded" else mm.objective_rows(x, per_row, 1.0)

    def fwd():
        with torch.no_grad():
            return nll(s)

    def bwd():
        sg.grad = None
        j, _ = obj(sg)
        j.backward()

    value = fwd().item()
    bwd()
    grad = sg.grad.clone()
    return {"nll": value, "grad": grad, "forward_s": best(fwd, a.search_repeats), "backward_s": best(bwd, a.search_repeats),
            "fwd": fwd, "bwd": bwd, "obj": obj, "sg": sg}


models, results, reference = {}, [], None
for attn in attns:
    models[attn] = masked_model(a.base, a.aligned, a.form, attn)
for attn in ["eager"] + [x for x in attns if x != "eager"]:
    if attn not in models:
        continue
    for batching in (["padded"] + [b for b in batchings if b != "padded"]):
        if attn == "sdpa" and softcap is not None:
            # transformers' sdpa path refuses (or, in older versions, ignores) the soft-cap.
            results.append({"attn": attn, "batching": batching, "correct": False, "nll": None, "forward_s": None,
                            "backward_s": None, "why": "sdpa has no attn_logit_softcapping"})
            continue
        try:
            r = measure(models[attn], batching)
        except Exception as e:  # an implementation transformers refuses for this model
            results.append({"attn": attn, "batching": batching, "correct": False, "nll": None, "forward_s": None,
                            "backward_s": None, "why": f"{type(e).__name__}: {e}"})
            continue
        r.update(attn=attn, batching=batching)
        if reference is None:
            reference = r
        why = []
        if abs(r["nll"] - reference["nll"]) > 1e-5 * max(1.0, abs(reference["nll"])):
            why.append(f"NLL {r['nll']:.7f} vs {reference['nll']:.7f}")
        gd = (r["grad"] - reference["grad"]).abs().max().item() / max(reference["grad"].abs().max().item(), 1e-30)
        if gd > 1e-3:
            why.append(f"dJ/ds differs by {gd:.2e} (relative)")
        r["correct"] = not why
        r["why"] = "; ".join(why)
        results.append(r)

ok = [r for r in results if r["correct"] and (r["batching"] in batchings) and (r["attn"] in attns)]
if not ok:
    sys.exit("no correct PyTorch configuration: " + json.dumps([(r["attn"], r["batching"], r["why"]) for r in results]))
bf = min(ok, key=lambda r: r["forward_s"])
bb = min(ok, key=lambda r: r["backward_s"])
forward_s, backward_s = best(bf["fwd"]), best(bb["bwd"])
# One Adam step with the fastest backward configuration.
sg = bb["sg"]
opt = torch.optim.Adam([sg], lr=0.05)


def step():
    opt.zero_grad()
    j, _ = bb["obj"](sg)
    j.backward()
    opt.step()


st = best(step)
mm = models[bb["attn"]]
print(json.dumps({
    "tokens": tokens, "threads": torch.get_num_threads(), "torch": torch.__version__, "form": mm.form,
    "layers": len(mm.names), "nll": reference["nll"], "grad_abs_max": reference["grad"].abs().max().item(),
    "forward_s": forward_s, "forward_tok_s": tokens / forward_s, "forward_config": f"{bf['attn']}/{bf['batching']}",
    "backward_s": backward_s, "backward_tok_s": tokens / backward_s, "backward_config": f"{bb['attn']}/{bb['batching']}",
    "step_s": st,
    "candidates": [{"attn": r["attn"], "batching": r["batching"], "correct": r["correct"], "why": r["why"],
                    "nll": r["nll"], "forward_s": r["forward_s"], "backward_s": r["backward_s"]} for r in results],
}))
