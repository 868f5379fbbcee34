"""PyTorch reference for the ILA engine and objective, shared by bench/engine and bench/learn.

Same computation as ila-mask: Llama forward in float32 with every linear weight W0 + γ_i·Δ_i
(torch.func.functional_call), mean response-token NLL, gradient with respect to s (γ = σ(s)).
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

KINDS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_model(base):
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    model.eval()
    return model


def load_deltas(base, aligned):
    """{layer name: Δ (float32 [out, in])} in canonical order."""
    out = {}
    if os.path.exists(os.path.join(aligned, "adapter_config.json")):
        cfg = json.load(open(os.path.join(aligned, "adapter_config.json")))
        w = load_file(os.path.join(aligned, "adapter_model.safetensors"))
        scale = cfg["lora_alpha"] / (math.sqrt(cfg["r"]) if cfg.get("use_rslora") else cfg["r"])
        for k in w:
            if k.endswith("lora_A.weight"):
                name = k[len("base_model.model."):-len(".lora_A.weight")]
                out[name] = scale * (w[k.replace("lora_A", "lora_B")].float() @ w[k].float())
    else:
        b = load_file(os.path.join(base, "model.safetensors"))
        a = load_file(os.path.join(aligned, "model.safetensors"))
        for k in b:
            parts = k.split(".")
            if len(parts) >= 2 and parts[-2] in KINDS and parts[-1] == "weight":
                out[k[:-len(".weight")]] = a[k].float() - b[k].float()

    def key(n):
        p = n.split(".")
        return (int(p[p.index("layers") + 1]), KINDS.index(p[-1]))
    return dict(sorted(out.items(), key=lambda kv: key(kv[0])))


def rows_from_jsonl(base, path, n, seq_len=256):
    tok = Tokenizer.from_file(os.path.join(base, "tokenizer.json"))
    rows = []
    with open(path) as f:
        for line in f:
            if len(rows) == n:
                break
            r = json.loads(line)
            inp = r.get("input", "")
            p = f"### Instruction:\n{r['instruction']}\n\n" + (f"### Input:\n{inp}\n\n" if inp else "") + "### Response:\n"
            pi = tok.encode(p, add_special_tokens=False).ids
            ri = tok.encode(r["output"], add_special_tokens=False).ids
            ids = ([1] + pi + ri + [2])[:seq_len]
            lab = ([-100] * (1 + len(pi)) + ri + [2])[:seq_len]
            rows.append((ids, lab))
    return rows


def batch_tensors(rows):
    """Right-padded ids, attention mask and labels (-100 on padding): same loss as row by row."""
    L = max(len(i) for i, _ in rows)
    ids = torch.zeros(len(rows), L, dtype=torch.long)
    mask = torch.zeros(len(rows), L, dtype=torch.long)
    lab = torch.full((len(rows), L), -100, dtype=torch.long)
    for r, (i, l) in enumerate(rows):
        ids[r, :len(i)] = torch.tensor(i)
        mask[r, :len(i)] = 1
        lab[r, :len(l)] = torch.tensor(l)
    return ids, mask, lab


class MaskedModel:
    def __init__(self, model, deltas):
        self.model = model
        self.names = list(deltas)
        self.deltas = [deltas[n] for n in self.names]
        params = dict(model.named_parameters())
        self.w0 = [params[n + ".weight"].detach() for n in self.names]

    def nll(self, s, ids, mask, lab):
        gamma = torch.sigmoid(s)
        weights = {n + ".weight": w0 + g * d for n, w0, g, d in zip(self.names, self.w0, gamma, self.deltas)}
        logits = torch.func.functional_call(self.model, weights, (ids,), {"attention_mask": mask}).logits
        shift = logits[:, :-1].reshape(-1, logits.shape[-1])
        target = lab[:, 1:].reshape(-1)
        return torch.nn.functional.cross_entropy(shift, target, ignore_index=-100, reduction="mean")

    def objective(self, s, ids, mask, lab, lam):
        nll = self.nll(s, ids, mask, lab)
        return nll + lam * torch.sigmoid(s).mean(), nll
