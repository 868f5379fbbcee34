"""PyTorch / NumPy reference for `ila-mask score` (DESIGN.md section 11), written independently of
the Swift code from the methods' published definitions:

- spectrum: cognitivecomputations/spectrum's spectrum.py (`calculate_snr_for_layer`): S =
  torch.linalg.svdvals(W) of the float32 weight, σ = (quantile(S, .75) − quantile(S, .25))/1.349,
  β = n/m if n < m else m/n for W [n, m], threshold = σ·√((1+√β)²), signal = Σ S > threshold,
  noise = Σ S ≤ threshold (1.0 when no value is noise), SNR = signal/noise/S[0]. Reimplemented in
  NumPy (float32 SVD as torch does, and float64 to show the SVD precision does not matter) and,
  as a check of the reimplementation, with torch exactly as spectrum.py writes it.
- block-influence (ShortGPT): 1 − mean over tokens of cos(h_b, h_{b+1}) with h = transformers'
  output_hidden_states (h_0 embeddings, h_L after the final norm); the `_raw` variant takes the
  last block's raw output instead (a forward hook). Sub-layer: the stream after attention (the
  input of post_attention_layernorm, by a forward pre-hook) splits each block in two halves.
- angular (PruneMe, compute_block_similarity/utils.py): arccos(clamp(cos(h_l, h_{l+n})))/π on each
  row's last token, mean over rows; a block's score is the mean over the windows [l, l+n) that
  contain it.
- taylor: |∂ mean NLL/∂γ_i| at γ = 1 (autograd through PEFT's LoRA scaling); ablation:
  NLL(γ = 1, γ_i = 0) − NLL(γ = 1). Both on the same rows, mean over response tokens.

Usage: python3 bench/scores_torch.py BASE ADAPTER DATA.jsonl OUT.json [--rows 16] [--seq-len 64]
(fixtures/scores/tiny-pyapi.json is `bench/scores_torch.py fixtures/tiny/base-A
fixtures/tiny/lora-pyapi fixtures/data/pyapi.train.jsonl fixtures/scores/tiny-pyapi.json`).
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ila_torch import KINDS, LoraMaskedModel, layer_key, load_model, rows_from_jsonl  # noqa: E402


def spectrum_numpy(w, dtype):
    """Spectrum's SNR of one matrix [n, m], NumPy."""
    s = np.linalg.svd(w.astype(dtype), compute_uv=False)  # descending
    sigma = (np.quantile(s, 0.75) - np.quantile(s, 0.25)) / 1.349  # numpy 'linear' = torch's default
    n, m = w.shape
    beta = n / m if n < m else m / n
    threshold = sigma * np.sqrt((1 + np.sqrt(beta)) ** 2)
    signal_mask = s > threshold
    signal = s[signal_mask].sum() if signal_mask.any() else 0.0
    noise = s[~signal_mask].sum() if (~signal_mask).any() else 1.0
    snr = signal / noise if noise != 0 else float("inf")
    return float(snr / s[0])


def spectrum_torch(w):
    """The same lines as spectrum.py's calculate_snr_for_layer."""
    S = torch.linalg.svdvals(w)
    max_singular_value = S[0]
    iqr = torch.quantile(S, 0.75) - torch.quantile(S, 0.25)
    sigma_estimated = iqr / 1.349
    n, m = w.shape[-2:]
    beta = n / m if n < m else m / n
    mp_threshold = sigma_estimated * np.sqrt((1 + np.sqrt(beta)) ** 2)
    signal_mask = S > mp_threshold
    noise_mask = ~signal_mask
    signal = S[signal_mask].sum() if signal_mask.any() else torch.tensor(0.0)
    noise = S[noise_mask].sum() if noise_mask.any() else torch.tensor(1.0)
    snr = signal / noise if noise != 0 else float("inf")
    return float(snr / max_singular_value)


def cos_rows(a, b):
    """cos per row of [T, H] float64."""
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("adapter")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=64)
    a = ap.parse_args()
    torch.manual_seed(0)

    base = load_model(a.base)
    L = base.config.num_hidden_layers
    names = sorted([n[:-len(".weight")] for n, p in base.named_parameters()
                    if p.ndim == 2 and n.split(".")[-2] in KINDS and ".layers." in n], key=layer_key)
    params = dict(base.named_parameters())
    spectrum = {n: spectrum_numpy(params[n + ".weight"].detach().numpy(), np.float32) for n in names}
    spectrum64 = {n: spectrum_numpy(params[n + ".weight"].detach().numpy(), np.float64) for n in names}
    spectrum_t = {n: spectrum_torch(params[n + ".weight"].detach()) for n in names}

    rows = rows_from_jsonl(a.base, a.data, a.rows, a.seq_len)

    # Hidden states of the base model (γ = 0): transformers' hidden_states, the stream after
    # attention of each block, and the last block's raw output.
    layers = base.model.layers
    mids, raw_last = {}, {}
    hooks = []
    for b, layer in enumerate(layers):
        hooks.append(layer.post_attention_layernorm.register_forward_pre_hook(
            lambda mod, inp, b=b: mids.__setitem__(b, inp[0][0].detach())))
    hooks.append(layers[-1].register_forward_hook(
        lambda mod, inp, out: raw_last.__setitem__(0, (out[0] if isinstance(out, tuple) else out)[0].detach())))
    bi = np.zeros(L); bi_raw = np.zeros(L); att = np.zeros(L); mlp = np.zeros(L); tokens = 0
    ang = {1: np.zeros(L), 2: np.zeros(L - 1)}
    with torch.no_grad():
        for ids, _ in rows:
            out = base(input_ids=torch.tensor([ids]), output_hidden_states=True)
            hs = [h[0] for h in out.hidden_states]
            assert len(hs) == L + 1
            tokens += len(ids)
            for b in range(L):
                bi[b] += cos_rows(hs[b], hs[b + 1]).sum().item()
                nxt_raw = raw_last[0] if b == L - 1 else hs[b + 1]
                bi_raw[b] += cos_rows(hs[b], nxt_raw).sum().item()
                att[b] += cos_rows(hs[b], mids[b]).sum().item()
                mlp[b] += cos_rows(mids[b], hs[b + 1]).sum().item()
            for n, acc in ang.items():
                for s in range(L - n + 1):
                    c = cos_rows(hs[s][-1:], hs[s + n][-1:]).clamp(-1, 1)
                    acc[s] += (torch.acos(c) / math.pi).item()
    for h in hooks:
        h.remove()

    def angular_per_block(windows, n):
        return [float(np.mean([windows[s] for s in range(max(0, b - n + 1), min(b, len(windows) - 1) + 1)])) for b in range(L)]

    per_block = {
        "block-influence": [1 - v / tokens for v in bi],
        "block-influence-raw": [1 - v / tokens for v in bi_raw],
        "attention": [1 - v / tokens for v in att],
        "mlp": [1 - v / tokens for v in mlp],
        "angular-1": angular_per_block(ang[1] / len(rows), 1),
        "angular-2": angular_per_block(ang[2] / len(rows), 2),
    }

    # Taylor and ablation through PEFT's LoRA layers (scaling = scale·γ).
    mm = LoraMaskedModel(load_model(a.base), a.adapter)
    N = len(mm.names)

    def mean_nll(gamma):
        run = mm._prepare(gamma)
        total, count = 0.0, 0
        for ids, lab in rows:
            pos = [t for t in range(len(ids) - 1) if lab[t + 1] != -100]
            if not pos:
                continue
            logits = run(torch.tensor([ids]), None, torch.tensor(pos))[0]
            total = total + torch.nn.functional.cross_entropy(logits, torch.tensor([lab[t + 1] for t in pos]), reduction="sum")
            count += len(pos)
        return total / count

    g = torch.ones(N, requires_grad=True)
    full = mean_nll(g)
    full.backward()
    taylor = g.grad.abs().tolist()
    with torch.no_grad():
        full_v = float(mean_nll(torch.ones(N)))
        ablation = []
        for i in range(N):
            gi = torch.ones(N)
            gi[i] = 0
            ablation.append(float(mean_nll(gi)) - full_v)

    out = {"base": a.base, "adapter": a.adapter, "data": a.data, "rows": len(rows), "seq_len": a.seq_len,
           "layers": names, "lora_layers": mm.names,
           "spectrum": [spectrum[n] for n in names], "spectrum_float64": [spectrum64[n] for n in names],
           "spectrum_torch": [spectrum_t[n] for n in names],
           "per_block": per_block, "tokens": tokens,
           "taylor": taylor, "ablation": ablation, "nll_all_deltas": full_v}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    worst = max(abs(spectrum[n] - spectrum_t[n]) / max(abs(spectrum_t[n]), 1e-12) for n in names)
    worst64 = max(abs(spectrum[n] - spectrum64[n]) / max(abs(spectrum64[n]), 1e-12) for n in names)
    print(json.dumps({"out": a.out, "layers": len(names), "rows": len(rows), "tokens": tokens,
                      "spectrum_numpy_vs_torch_max_rel": worst, "spectrum_f32_vs_f64_max_rel": worst64}))


if __name__ == "__main__":
    main()
