"""PyTorch side of bench/engine: tokens/s of forward and forward+gate-backward (JSON on stdout)."""
import argparse
import json
import sys
import time

import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
from ila_torch import MaskedModel, batch_tensors, load_deltas, load_model, rows_from_jsonl

ap = argparse.ArgumentParser()
ap.add_argument("--base", required=True)
ap.add_argument("--aligned", required=True)
ap.add_argument("--data", required=True)
ap.add_argument("--rows", type=int, default=16)
ap.add_argument("--seq-len", type=int, default=256)
ap.add_argument("--repeats", type=int, default=5)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)

mm = MaskedModel(load_model(a.base), load_deltas(a.base, a.aligned))
rows = rows_from_jsonl(a.base, a.data, a.rows, a.seq_len)
ids, mask, lab = batch_tensors(rows)
tokens = sum(len(i) for i, _ in rows)
s = torch.full((len(mm.names),), 3.0)


def best(fn):
    fn()
    b = float("inf")
    for _ in range(a.repeats):
        t = time.perf_counter()
        fn()
        b = min(b, time.perf_counter() - t)
    return b


def fwd():
    with torch.no_grad():
        mm.nll(s, ids, mask, lab)


sg = s.clone().requires_grad_(True)
opt = torch.optim.Adam([sg], lr=0.05)


def bwd():
    sg.grad = None
    j, _ = mm.objective(sg, ids, mask, lab, 1.0)
    j.backward()


def step():
    opt.zero_grad()
    j, _ = mm.objective(sg, ids, mask, lab, 1.0)
    j.backward()
    opt.step()


f, b, st = best(fwd), best(bwd), best(step)
print(json.dumps({"tokens": tokens, "threads": torch.get_num_threads(), "forward_s": f, "forward_tok_s": tokens / f,
                  "backward_s": b, "backward_tok_s": tokens / b, "step_s": st, "torch": torch.__version__}))
