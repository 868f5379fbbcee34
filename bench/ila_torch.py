"""PyTorch reference for the ILA engine and objective, shared by bench/engine, bench/learn and
bench/families. Any AutoModelForCausalLM architecture (Llama, Mistral, Qwen2/3, Gemma 1/2/3, Phi-3).

Same computation as ila-mask: the transformers forward in float32 with every linear layer masked,
mean response-token NLL, gradient with respect to s (γ = σ(s)). Two forms of the mask:

- MaskedModel (dense): weight W0 + γ_i·Δ_i materialised each call (torch.func.functional_call).
  The only form for full-model deltas; autograd then computes dW = dYᵀx per layer for dγ = ⟨Δ, dW⟩
  (what the Swift engine also does for full deltas).
- LoraMaskedModel (factor): a PEFT LoRA adapter on the base model, each LoRA layer's scaling set
  to scale_i·γ_i (a tensor, so autograd reaches s), y = x·W0ᵀ + γ_i·scale_i·(x·Aᵀ)·Bᵀ; W0 + γΔ is
  never formed and no dW is computed (what the Swift engine does for LoRA deltas).
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

# Every family's linear kinds in block order (DESIGN.md section 3): Llama-style and Phi-3's fused ones.
KINDS = ["q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj", "gate_proj", "up_proj", "gate_up_proj", "down_proj"]


def load_model(base, attn=None):
    kw = {"attn_implementation": attn} if attn else {}
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, **kw)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def layer_key(n):
    p = n.split(".")
    return (int(p[p.index("layers") + 1]), KINDS.index(p[-1]))


def load_deltas(base, aligned):
    """{layer name: Δ (float32 [out, in])} in canonical order."""
    out = {}
    if os.path.exists(os.path.join(aligned, "adapter_config.json")):
        cfg = json.load(open(os.path.join(aligned, "adapter_config.json")))
        w = load_file(os.path.join(aligned, "adapter_model.safetensors"))
        for k in w:
            if k.endswith("lora_A.weight"):
                name = k[len("base_model.model."):-len(".lora_A.weight")]
                out[name] = lora_scale(cfg, name) * (w[k.replace("lora_A", "lora_B")].float() @ w[k].float())
    else:
        b = load_file(os.path.join(base, "model.safetensors"))
        a = load_file(os.path.join(aligned, "model.safetensors"))
        for k in b:
            parts = k.split(".")
            if len(parts) >= 2 and parts[-2] in KINDS and parts[-1] == "weight":
                out[k[:-len(".weight")]] = a[k].float() - b[k].float()
    return dict(sorted(out.items(), key=lambda kv: layer_key(kv[0])))


def lora_scale(cfg, name):
    """alpha/r (alpha/√r with rsLoRA), rank_pattern/alpha_pattern by module-name suffix."""
    def pattern(d, default):
        for key, v in (d or {}).items():
            if name == key or name.endswith("." + key):
                return v
        return default
    r = pattern(cfg.get("rank_pattern"), cfg["r"])
    alpha = pattern(cfg.get("alpha_pattern"), cfg["lora_alpha"])
    return alpha / (math.sqrt(r) if cfg.get("use_rslora") else r)


def special_ids(base, tok):
    """BOS/EOS as ila-mask resolves them: config.json ids, else tokenizer_config.json strings."""
    def first(v):
        return v[0] if isinstance(v, list) and v else (v if isinstance(v, int) else None)
    cfg = json.load(open(os.path.join(base, "config.json")))
    tc_path = os.path.join(base, "tokenizer_config.json")
    tc = json.load(open(tc_path)) if os.path.exists(tc_path) else {}

    def from_tok(key):
        v = tc.get(key)
        v = v.get("content") if isinstance(v, dict) else v
        return tok.token_to_id(v) if isinstance(v, str) else None
    bos = first(cfg.get("bos_token_id"))
    eos = first(cfg.get("eos_token_id"))
    bos = bos if bos is not None else from_tok("bos_token")
    eos = eos if eos is not None else from_tok("eos_token")
    if tc.get("add_bos_token") is False:
        bos = None
    return bos, eos


def rows_from_jsonl(base, path, n, seq_len=256):
    """Alpaca-template rows: ([BOS] + prompt + response + [EOS], labels on response and EOS)."""
    tok = Tokenizer.from_file(os.path.join(base, "tokenizer.json"))
    bos, eos = special_ids(base, tok)
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
            head = [bos] if bos is not None else []
            tail = [eos] if eos is not None else []
            ids = (head + pi + ri + tail)[:seq_len]
            lab = ([-100] * (len(head) + len(pi)) + ri + tail)[:seq_len]
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


def row_tensors(rows):
    """Per row, unpadded: ids [1, L], the positions t whose next token is a label (only their
    logits are computed, as the Swift engine does) and those labels."""
    out = []
    for ids, lab in rows:
        pos = [t for t in range(len(ids) - 1) if lab[t + 1] != -100]
        out.append((torch.tensor([ids]), torch.tensor(pos, dtype=torch.long),
                    torch.tensor([lab[t + 1] for t in pos], dtype=torch.long)))
    return out


class _Masked:
    """nll / objective over a padded batch (ids, mask, lab) or unpadded rows (row_tensors)."""

    def nll(self, s, ids, mask, lab):
        run = self._prepare(torch.sigmoid(s))
        logits = run(ids, mask, 0)
        shift = logits[:, :-1].reshape(-1, logits.shape[-1])
        target = lab[:, 1:].reshape(-1)
        return torch.nn.functional.cross_entropy(shift, target, ignore_index=-100, reduction="mean")

    def nll_rows(self, s, rows):
        run = self._prepare(torch.sigmoid(s))
        total, count = 0.0, 0
        for ids, pos, target in rows:
            if len(pos) == 0:
                continue
            logits = run(ids, None, pos)[0]
            total = total + torch.nn.functional.cross_entropy(logits, target, reduction="sum")
            count += len(pos)
        return total / count

    def objective(self, s, ids, mask, lab, lam):
        nll = self.nll(s, ids, mask, lab)
        return nll + lam * torch.sigmoid(s).mean(), nll

    def objective_rows(self, s, rows, lam):
        nll = self.nll_rows(s, rows)
        return nll + lam * torch.sigmoid(s).mean(), nll


class MaskedModel(_Masked):
    """Dense form: W0 + γΔ materialised per call."""
    form = "dense"

    def __init__(self, model, deltas):
        self.model = model
        self.names = list(deltas)
        self.deltas = [deltas[n] for n in self.names]
        params = dict(model.named_parameters())
        self.w0 = [params[n + ".weight"].detach() for n in self.names]

    def _prepare(self, gamma):
        weights = {n + ".weight": w0 + g * d for n, w0, g, d in zip(self.names, self.w0, gamma, self.deltas)}

        def run(ids, mask, keep):
            return torch.func.functional_call(self.model, weights, (ids,),
                                              {"attention_mask": mask, "logits_to_keep": keep}).logits
        return run


class LoraMaskedModel(_Masked):
    """Factor form: the PEFT adapter on the base model, each LoRA layer's scaling = scale_i·γ_i."""
    form = "factor"

    def __init__(self, model, adapter_dir):
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer
        self.model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        layers = []
        for name, mod in self.model.named_modules():
            if isinstance(mod, LoraLayer) and "default" in mod.lora_A:
                layers.append((name[len("base_model.model."):], mod, float(mod.scaling["default"])))
        layers.sort(key=lambda t: layer_key(t[0]))
        self.names = [n for n, _, _ in layers]
        self.modules = [m for _, m, _ in layers]
        self.scales = [sc for _, _, sc in layers]

    def _prepare(self, gamma):
        for mod, sc, g in zip(self.modules, self.scales, gamma):
            mod.scaling["default"] = sc * g

        def run(ids, mask, keep):
            return self.model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
        return run


def masked_model(base, aligned, form="auto", attn=None):
    """The fastest honest form: factors for a LoRA adapter, dense for full-model deltas."""
    is_lora = os.path.exists(os.path.join(aligned, "adapter_config.json"))
    if form == "auto":
        form = "factor" if is_lora else "dense"
    if form == "factor":
        if not is_lora:
            sys.exit("--form factor needs a LoRA adapter")
        return LoraMaskedModel(load_model(base, attn), aligned)
    return MaskedModel(load_model(base, attn), load_deltas(base, aligned))
