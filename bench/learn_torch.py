"""An independent PyTorch implementation of `ila-mask learn` (DESIGN.md section 1), for bench/learn
and for checking rankings: Adam on s over J(s) = NLL(θ0 + σ(s)·Δ) + λ·mean σ(s), batches drawn
with the same SplitMix64 sampler as ila-mask (so the same seed sees the same rows). Writes a
ranking.json that `ila-mask compare` reads."""
import argparse
import json
import sys
import time

import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
from ila_torch import KINDS, MaskedModel, batch_tensors, load_deltas, load_model, rows_from_jsonl

M64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & M64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def index(self, n):
        limit = M64 - (M64 + 1) % n if (M64 + 1) % n else M64 + 1
        limit = (1 << 64) - ((1 << 64) % n)
        while True:
            x = self.next()
            if x < limit:
                return x % n


ap = argparse.ArgumentParser()
ap.add_argument("--base", required=True)
ap.add_argument("--aligned", required=True)
ap.add_argument("--data", required=True)
ap.add_argument("-o", "--output", required=True)
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--lr", type=float, default=0.05)
ap.add_argument("--lam", type=float, default=1.0)
ap.add_argument("--s-init", type=float, default=3.0)
ap.add_argument("--seq-len", type=int, default=256)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--limit", type=int, default=None)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)

mm = MaskedModel(load_model(a.base), load_deltas(a.base, a.aligned))
rows = rows_from_jsonl(a.base, a.data, a.limit or 10**9, a.seq_len)
s = torch.full((len(mm.names),), a.s_init, requires_grad=True)
opt = torch.optim.Adam([s], lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
rng = SplitMix64(a.seed)
history = []
t0 = time.perf_counter()
for step in range(a.steps):
    batch = [rows[rng.index(len(rows))] for _ in range(a.batch)]
    ids, mask, lab = batch_tensors(batch)
    opt.zero_grad()
    j, nll = mm.objective(s, ids, mask, lab, a.lam)
    j.backward()
    history.append({"step": step, "nll": nll.item(), "mean_gamma": torch.sigmoid(s).mean().item(), "J": j.item()})
    opt.step()
elapsed = time.perf_counter() - t0

scores = s.detach().tolist()
order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
rank = {i: r + 1 for r, i in enumerate(order)}
layers = []
for i, n in enumerate(mm.names):
    p = n.split(".")
    layers.append({"name": n, "block": int(p[p.index("layers") + 1]), "kind": p[-1], "score": scores[i],
                   "gamma": 1 / (1 + __import__("math").exp(-scores[i])), "rank": rank[i]})
blocks = max(l["block"] for l in layers) + 1
json.dump({"format": "ila-ranking", "version": 1,
           "model": {"architecture": "LlamaForCausalLM", "blocks": blocks, "kinds": KINDS},
           "source": {"base": a.base, "deltas": a.aligned, "data": a.data, "tool": "bench/learn_torch.py"},
           "objective": {"lambda": a.lam, "s_init": a.s_init, "lr": a.lr, "steps": a.steps, "batch": a.batch,
                         "seq_len": a.seq_len, "seed": a.seed, "optimizer": "adam"},
           "layers": layers, "history": history}, open(a.output, "w"), indent=1)
print(json.dumps({"steps": a.steps, "seconds": elapsed, "step_s": elapsed / a.steps}))
